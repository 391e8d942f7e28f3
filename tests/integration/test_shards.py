"""Shards end to end: `kafka-etl run NAME --shard K/N` processes against the real broker.

Concurrent shards into PostgreSQL (and MariaDB) land every offset exactly once; shards of one
DuckDB file take turns on its lock (or exit 75 when ``lock_timeout`` runs out).
"""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import duckdb
import pytest
from confluent_kafka import Consumer, TopicPartition

from tests.fixtures.databases import sinks
from tests.fixtures.kafka import Produce, TopicFactory
from tests.helpers import (
    assert_rows_match_checkpoints,
    checkpoints,
    cli,
    events,
    expected_offsets,
    high_watermarks,
    table_offsets,
    write_pipelines,
)

DUCKDB = "duckdb:///warehouse.duckdb"


def _fill(
    produce: Produce, topic: str, partitions: int, per_partition: int, first: int = 0
) -> None:
    for p in range(partitions):
        produce(topic, events(first + p * per_partition, per_partition), partition=p)


def _group_offsets(bootstrap: str, group: str, topic: str, partitions: int) -> dict[int, int]:
    """The consumer group's committed offset per partition (-1001: none)."""
    consumer = Consumer({"bootstrap.servers": bootstrap, "group.id": group})
    try:
        found = consumer.committed(
            [TopicPartition(topic, p) for p in range(partitions)], timeout=10
        )
    finally:
        consumer.close()
    return {tp.partition: tp.offset for tp in found}


def _shards_at_once(config: Path, name: str, shards: list[str]) -> list[tuple[int, str, str]]:
    command = [sys.executable, "-m", "pipelines.cli", "-c", str(config), "run", name, "--json"]
    runs = [
        subprocess.Popen(
            [*command, "--shard", shard], stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True
        )
        for shard in shards
    ]
    return [(p.wait(timeout=300), *p.communicate()) for p in runs]


@sinks("postgresql", "mariadb")
def test_four_shards_started_at_once_land_every_offset_exactly_once(
    tmp_path: Path,
    kafka_bootstrap: str,
    topic_factory: TopicFactory,
    produce: Produce,
    sink_url: str,
) -> None:
    topic = topic_factory(8)
    _fill(produce, topic, 8, 5_000)
    body = {"topic": topic, "target": sink_url, "table": "events", "shards": 4}
    config = write_pipelines(
        tmp_path, kafka_bootstrap, {"events": {**body, "batch_max_rows": 1_000}}
    )

    outcomes = _shards_at_once(config, "events", [f"{k}/4" for k in range(4)])
    for k, (code, stdout, stderr) in enumerate(outcomes):
        assert code == 0, (k, stderr)
        summary = json.loads(stdout)
        assert summary["shard"] == f"{k}/4"
        # Each shard loaded its two partitions, k and k + 4, and nothing else.
        assert summary["ranges"] == {str(k): [0, 5_000], str(k + 4): [0, 5_000]}, summary
    marks = high_watermarks(kafka_bootstrap, topic, 8)
    assert table_offsets(sink_url, tmp_path, "events") == expected_offsets(marks)
    assert assert_rows_match_checkpoints(sink_url, tmp_path, "events", "events", topic) == marks
    # Every shard told the group about its partitions, and none clobbered another's.
    assert _group_offsets(kafka_bootstrap, "events", topic, 8) == marks

    again = _shards_at_once(config, "events", [f"{k}/4" for k in range(4)])
    assert [(code, json.loads(stdout)["rows"]) for code, stdout, _ in again] == [(0, 0)] * 4
    whole = cli(config, "run", "events", "--json")  # without --shard: every partition
    assert whole.returncode == 0, whole.stderr
    assert json.loads(whole.stdout)["rows"] == 0
    assert table_offsets(sink_url, tmp_path, "events") == expected_offsets(marks)


