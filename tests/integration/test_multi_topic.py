"""Multi-topic pipelines against the real broker and databases: `topics: [a, b]` into one
shared table, `topic_pattern` with a table per topic on every database, a topic created after
the first run, reruns that load nothing twice, and the CLI's summary, status and reset."""

from __future__ import annotations

import json
import uuid
from pathlib import Path

import pytest

from pipelines.runner import run_members
from tests.fixtures.databases import sinks
from tests.fixtures.kafka import Produce, TopicFactory
from tests.helpers import (
    assert_rows_match_checkpoints,
    checkpoints,
    cli,
    events,
    fetch,
    project_for,
    table_names,
    write_pipelines,
)


def _prefix() -> str:
    return f"mt{uuid.uuid4().hex[:8]}"


def _fill(produce: Produce, topic: str, partitions: int, per_partition: int) -> None:
    for p in range(partitions):
        produce(topic, events(p * per_partition, per_partition), partition=p)


@sinks("duckdb", "postgresql")
def test_two_listed_topics_share_one_table_told_apart_by_topic(
    tmp_path: Path,
    kafka_bootstrap: str,
    topic_factory: TopicFactory,
    produce: Produce,
    sink_url: str,
) -> None:
    a, b = topic_factory(2), topic_factory(1)
    _fill(produce, a, 2, 30)
    _fill(produce, b, 1, 45)
    body = {"topics": [a, b], "target": sink_url, "table": "events"}
    config = write_pipelines(tmp_path, kafka_bootstrap, {"both": body})

    first = run_members(project_for(config), "both")
    assert (first.topics, first.partitions, first.rows) == (2, 3, 105)
    assert first.tables == ("events",)
    produce(b, events(45, 5), partition=0)
    second = run_members(project_for(config), "both")
    assert (second.rows, {r.topic: r.rows for r in second.results}) == (5, {a: 0, b: 5})

    counts = fetch(sink_url, tmp_path, "SELECT _topic, count(*) FROM events GROUP BY _topic")
    assert dict(counts) == {a: 60, b: 50}
    duplicates = fetch(
        sink_url,
        tmp_path,
        "SELECT _topic, _partition, _offset FROM events"
        " GROUP BY _topic, _partition, _offset HAVING count(*) > 1",
    )
    assert duplicates == []
    # Per topic and partition: exactly the offsets [0, checkpoint), each once.
    stored = fetch(
        sink_url,
        tmp_path,
        "SELECT _topic, _partition, count(*), min(_offset), max(_offset) FROM events"
        " GROUP BY _topic, _partition",
    )
    for topic in (a, b):
        cps = checkpoints(sink_url, tmp_path, "both", topic, "events")
        found = {int(p): (n, lo, hi) for t, p, n, lo, hi in stored if t == topic}
        assert found == {p: (o, 0, o - 1) for p, o in cps.items()}
    assert checkpoints(sink_url, tmp_path, "both", a, "events") == {0: 30, 1: 30}
    assert checkpoints(sink_url, tmp_path, "both", b, "events") == {0: 50}


@sinks("duckdb", "sqlite", "postgresql", "mariadb")
def test_a_pattern_loads_a_table_per_topic_and_picks_up_new_topics(
    tmp_path: Path,
    kafka_bootstrap: str,
    topic_factory: TopicFactory,
    produce: Produce,
    sink_url: str,
) -> None:
    prefix = _prefix()
    topics = [topic_factory(2, name=f"{prefix}.shop.{n}") for n in ("orders", "Items", "users")]
    for i, topic in enumerate(topics):
        _fill(produce, topic, 2, 10 + i)
    body = {"topic_pattern": rf"{prefix}\.shop\..*", "target": sink_url, "table": "{topic}"}
    config = write_pipelines(tmp_path, kafka_bootstrap, {"shop": body})

    first = run_members(project_for(config), "shop")
    tables = {
        f"{prefix}_shop_{n}": 2 * (10 + i) for i, n in enumerate(("orders", "items", "users"))
    }
    assert {r.table: r.rows for r in first.results} == tables
    assert set(tables) <= table_names(sink_url, tmp_path)

    rerun = run_members(project_for(config), "shop")
    assert (rerun.topics, rerun.rows) == (3, 0)

    later = topic_factory(1, name=f"{prefix}.shop.returns")
    produce(later, events(0, 7), partition=0)
    third = run_members(project_for(config), "shop")
    assert {r.table: r.rows for r in third.results} == {
        **dict.fromkeys(tables, 0),
        f"{prefix}_shop_returns": 7,
    }
    for table, rows in {**tables, f"{prefix}_shop_returns": 7}.items():
        assert fetch(sink_url, tmp_path, f"SELECT count(*) FROM {table}") == [(rows,)]
        topic = next(r.topic for r in third.results if r.table == table)
        assert_rows_match_checkpoints(sink_url, tmp_path, table, "shop", topic)


