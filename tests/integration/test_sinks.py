"""Every sink (DuckDB, PostgreSQL, MariaDB, SQLite) against a real broker: exactly once, upsert
with tombstones, replays, identifiers that look like SQL (crashes at random moments:
test_exactly_once.py)."""

from __future__ import annotations

import random
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
import sqlalchemy as sa

from pipelines.runner import replay_pipeline, run_pipeline
from tests.fixtures.databases import sinks
from tests.fixtures.kafka import Produce, TopicFactory, produce_json
from tests.helpers import (
    checkpoints,
    cli,
    events,
    expected_offsets,
    fetch,
    high_watermarks,
    project_for,
    table_names,
    table_offsets,
    write_pipelines,
)

# -- exactly once ----------------------------------------------------------------------------


def test_100k_messages_load_exactly_once_then_nothing_then_only_the_new(
    sink_url: str,
    tmp_path: Path,
    kafka_bootstrap: str,
    topic_factory: TopicFactory,
    produce: Produce,
) -> None:
    topic = topic_factory(3)
    produce(topic, events(0, 100_000))
    body = {"topic": topic, "target": sink_url, "table": "events", "batch_max_rows": 20_000}
    project = project_for(write_pipelines(tmp_path, kafka_bootstrap, {"events": body}))

    assert run_pipeline(project, "events").rows == 100_000
    marks = high_watermarks(kafka_bootstrap, topic, 3)
    assert table_offsets(sink_url, tmp_path, "events") == expected_offsets(marks)
    assert checkpoints(sink_url, tmp_path, "events", topic) == marks

    again = run_pipeline(project, "events")
    assert (again.rows, again.table_rows) == (0, 100_000)

    produce(topic, events(100_000, 5_000))
    assert run_pipeline(project, "events").rows == 5_000
    marks = high_watermarks(kafka_bootstrap, topic, 3)
    assert sum(marks.values()) == 105_000
    assert table_offsets(sink_url, tmp_path, "events") == expected_offsets(marks)
    assert checkpoints(sink_url, tmp_path, "events", topic) == marks


# -- upsert ----------------------------------------------------------------------------------

KEYS = 10_000
UPSERT_MESSAGES = 200_000


class KeyedLog:
    """200,000 messages over 10,000 keys: updates, tombstones and a field that comes and goes.

    Keys go through Kafka's default partitioner, so each key lives in one of 3 partitions and
    its messages keep their produce order; the expected table is computed here, independently.
    """

    def __init__(self, seed: int = 11) -> None:
        rng = random.Random(seed)
        self.keys: list[str] = []
        self.values: list[dict[str, Any] | None] = []
        for i in range(UPSERT_MESSAGES):
            n = rng.randrange(KEYS)
            self.keys.append(f"user-{n}")
            if rng.random() < 0.12:
                self.values.append(None)
                continue
            value: dict[str, Any] = {"id": n, "name": f"name-{i}", "score": i}
            if rng.random() < 0.5:
                value["nickname"] = f"nick-{i % 97}"  # absent means NULL in the latest state
            self.values.append(value)

    def expected(self) -> dict[int, tuple[str, int, str | None]]:
        state: dict[str, dict[str, Any] | None] = {}
        for key, value in zip(self.keys, self.values, strict=True):
            state[key] = value
        return {
            v["id"]: (v["name"], v["score"], v.get("nickname"))
            for v in state.values()
            if v is not None
        }


@pytest.fixture(scope="module")
def keyed_topic(kafka_bootstrap: str) -> Iterator[tuple[str, KeyedLog]]:
    """One topic for every sink's upsert test (producing 200k messages once)."""
    from confluent_kafka.admin import AdminClient, NewTopic

    admin = AdminClient({"bootstrap.servers": kafka_bootstrap})
    topic = f"test-upsert-{random.Random().getrandbits(48):012x}"
    admin.create_topics([NewTopic(topic, 3, 1)])[topic].result(timeout=60)
    log = KeyedLog()
    produce_json(kafka_bootstrap, topic, log.values, log.keys)
    yield topic, log
    admin.delete_topics([topic])[topic].result(timeout=60)


@pytest.mark.slow
def test_upsert_keeps_the_last_state_per_key_and_a_full_replay_changes_nothing(
    sink_url: str, tmp_path: Path, kafka_bootstrap: str, keyed_topic: tuple[str, KeyedLog]
) -> None:
    topic, log = keyed_topic
    body = {
        "topic": topic,
        "target": sink_url,
        "table": "users",
        "mode": "upsert",
        "key": ["id"],
        "delete_on_tombstone": True,
        "batch_max_rows": 25_000,
    }
    project = project_for(write_pipelines(tmp_path, kafka_bootstrap, {"users": body}))
    expected = log.expected()
    assert len(expected) > KEYS * 0.8

    result = run_pipeline(project, "users")
    assert result.tombstones == 0  # all applied
    query = "SELECT id, name, score, nickname FROM users"
    assert _state(sink_url, tmp_path, query) == expected

    marks = high_watermarks(kafka_bootstrap, topic, 3)
    replay_pipeline(project, "users", offsets={p: (0, hw) for p, hw in marks.items()})
    assert _state(sink_url, tmp_path, query) == expected
    assert checkpoints(sink_url, tmp_path, "users", topic) == marks