def test_duckdb_shards_one_after_another_leave_the_other_shards_alone(
    tmp_path: Path, kafka_bootstrap: str, topic_factory: TopicFactory, produce: Produce
) -> None:
    topic = topic_factory(4)
    _fill(produce, topic, 4, 300)
    body = {"topic": topic, "target": DUCKDB, "table": "ev", "shards": 2}
    config = write_pipelines(tmp_path, kafka_bootstrap, {"ev": body})

    first = cli(config, "run", "ev", "--shard", "0/2")
    assert first.returncode == 0, first.stderr
    assert first.stdout.startswith("ev (shard 0/2): 600 rows into ev"), first.stdout
    assert checkpoints(DUCKDB, tmp_path, "ev", topic) == {0: 300, 2: 300}
    assert {p for p, _ in table_offsets(DUCKDB, tmp_path, "ev")} == {0, 2}
    assert _group_offsets(kafka_bootstrap, "ev", topic, 4) == {0: 300, 1: -1001, 2: 300, 3: -1001}

    status = cli(config, "status", "--json")
    assert status.returncode == 0, status.stderr
    [report] = json.loads(status.stdout)
    assert report["shards"] == 2
    assert [(s["partition"], s["shard"], s["lag"]) for s in report["partitions"]] == [
        (0, 0, 0),
        (1, 1, 300),
        (2, 0, 0),
        (3, 1, 300),
    ]
    table = cli(config, "status")
    assert "(2 shards: partition p in shard p % 2)" in " ".join(table.stdout.split())
    rows = [line.split("│")[1:3] for line in table.stdout.splitlines() if line.count("│") > 4]
    assert [[cell.strip() for cell in row] for row in rows][:4] == [
        ["0", "0/2"],
        ["1", "1/2"],
        ["2", "0/2"],
        ["3", "1/2"],
    ], table.stdout

    second = cli(config, "run", "ev", "--shard", "1/2")
    assert second.returncode == 0, second.stderr
    marks = high_watermarks(kafka_bootstrap, topic, 4)
    assert table_offsets(DUCKDB, tmp_path, "ev") == expected_offsets(marks)
    assert _group_offsets(kafka_bootstrap, "ev", topic, 4) == marks
    for shard in ("0/2", "1/2"):
        rerun = cli(config, "run", "ev", "--shard", shard, "--json")
        assert rerun.returncode == 0, rerun.stderr
        assert json.loads(rerun.stdout)["rows"] == 0

    # A replay of one shard rewrites only its partitions; the checkpoints do not move.
    replay = cli(
        config,
        "backfill",
        "ev",
        "--shard",
        "1/2",
        "--from",
        "2000-01-01T00:00Z",
        "--to",
        "2100-01-01T00:00Z",
        "--json",
    )
    assert replay.returncode == 0, replay.stderr
    assert json.loads(replay.stdout)["ranges"] == {"1": [0, 300], "3": [0, 300]}
    assert table_offsets(DUCKDB, tmp_path, "ev") == expected_offsets(marks)
    assert checkpoints(DUCKDB, tmp_path, "ev", topic) == marks


def test_duckdb_shards_started_at_once_take_turns_on_the_file(
    tmp_path: Path, kafka_bootstrap: str, topic_factory: TopicFactory, produce: Produce
) -> None:
    topic = topic_factory(4)
    _fill(produce, topic, 4, 20_000)
    body = {"topic": topic, "target": DUCKDB, "table": "ev", "batch_max_rows": 2_000}
    config = write_pipelines(tmp_path, kafka_bootstrap, {"ev": body})

    outcomes = _shards_at_once(config, "ev", ["0/2", "1/2"])
    assert [code for code, _, _ in outcomes] == [0, 0], [err for _, _, err in outcomes]
    marks = high_watermarks(kafka_bootstrap, topic, 4)
    assert table_offsets(DUCKDB, tmp_path, "ev") == expected_offsets(marks)
    assert assert_rows_match_checkpoints(DUCKDB, tmp_path, "ev", "ev", topic) == marks
    # The one that found the file locked said so, in one line, and waited (lock_timeout).
    waits = [err.strip() for _, _, err in outcomes if err.strip()]
    assert len(waits) == 1, waits
    assert "is locked by process" in waits[0] and "waiting up to 60s (lock_timeout)" in waits[0]
    assert len(waits[0].splitlines()) == 1, waits


def test_a_duckdb_shard_that_cannot_get_the_file_in_lock_timeout_exits_75(
    tmp_path: Path, kafka_bootstrap: str, topic_factory: TopicFactory, produce: Produce
) -> None:
    topic = topic_factory(2)
    _fill(produce, topic, 2, 10)
    body = {"topic": topic, "target": DUCKDB, "table": "ev", "lock_timeout": 0.5}
    config = write_pipelines(tmp_path, kafka_bootstrap, {"ev": body})
    holder = duckdb.connect(str(tmp_path / "warehouse.duckdb"))  # another writer of the file
    try:
        result = cli(config, "run", "ev", "--shard", "1/2")
    finally:
        holder.close()
    assert result.returncode == 75, result.stderr
    errors = [line for line in result.stderr.splitlines() if "error" in line]
    assert len(errors) == 1 and "warehouse.duckdb" in errors[0], result.stderr
    assert checkpoints(DUCKDB, tmp_path, "ev", topic) == {}
    rerun = cli(config, "run", "ev", "--shard", "1/2", "--json")
    assert rerun.returncode == 0, rerun.stderr
    assert json.loads(rerun.stdout)["ranges"] == {"1": [0, 10]}


@pytest.mark.parametrize("shard", ["5/8"])
def test_a_shard_without_partitions_loads_nothing_and_says_so(
    tmp_path: Path, kafka_bootstrap: str, topic_factory: TopicFactory, produce: Produce, shard: str
) -> None:
    topic = topic_factory(2)
    _fill(produce, topic, 2, 10)
    config = write_pipelines(
        tmp_path, kafka_bootstrap, {"ev": {"topic": topic, "target": DUCKDB, "table": "ev"}}
    )
    result = cli(config, "run", "ev", "--shard", shard)
    assert result.returncode == 0, result.stderr
    assert "nothing new" in result.stdout
    assert "shard 5/8 owns no partition of topic" in result.stderr, result.stderr
    assert checkpoints(DUCKDB, tmp_path, "ev", topic) == {}
