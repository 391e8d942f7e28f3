"""Leader loss in a replicated cluster (3 KRaft nodes, replication factor 3, min ISR 2).

A partition's leader is killed just before a run, in the middle of one, and at its end (the last
batch is held at its write while the leader dies, so the look-ups after the last commit meet it).
Each time the run ends with exit 0, or with exit 75 and one line followed by a rerun that
succeeds, and every offset is loaded exactly once.
"""

from __future__ import annotations

import os
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path

import pytest
import sqlalchemy as sa
from confluent_kafka.admin import AdminClient, NewTopic

from tests.fixtures.cluster import Cluster
from tests.fixtures.databases import sinks
from tests.fixtures.kafka import produce_json
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
from tests.integration.test_kafka_down import assert_one_line, error_lines

pytestmark = pytest.mark.slow
TARGET = "duckdb:///warehouse.duckdb"
PARTITIONS = 3


@pytest.fixture(scope="module")
def cluster(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Cluster]:
    nodes = Cluster(tmp_path_factory.mktemp("kraft-cluster"))
    try:
        nodes.start()
        yield nodes
    finally:
        nodes.stop()


@pytest.fixture
def topic(cluster: Cluster) -> Iterator[str]:
    """A fresh replicated topic; afterwards the killed node is back and in sync again."""
    name = f"test-leader-{os.urandom(6).hex()}"
    admin = AdminClient({"bootstrap.servers": cluster.bootstrap})
    new = NewTopic(name, PARTITIONS, replication_factor=3, config={"min.insync.replicas": "2"})
    admin.create_topics([new], operation_timeout=30)[name].result(timeout=60)
    cluster.wait_in_sync(name)
    yield name
    for node in cluster.nodes:
        if not cluster.lk.alive(cluster.pid(node), cluster.node_dir(node)):
            cluster.start_node(node)
    cluster.wait_in_sync(name)


def _config(tmp_path: Path, cluster: Cluster, topic: str, batch_max_rows: int) -> Path:
    body = {
        "topic": topic,
        "target": TARGET,
        "table": "events",
        "batch_max_rows": batch_max_rows,
        "kafka": {"queued.max.messages.kbytes": 1024},
    }
    return write_pipelines(tmp_path, cluster.bootstrap, {"events": body})


def _assert_loaded_once(
    config: Path,
    first: subprocess.CompletedProcess[str],
    topic: str,
    marks: dict[int, int],
    tmp_path: Path,
) -> None:
    """Exit 0, or 75 with one line and then a rerun with exit 0; every offset exactly once."""
    if first.returncode == 75:
        assert_one_line(first.stderr, "kafka-etl: error:")
        rerun = cli(config, "run", "events")
        assert rerun.returncode == 0, rerun.stderr
    else:
        assert first.returncode == 0, first.stderr
        assert not [line for line in error_lines(first.stderr) if "error" in line], first.stderr
    assert table_offsets(TARGET, tmp_path, "events") == expected_offsets(marks)
    assert assert_rows_match_checkpoints(TARGET, tmp_path, "events", "events", topic) == marks


def test_leader_killed_just_before_the_run(tmp_path: Path, cluster: Cluster, topic: str) -> None:
    produce_json(cluster.bootstrap, topic, events(0, 30_000))
    marks = high_watermarks(cluster.bootstrap, topic, PARTITIONS)
    config = _config(tmp_path, cluster, topic, 5_000)
    cluster.kill(cluster.leader(topic, 0))
    started = time.monotonic()
    res = cli(config, "run", "events", timeout=300)
    print(
        f"leader killed before the run: exit {res.returncode} after"
        f" {time.monotonic() - started:.1f}s",
        file=sys.stderr,
    )
    _assert_loaded_once(config, res, topic, marks, tmp_path)


def test_leader_killed_mid_run(tmp_path: Path, cluster: Cluster, topic: str) -> None:
    produce_json(cluster.bootstrap, topic, events(0, 200_000))
    marks = high_watermarks(cluster.bootstrap, topic, PARTITIONS)
    config = _config(tmp_path, cluster, topic, 2_000)
    proc = subprocess.Popen(
        [sys.executable, "-m", "pipelines.cli", "-c", str(config), "run", "events"],
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
    )
    try:
        with group_position(cluster.bootstrap, "events", topic, PARTITIONS) as position:
            deadline = time.monotonic() + 120
            while position() == 0 and proc.poll() is None and time.monotonic() < deadline:
                time.sleep(0.05)
        assert proc.poll() is None, "the run ended before the leader could be killed"
        cluster.kill(cluster.leader(topic, 0))
        killed = time.monotonic()
        stdout, stderr = proc.communicate(timeout=300)
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait()
    print(
        f"leader killed mid-run: exit {proc.returncode} after {time.monotonic() - killed:.1f}s",
        file=sys.stderr,
    )
    first = subprocess.CompletedProcess(proc.args, proc.returncode, stdout, stderr)
    _assert_loaded_once(config, first, topic, marks, tmp_path)


@sinks("postgresql")
def test_leader_killed_after_the_last_commit(
    tmp_path: Path, cluster: Cluster, topic: str, sink_url: str
) -> None:
    """The run's only batch is held at its write (the test locks the table), the leader dies,
    the lock goes: the batch commits and the look-ups after it (lag after the run) meet the
    dead leader. The load is complete, so the run must not fail."""
    produce_json(cluster.bootstrap, topic, events(0, 300))
    body = {"topic": topic, "target": sink_url, "table": "events", "batch_max_rows": 100_000}
    config = write_pipelines(tmp_path, cluster.bootstrap, {"events": body})
    first = cli(config, "run", "events")  # creates the table and the checkpoints
    assert first.returncode == 0, first.stderr
    produce_json(cluster.bootstrap, topic, events(300, 3_000))
    marks = high_watermarks(cluster.bootstrap, topic, PARTITIONS)
    engine = sa.create_engine(sink_url, poolclass=sa.pool.NullPool)
    try:
        with engine.connect() as lock:
            lock.execute(sa.text("LOCK TABLE events IN EXCLUSIVE MODE"))  # reads still pass
            proc = subprocess.Popen(
                [sys.executable, "-m", "pipelines.cli", "-c", str(config), "run", "events"],
                stdout=subprocess.PIPE,
                stderr=subprocess.PIPE,
                text=True,
            )
            with engine.connect() as probe:
                deadline = time.monotonic() + 120
                while proc.poll() is None and time.monotonic() < deadline:
                    waiting = probe.execute(
                        sa.text("SELECT count(*) FROM pg_locks WHERE NOT granted")
                    ).scalar_one()
                    if waiting:
                        break
                    time.sleep(0.05)
            assert proc.poll() is None, "the run ended before its write was held"
            cluster.kill(cluster.leader(topic, 0))
            lock.rollback()
        stdout, stderr = proc.communicate(timeout=300)
    finally:
        engine.dispose()
        if "proc" in locals() and proc.poll() is None:
            proc.kill()
            proc.wait()
    print(
        f"leader killed after the last commit: exit {proc.returncode};"
        f" {[line for line in error_lines(stderr) if 'lag' in line]}",
        file=sys.stderr,
    )
    assert proc.returncode == 0, stderr
    assert table_offsets(sink_url, tmp_path, "events") == expected_offsets(marks)
    assert assert_rows_match_checkpoints(sink_url, tmp_path, "events", "events", topic) == marks
