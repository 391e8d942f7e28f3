"""Ctrl-C and SIGTERM in the middle of `kafka-etl run`: a prompt end, the truth in one line,
nothing half-committed, and a rerun that loads the rest exactly once."""

from __future__ import annotations

import re
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest

from tests.fixtures.databases import sinks
from tests.fixtures.kafka import Produce, TopicFactory
from tests.helpers import (
    assert_rows_match_checkpoints,
    cli,
    events,
    expected_offsets,
    group_position,
    high_watermarks,
    table_offsets,
    write_pipelines,
)

BACKLOG = 300_000
STOP_WITHIN = 10.0  # seconds from the signal to the exit: one batch of 5,000 rows to finish


@sinks("duckdb", "postgresql")
@pytest.mark.parametrize("sig", [signal.SIGINT, signal.SIGTERM], ids=["SIGINT", "SIGTERM"])
def test_a_signal_mid_run_ends_it_promptly_and_truthfully(
    sig: signal.Signals,
    sink_url: str,
    tmp_path: Path,
    kafka_bootstrap: str,
    topic_factory: TopicFactory,
    produce: Produce,
) -> None:
    topic = topic_factory(2)
    produce(topic, events(0, BACKLOG))
    config = write_pipelines(
        tmp_path,
        kafka_bootstrap,
        {"ev": {"topic": topic, "target": sink_url, "table": "ev", "batch_max_rows": 5000}},
    )
    with group_position(kafka_bootstrap, "ev", topic, 2) as loaded:
        proc = subprocess.Popen(
            [sys.executable, "-m", "pipelines.cli", "-c", str(config), "run", "ev"],
            stdout=subprocess.PIPE,
            stderr=subprocess.PIPE,
            text=True,
        )
        try:
            deadline = time.monotonic() + 120
            while loaded() == 0 and proc.poll() is None and time.monotonic() < deadline:
                time.sleep(0.02)
            assert proc.poll() is None, f"the run ended before the signal: {proc.stderr}"
            assert loaded() > 0, "the run committed nothing within 120 s"
            proc.send_signal(sig)
            signalled = time.monotonic()
            stdout, stderr = proc.communicate(timeout=60)
            took = time.monotonic() - signalled
        finally:
            if proc.poll() is None:
                proc.kill()
                proc.communicate()

    assert proc.returncode == 128 + sig, (proc.returncode, stderr)
    assert took < STOP_WITHIN, f"{sig.name}: took {took:.1f}s to stop"
    assert "Traceback" not in stderr + stdout
    lines = stderr.strip().splitlines()
    assert len(lines) == 1, stderr
    line = lines[0]
    assert line.startswith("kafka-etl: error: pipeline 'ev': interrupted by " + sig.name), line
    assert "the batch in flight was not committed" in line, line

    marks = assert_rows_match_checkpoints(sink_url, tmp_path, "ev", "ev", topic)
    committed = int(re.search(r"([\d,]+) rows committed", line).group(1).replace(",", ""))  # type: ignore[union-attr]
    assert committed == sum(marks.values()) == len(table_offsets(sink_url, tmp_path, "ev"))
    assert 0 < committed < BACKLOG, f"{sig.name} came too late to interrupt anything: {line}"

    rerun = cli(config, "run", "ev")
    assert rerun.returncode == 0, rerun.stderr
    high = high_watermarks(kafka_bootstrap, topic, 2)
    assert table_offsets(sink_url, tmp_path, "ev") == expected_offsets(high)
