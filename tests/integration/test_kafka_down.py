"""A broker that dies and stays down ends a run within a bound, with exit 75 and one line.

Each test that kills a broker starts one of its own (``scripts/local-kafka start --dir``), so
the session's broker, which other tests share, stays up.
"""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import pytest
from confluent_kafka.admin import AdminClient, NewTopic

from tests.fixtures.kafka import LOCAL_KAFKA, START_TIMEOUT, Produce, TopicFactory, produce_json
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

TARGET = "duckdb:///warehouse.duckdb"
# What a run may take from the moment the cluster became unreachable to its exit: the reader
# notices within ``probe_after`` (5 s) + ``unreachable_timeout`` (20 s), start-up look-ups give
# up after ``LOOKUP_DEADLINE`` (30 s), close() waits ``session.timeout.ms`` (6 s); the rest is
# slack for a machine shared by many test processes.
BOUND = 60.0


@dataclass
class Broker:
    """A private single-node broker that a test may kill and start again."""

    state_dir: Path
    bootstrap: str = ""

    def start(self) -> str:
        res = _local_kafka("start", "--dir", str(self.state_dir), "--owner-pid", str(os.getpid()))
        assert res.returncode == 0, res.stderr
        self.bootstrap = res.stdout.strip().splitlines()[-1]
        return self.bootstrap

    def kill(self) -> None:
        """SIGKILL the broker's JVM (scripts/local-kafka records its pid) and wait it out."""
        pid = int((self.state_dir / "pid").read_text())
        os.kill(pid, signal.SIGKILL)
        deadline = time.monotonic() + 30
        while Path(f"/proc/{pid}").exists() and time.monotonic() < deadline:
            stat = Path(f"/proc/{pid}/stat").read_text(errors="replace")
            if stat.rsplit(")", 1)[1].split()[0] in ("Z", "X"):
                break
            time.sleep(0.05)

    def stop(self) -> None:
        _local_kafka("stop", "--purge", "--dir", str(self.state_dir))


def _local_kafka(*args: str) -> subprocess.CompletedProcess[str]:
    cmd = [sys.executable, str(LOCAL_KAFKA), *args]
    return subprocess.run(cmd, capture_output=True, text=True, timeout=START_TIMEOUT, check=False)


@pytest.fixture
def broker(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Broker]:
    own = Broker(tmp_path_factory.mktemp("own-kafka"))
    own.start()
    try:
        yield own
    finally:
        own.stop()


def error_lines(stderr: str) -> list[str]:
    """stderr without librdkafka's own log lines (``%3|...``), which go elsewhere later."""
    return [line for line in stderr.splitlines() if line.strip() and not line.startswith("%")]


def assert_one_line(stderr: str, expected: str) -> str:
    lines = error_lines(stderr)
    ours = [line for line in lines if line.startswith("kafka-etl:")]
    assert len(ours) == 1, stderr
    assert lines[-1] == ours[0], stderr
    assert expected in ours[0], ours[0]
    return ours[0]


def _create_topic(bootstrap: str, partitions: int) -> str:
    admin = AdminClient({"bootstrap.servers": bootstrap})
    topic = f"test-down-{os.urandom(6).hex()}"
    new = NewTopic(topic, num_partitions=partitions, replication_factor=1)
    admin.create_topics([new], operation_timeout=30)[topic].result(timeout=60)
    return topic


def test_nothing_listening_ends_in_bounded_time_with_one_line(tmp_path: Path) -> None:
    config = write_pipelines(
        tmp_path, "127.0.0.1:1", {"events": {"topic": "t", "target": TARGET, "table": "events"}}
    )
    started = time.monotonic()
    res = cli(config, "run", "events", timeout=BOUND + 60)
    took = time.monotonic() - started
    assert res.returncode == 75, res.stderr
    line = assert_one_line(res.stderr, "cannot reach Kafka at 127.0.0.1:1: connection refused")
    assert took < BOUND, f"took {took:.0f}s: {line}"


@pytest.mark.slow
def test_broker_killed_mid_run_ends_in_bounded_time_then_rerun_loads_once(
    tmp_path: Path, broker: Broker
) -> None:
    bootstrap = broker.bootstrap
    topic = _create_topic(bootstrap, 3)
    produce_json(bootstrap, topic, events(0, 300_000))
    marks = high_watermarks(bootstrap, topic, 3)
    body = {
        "topic": topic,
        "target": TARGET,
        "table": "events",
        "batch_max_rows": 2_000,
        # A small prefetch queue, so the run still has most of the topic to read at the kill.
        "kafka": {"queued.max.messages.kbytes": 1024},
    }
    config = write_pipelines(tmp_path, bootstrap, {"events": body})
    proc = subprocess.Popen(
        [sys.executable, "-m", "pipelines.cli", "-c", str(config), "run", "events"],
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
        env={**os.environ, "COLUMNS": "200"},
    )
    try:
        with group_position(bootstrap, "events", topic, 3) as position:
            deadline = time.monotonic() + 120
            while position() == 0 and proc.poll() is None and time.monotonic() < deadline:
                time.sleep(0.05)
        assert proc.poll() is None, "the run ended before the broker could be killed"
        broker.kill()
        killed = time.monotonic()
        _, stderr = proc.communicate(timeout=BOUND + 60)
        took = time.monotonic() - killed
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait()
    assert proc.returncode == 75, stderr
    line = assert_one_line(stderr, f"cannot reach Kafka at {bootstrap}: connection refused")
    assert took < BOUND, f"took {took:.0f}s from kill to exit: {line}"
    print(f"kill -> exit: {took:.1f}s; {line}", file=sys.stderr)

    assert broker.start() == bootstrap  # the same ports again: the file's address still holds
    rerun = cli(config, "run", "events")
    assert rerun.returncode == 0, rerun.stderr
    assert table_offsets(TARGET, tmp_path, "events") == expected_offsets(marks)
    assert assert_rows_match_checkpoints(TARGET, tmp_path, "events", "events", topic) == marks


def test_group_offsets_reach_the_checkpoints_by_the_end_of_a_run(
    tmp_path: Path, kafka_bootstrap: str, topic_factory: TopicFactory, produce: Produce
) -> None:
    """Group commits are asynchronous, but close() still delivers the last one: lag tools
    reading the group see the run's final position as soon as it exits."""
    topic = topic_factory(3)
    produce(topic, events(0, 20_000))
    marks = high_watermarks(kafka_bootstrap, topic, 3)
    body = {"topic": topic, "target": TARGET, "table": "events", "batch_max_rows": 3_000}
    config = write_pipelines(tmp_path, kafka_bootstrap, {"events": body})
    res = cli(config, "run", "events")
    assert res.returncode == 0, res.stderr
    with group_position(kafka_bootstrap, "events", topic, 3) as position:
        assert position() == sum(marks.values())
