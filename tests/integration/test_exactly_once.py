"""Exactly-once loads into DuckDB against a real broker: crashes, overlaps, live producers, gaps."""

from __future__ import annotations

import subprocess
import sys
import threading
import time
from pathlib import Path

import duckdb
import pytest
from confluent_kafka import TopicPartition
from confluent_kafka.admin import AdminClient, NewPartitions

from kafka_etl.errors import DataLossError, RecordError
from pipelines.runner import run_pipeline
from tests.fixtures.kafka import Produce, TopicFactory
from tests.helpers import (
    assert_rows_match_checkpoints,
    checkpoints,
    cli,
    events,
    expected_offsets,
    group_position,
    high_watermarks,
    kill_loop,
    project_for,
    table_offsets,
    write_pipelines,
)

TARGET = "duckdb:///warehouse.duckdb"


def _config(
    tmp_path: Path, bootstrap: str, topic: str, target: str = TARGET, **extra: object
) -> Path:
    body = {"topic": topic, "target": target, "table": "events", **extra}
    return write_pipelines(tmp_path, bootstrap, {"events": body})


@pytest.mark.slow  # every sink; PostgreSQL has two batches in flight at once on two connections
def test_sigkill_at_random_moments_never_loses_or_duplicates(
    tmp_path: Path,
    kafka_bootstrap: str,
    topic_factory: TopicFactory,
    produce: Produce,
    sink_url: str,
) -> None:
    topic = topic_factory(3)
    produce(topic, events(0, 200_000))
    config = _config(tmp_path, kafka_bootstrap, topic, sink_url, batch_max_rows=5_000)
    sent = [200_000]

    def more_backlog(i: int) -> None:
        # However fast this machine loads, every run starts with dozens of batches to go.
        if sent[0] - loaded() < 150_000:
            produce(topic, events(sent[0], 50_000))
            sent[0] += 50_000

    def invariant() -> None:
        assert_rows_match_checkpoints(sink_url, tmp_path, "events", "events", topic)

    with group_position(kafka_bootstrap, "events", topic, 3) as loaded:
        tally = kill_loop(
            config,
            "events",
            iterations=26,
            before_each=more_backlog,
            check=invariant,
            progress=loaded,
        )
    assert tally.killed >= 24, f"only {tally.killed} of 26 runs were killed mid-flight: {tally}"
    assert tally.after_commit >= 12, f"only {tally.after_commit} kills came after commits"

    final = cli(config, "run", "events")
    assert final.returncode == 0, final.stderr
    marks = high_watermarks(kafka_bootstrap, topic, 3)
    assert table_offsets(sink_url, tmp_path, "events") == expected_offsets(marks)
    assert checkpoints(sink_url, tmp_path, "events", topic) == marks
    assert sum(marks.values()) == sent[0]


def test_producer_writing_throughout_does_not_keep_the_run_alive(
    tmp_path: Path, kafka_bootstrap: str, topic_factory: TopicFactory, produce: Produce
) -> None:
    topic = topic_factory(3)
    produce(topic, events(0, 50_000))
    stop = threading.Event()

    def keep_producing() -> None:
        n = 50_000
        while not stop.is_set():
            produce(topic, events(n, 500))
            n += 500

    writer = threading.Thread(target=keep_producing, daemon=True)
    writer.start()
    try:
        time.sleep(0.5)
        project = project_for(_config(tmp_path, kafka_bootstrap, topic, batch_max_rows=2_000))
        started = time.monotonic()
        result = run_pipeline(project, "events")
        elapsed = time.monotonic() - started
        still_writing = writer.is_alive()
    finally:
        stop.set()
        writer.join(timeout=60)
    assert still_writing, "the producer stopped before the run ended; the test proves nothing"
    assert result.rows >= 50_000
    assert elapsed < 60
    # The run stopped at the watermarks it took at the start, exactly at its checkpoints.
    assert_rows_match_checkpoints(TARGET, tmp_path, "events", "events", topic)