def test_cli_run_status_and_reset_of_a_pattern_pipeline(
    tmp_path: Path, kafka_bootstrap: str, topic_factory: TopicFactory, produce: Produce
) -> None:
    prefix = _prefix()
    a = topic_factory(2, name=f"{prefix}.srv.db.alpha")
    b = topic_factory(1, name=f"{prefix}.srv.db.beta")
    _fill(produce, a, 2, 4)
    _fill(produce, b, 1, 3)
    body = {
        "topic_pattern": rf"{prefix}\.srv\.db\..*",
        "target": "duckdb:///w.duckdb",
        "table": "raw_{topic_tail}",
    }
    config = write_pipelines(tmp_path, kafka_bootstrap, {"cdc": body})

    ran = cli(config, "run", "cdc")
    assert ran.returncode == 0, ran.stderr
    summary, lag = ran.stdout.splitlines()
    assert summary.startswith("cdc: 11 rows from 2 topic(s), 3 partition(s) into 2 tables in")
    assert lag == "  lag after run: 0"
    valid = cli(config, "validate")
    assert valid.stdout.startswith(rf"cdc: /{prefix}\.srv\.db\..*/ -> duckdb:///w.duckdb table")
    human = cli(config, "status", "cdc")
    assert "raw_alpha" in human.stdout and "total: 2 topics" in human.stdout, human.stdout
    verbose = cli(config, "-v", "run", "cdc")
    assert f"  {a} -> raw_alpha: 0 rows; offsets nothing new" in verbose.stdout

    status = cli(config, "status", "--json")
    assert status.returncode == 0, status.stderr
    [report] = json.loads(status.stdout)
    rows = {
        (p["topic"], p["partition"]): (p["table"], p["checkpoint"]) for p in report["partitions"]
    }
    assert rows == {
        (a, 0): ("raw_alpha", 4),
        (a, 1): ("raw_alpha", 4),
        (b, 0): ("raw_beta", 3),
    }
    assert report["lag"] == 0

    partition_only = cli(config, "reset", "cdc", "--to", "earliest", "--partition", "0")
    assert partition_only.returncode == 2
    assert "--partition needs --topic" in partition_only.stderr

    reset = cli(config, "reset", "cdc", "--to", "earliest", "--topic", a, "--yes")
    assert reset.returncode == 0, reset.stderr
    assert f"{a}/0@0, {a}/1@0; 8 rows deleted" in reset.stdout
    again = cli(config, "run", "cdc", "--json")
    done = json.loads(again.stdout)
    assert (done["topics"], done["rows"]) == (2, 8)
    assert {m["topic"]: m["rows"] for m in done["members"]} == {a: 8, b: 0}


def test_a_pattern_matching_nothing_warns_and_loads_nothing(
    tmp_path: Path, kafka_bootstrap: str
) -> None:
    body = {"topic_pattern": rf"{_prefix()}\..*", "target": "duckdb:///w.duckdb", "table": "t"}
    config = write_pipelines(tmp_path, kafka_bootstrap, {"none": body})
    ran = cli(config, "run", "none")
    assert ran.returncode == 0, ran.stderr
    assert "matches no topic; nothing to load" in ran.stderr
    assert ran.stdout.startswith("none: 0 rows from 0 topic(s), 0 partition(s)")


def test_two_pattern_topics_meeting_in_one_table_fail_naming_both(
    tmp_path: Path, kafka_bootstrap: str, topic_factory: TopicFactory
) -> None:
    prefix = _prefix()
    topic_factory(1, name=f"{prefix}.one.same")
    topic_factory(1, name=f"{prefix}.two.same")
    body = {
        "topic_pattern": rf"{prefix}\..*",
        "target": "duckdb:///w.duckdb",
        "table": "{topic_tail}",
    }
    config = write_pipelines(tmp_path, kafka_bootstrap, {"clash": body})
    ran = cli(config, "run", "clash")
    assert ran.returncode == 1
    [line] = ran.stderr.strip().splitlines()
    assert f"topics '{prefix}.one.same' and '{prefix}.two.same' both map to table 'same'" in line


@pytest.mark.parametrize("shard", ["0/2", "1/2"])
def test_shards_split_every_topic_by_partition(
    tmp_path: Path,
    kafka_bootstrap: str,
    topic_factory: TopicFactory,
    produce: Produce,
    shard: str,
) -> None:
    a, b = topic_factory(2), topic_factory(2)
    _fill(produce, a, 2, 5)
    _fill(produce, b, 2, 6)
    body = {"topics": [a, b], "target": "duckdb:///w.duckdb", "table": "t", "shards": 2}
    config = write_pipelines(tmp_path, kafka_bootstrap, {"s": body})
    ran = cli(config, "run", "s", "--shard", shard, "--json")
    assert ran.returncode == 0, ran.stderr
    done = json.loads(ran.stdout)
    owned = str(int(shard[0]))
    assert {m["topic"]: list(m["ranges"]) for m in done["members"]} == {a: [owned], b: [owned]}
    assert done["rows"] == 11
