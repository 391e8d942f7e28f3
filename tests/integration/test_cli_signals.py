"""Ctrl-C and SIGTERM in the middle of `kafka-etl run`: a prompt end, the truth in one line,
nothing half-committed, and a rerun that loads the rest exactly once."""

from __future__ import annotations

import re
import signal
import subprocess
import sys
import time
from collections.abc import Callable
from pathlib import Path

import pytest
from confluent_kafka import KafkaException

from tests.fixtures.databases import sinks
from tests.fixtures.kafka import Produce, TopicFactory
from tests.helpers import (
    assert_rows_match_checkpoints,
    cli,
    events,
    expected_offsets,
    fetch,
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

        def committed_some() -> bool:
            try:
                return loaded() > 0
            except KafkaException:  # a fresh broker's group coordinator may still be loading
                return False

        code, stderr, took = _signal_when(config, ("run", "ev"), sig, committed_some)

    assert code == 128 + sig, (code, stderr)
    assert took < STOP_WITHIN, f"{sig.name}: took {took:.1f}s to stop"
    assert "Traceback" not in stderr
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


@sinks("postgresql")
def test_sigterm_mid_backfill_leaves_the_checkpoints_and_a_rerun_finishes_it(
    sink_url: str,
    tmp_path: Path,
    kafka_bootstrap: str,
    topic_factory: TopicFactory,
    produce: Produce,
) -> None:
    topic = topic_factory(1)
    produce(topic, events(0, 200_000))
    config = write_pipelines(
        tmp_path,
        kafka_bootstrap,
        {"ev": {"topic": topic, "target": sink_url, "table": "ev", "batch_max_rows": 5000}},
    )
    assert cli(config, "run", "ev").returncode == 0
    # A replay does not tell the consumer group; its progress is the rows it rewrote, which
    # carry transaction ids newer than the run's.
    (since,) = fetch(sink_url, tmp_path, "SELECT txid_current() % 4294967296")[0]
    rewritten = f"SELECT count(*) FROM ev WHERE xmin::text::bigint > {int(since)}"

    def replayed() -> bool:
        return int(fetch(sink_url, tmp_path, rewritten)[0][0]) > 0

    replay = ("backfill", "ev", "--partition", "0", "--from-offset", "0", "--to-offset", "200000")
    code, stderr, took = _signal_when(config, replay, signal.SIGTERM, replayed)
    assert code == 143, (code, stderr)
    assert took < STOP_WITHIN
    lines = stderr.strip().splitlines()
    assert len(lines) == 1 and "Traceback" not in stderr, stderr
    assert lines[0].startswith("kafka-etl: error: pipeline 'ev': backfill interrupted by SIGTERM")
    assert "run the same backfill again" in lines[0]
    assert assert_rows_match_checkpoints(sink_url, tmp_path, "ev", "ev", topic) == {0: 200_000}
    again = cli(config, *replay)
    assert again.returncode == 0, again.stderr
    assert table_offsets(sink_url, tmp_path, "ev") == expected_offsets({0: 200_000})


@sinks("duckdb")
def test_a_second_signal_exits_at_once_and_still_commits_nothing_by_half(
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

        def committed_some() -> bool:
            try:
                return loaded() > 0
            except KafkaException:
                return False

        code, stderr, _ = _signal_when(
            config, ("run", "ev"), signal.SIGINT, committed_some, twice=True
        )
    assert code == 130, (code, stderr)
    assert "Traceback" not in stderr
    lines = stderr.strip().splitlines()
    assert 1 <= len(lines) <= 2, stderr  # the second may come after the first one's line
    assert all(line.startswith("kafka-etl: error: ") for line in lines), stderr
    assert_rows_match_checkpoints(sink_url, tmp_path, "ev", "ev", topic)
    assert cli(config, "run", "ev").returncode == 0
    high = high_watermarks(kafka_bootstrap, topic, 2)
    assert table_offsets(sink_url, tmp_path, "ev") == expected_offsets(high)


def _signal_when(
    config: Path,
    args: tuple[str, ...],
    sig: signal.Signals,
    ready: Callable[[], bool],
    *,
    twice: bool = False,
) -> tuple[int, str, float]:
    """Start the CLI, send ``sig`` (``twice``: and again 50 ms later) once ``ready()``; its
    exit code, stderr and how long it took to end after the signal."""
    proc = subprocess.Popen(
        [sys.executable, "-m", "pipelines.cli", "-c", str(config), *args],
        stdout=subprocess.DEVNULL,
        stderr=subprocess.PIPE,
        text=True,
    )
    try:
        deadline = time.monotonic() + 120
        while not ready() and proc.poll() is None and time.monotonic() < deadline:
            time.sleep(0.02)
        assert proc.poll() is None, "the command ended before the signal"
        assert ready(), "the command made no progress within 120 s"
        proc.send_signal(sig)
        signalled = time.monotonic()
        if twice:
            time.sleep(0.05)
            if proc.poll() is None:
                proc.send_signal(sig)
        _, stderr = proc.communicate(timeout=60)
        return proc.returncode, stderr, time.monotonic() - signalled
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.communicate()