def test_two_runs_started_at_the_same_moment_load_every_offset_once(
    tmp_path: Path,
    kafka_bootstrap: str,
    topic_factory: TopicFactory,
    produce: Produce,
    sink_url: str,
) -> None:
    topic = topic_factory(3)
    produce(topic, events(0, 100_000))
    config = _config(tmp_path, kafka_bootstrap, topic, sink_url, batch_max_rows=10_000)
    command = [sys.executable, "-m", "pipelines.cli", "-c", str(config), "run", "events"]
    runs = [
        subprocess.Popen(command, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
        for _ in range(2)
    ]
    outcomes = [(p.wait(timeout=300), p.stderr.read() if p.stderr else "") for p in runs]
    for code, stderr in outcomes:
        # DuckDB: one waits for the file and then finds nothing left. PostgreSQL: both load,
        # and a loser of a checkpoint race stops with a one-line message. Neither may fail
        # any other way.
        assert code == 0 or ("checkpoint moved" in stderr and len(stderr.splitlines()) == 1), stderr
    assert_rows_match_checkpoints(sink_url, tmp_path, "events", "events", topic)
    # Should the database have rolled both back (a deadlock victim, and the other finding the
    # checkpoint moved), nothing was lost: the next run loads the rest.
    rerun = cli(config, "run", "events")
    assert rerun.returncode == 0, rerun.stderr
    marks = high_watermarks(kafka_bootstrap, topic, 3)
    assert table_offsets(sink_url, tmp_path, "events") == expected_offsets(marks)


def test_invalid_json_fails_the_run_naming_the_offset_and_commits_nothing_of_its_batch(
    tmp_path: Path, kafka_bootstrap: str, topic_factory: TopicFactory, produce: Produce
) -> None:
    topic = topic_factory(1)
    produce(topic, [*events(0, 10), b'{"user_id": 1, "action": ', *events(10, 10)], partition=0)
    config = _config(tmp_path, kafka_bootstrap, topic)
    with pytest.raises(RecordError) as caught:
        run_pipeline(project_for(config), "events")
    assert (caught.value.topic, caught.value.partition, caught.value.offset) == (topic, 0, 10)

    result = cli(config, "run", "events")
    assert result.returncode == 1
    assert result.stderr.strip() == f"kafka-etl: error: {caught.value}"
    assert f"{topic}/0@10" in result.stderr
    assert checkpoints(TARGET, tmp_path, "events", topic) == {}


def test_a_checkpoint_below_the_log_start_is_a_reported_gap(
    tmp_path: Path, kafka_bootstrap: str, topic_factory: TopicFactory, produce: Produce
) -> None:
    topic = topic_factory(1)
    produce(topic, events(0, 100), partition=0)
    config = _config(tmp_path, kafka_bootstrap, topic)
    assert run_pipeline(project_for(config), "events").rows == 100
    produce(topic, events(100, 100), partition=0)
    admin = AdminClient({"bootstrap.servers": kafka_bootstrap})
    deleted = admin.delete_records([TopicPartition(topic, 0, 150)])
    for future in deleted.values():
        future.result(timeout=30)

    with pytest.raises(DataLossError, match=r"/0: checkpoint is at offset 100 .* starts at 150"):
        run_pipeline(project_for(config), "events")

    skipping = _config(tmp_path, kafka_bootstrap, topic, on_data_loss="skip")
    result = run_pipeline(project_for(skipping), "events")
    assert result.rows == 50
    assert [(g.partition, g.expected, g.log_start, g.lost) for g in result.gaps] == [
        (0, 100, 150, 50)
    ]


def test_partitions_added_later_are_picked_up_from_their_start(
    tmp_path: Path, kafka_bootstrap: str, topic_factory: TopicFactory, produce: Produce
) -> None:
    topic = topic_factory(2)
    produce(topic, events(0, 1_000))
    config = _config(tmp_path, kafka_bootstrap, topic, start="latest")
    project = project_for(config)
    assert run_pipeline(project, "events").rows == 0  # latest: only what comes next
    admin = AdminClient({"bootstrap.servers": kafka_bootstrap})
    admin.create_partitions([NewPartitions(topic, 4)])[topic].result(timeout=30)
    time.sleep(1)
    produce(topic, events(1_000, 40), partition=3)
    produce(topic, events(1_040, 10), partition=0)
    result = run_pipeline(project, "events")
    assert result.rows == 50
    assert sorted(result.ranges) == [0, 3]
    assert checkpoints(TARGET, tmp_path, "events", topic)[3] == 40


def test_tombstones_are_skipped_and_counted_in_append_mode(
    tmp_path: Path, kafka_bootstrap: str, topic_factory: TopicFactory, produce: Produce
) -> None:
    topic = topic_factory(1)
    produce(topic, [*events(0, 5), None, None, *events(5, 3)], keys=[str(i) for i in range(10)])
    result = run_pipeline(project_for(_config(tmp_path, kafka_bootstrap, topic)), "events")
    assert (result.rows, result.tombstones) == (8, 2)
    assert checkpoints(TARGET, tmp_path, "events", topic) == {0: 10}


def test_new_fields_become_columns_and_a_type_conflict_commits_nothing(
    tmp_path: Path, kafka_bootstrap: str, topic_factory: TopicFactory, produce: Produce
) -> None:
    topic = topic_factory(1)
    produce(topic, [{"a": 1, "nested": {"b": [1, 2]}}])
    config = _config(tmp_path, kafka_bootstrap, topic)
    project = project_for(config)
    run_pipeline(project, "events")
    produce(topic, [{"a": 2, "extra": "x"}, {"a": 3, "extra": None}])
    assert run_pipeline(project, "events").columns_added == ("extra",)
    produce(topic, [{"a": "not a number"}])
    result = cli(config, "run", "events")
    assert result.returncode == 1
    assert "field 'a' arrived as string but the table column is int64" in result.stderr
    con = duckdb.connect(str(tmp_path / "warehouse.duckdb"), read_only=True)
    try:
        rows = con.execute("SELECT a, extra, nested.b FROM events ORDER BY _offset").fetchall()
    finally:
        con.close()
    assert rows == [(1, None, [1, 2]), (2, "x", None), (3, None, None)]
    assert checkpoints(TARGET, tmp_path, "events", topic) == {0: 3}