@pytest.mark.parametrize("delete", [True, False], ids=["deleting", "skipping"])
def test_upsert_by_the_kafka_key_itself(
    delete: bool,
    sink_url: str,
    tmp_path: Path,
    kafka_bootstrap: str,
    topic_factory: TopicFactory,
    produce: Produce,
) -> None:
    topic = topic_factory(3)
    keys = ["a", "A", "a ", "b", "a", "c", "b", "A", "é"]
    values: list[dict[str, Any] | None] = [
        {"v": 1},
        {"v": 2},
        {"v": 3},
        {"v": 4},
        {"v": 5},
        None,
        None,
        None,
        {"v": 9},
    ]
    produce(topic, values, keys)
    body = {
        "topic": topic,
        "target": sink_url,
        "table": "kv",
        "mode": "upsert",
        "key": ["_key"],
        "delete_on_tombstone": delete,
    }
    project = project_for(write_pipelines(tmp_path, kafka_bootstrap, {"kv": body}))
    result = run_pipeline(project, "kv")
    state = dict(fetch(sink_url, tmp_path, "SELECT _key, v FROM kv"))
    # Keys compare exactly: "a", "A" and "a " are three rows, on every database.
    if delete:
        assert state == {"a": 5, "a ": 3, "é": 9}
        assert result.tombstones == 0
    else:
        assert state == {"a": 5, "A": 2, "a ": 3, "b": 4, "é": 9}
        assert result.tombstones == 3


def _state(target: str, base_dir: Path, query: str) -> dict[int, tuple[str, int, str | None]]:
    rows = fetch(target, base_dir, query)
    state = {int(r[0]): (r[1], int(r[2]), r[3]) for r in rows}
    assert len(state) == len(rows), "duplicate keys in an upsert table"
    return state


# -- identifiers that look like SQL, secrets -------------------------------------------------

EVIL = 'x"; DROP TABLE t; --'


def test_injection_shaped_table_and_field_names_are_literal_identifiers(
    sink_url: str,
    tmp_path: Path,
    kafka_bootstrap: str,
    topic_factory: TopicFactory,
    produce: Produce,
) -> None:
    fetch(sink_url, tmp_path, "CREATE TABLE t (a INTEGER)", write=True)
    fetch(sink_url, tmp_path, "INSERT INTO t VALUES (42)", write=True)
    topic = topic_factory(1)
    fields = {EVIL: "1", "it's": "2", "100% :v": "3", "b`q": "4", "id": 1}
    produce(topic, [fields, {**fields, "id": 2}])
    body = {"topic": topic, "target": sink_url, "table": EVIL}
    project = project_for(write_pipelines(tmp_path, kafka_bootstrap, {"evil": body}))
    assert run_pipeline(project, "evil").rows == 2

    assert fetch(sink_url, tmp_path, "SELECT a FROM t") == [(42,)]
    assert EVIL in table_names(sink_url, tmp_path)
    table = sa.table(EVIL, *(sa.column(name) for name in fields))
    stored = fetch(sink_url, tmp_path, sa.select(table).order_by(table.c.id))
    assert stored == [("1", "2", "3", "4", 1), ("1", "2", "3", "4", 2)]


@sinks("postgresql", "mariadb")
def test_names_the_database_cannot_hold_are_refused_in_one_line(
    sink_url: str,
    tmp_path: Path,
    kafka_bootstrap: str,
    topic_factory: TopicFactory,
    produce: Produce,
) -> None:
    topic = topic_factory(1)
    produce(topic, [{"id": 1, "f" * 70: 1}])
    body = {"topic": topic, "target": sink_url, "table": "events"}
    config = write_pipelines(tmp_path, kafka_bootstrap, {"events": body})
    result = cli(config, "run", "events")
    assert result.returncode == 1
    assert len(result.stderr.strip().splitlines()) == 1, result.stderr
    assert f"field name '{'f' * 70}' is 70" in result.stderr
    assert checkpoints(sink_url, tmp_path, "events", topic) == {}


@sinks("postgresql", "mariadb")
def test_a_password_never_appears_in_errors(
    sink_url: str, tmp_path: Path, kafka_bootstrap: str, topic_factory: TopicFactory
) -> None:
    topic = topic_factory(1)
    url = sa.make_url(sink_url).set(password="s3cret-Pa55")
    target = url.render_as_string(hide_password=False)
    config = write_pipelines(
        tmp_path, kafka_bootstrap, {"events": {"topic": topic, "target": target, "table": "e"}}
    )
    for command in (["run", "events"], ["status", "events"], ["validate"]):
        result = cli(config, *command)
        assert "s3cret-Pa55" not in result.stdout + result.stderr
    assert "***@" in result.stdout
    failed = cli(config, "run", "events")
    assert failed.returncode == 1
    assert "***@" in failed.stderr and len(failed.stderr.strip().splitlines()) == 1
