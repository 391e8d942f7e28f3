"""Asset checks: offset continuity and freshness, on good tables and on planted damage."""

from __future__ import annotations

import time
from pathlib import Path

import duckdb
import sqlalchemy as sa
from confluent_kafka import Producer
from dagster import AssetCheckSeverity, AssetSelection, materialize
from sqlalchemy.engine import make_url
from sqlalchemy.pool import NullPool

from tests.dagster.support import (
    EVENTS,
    TARGET,
    check_metadata,
    checks,
    definitions,
    load_and_checks,
)
from tests.fixtures.kafka import Produce, TopicFactory
from tests.helpers import events, write_pipelines

CHECKS_ONLY = AssetSelection.checks_for_assets(EVENTS)


def _execute(url: str, *statements: str) -> None:
    """Damage a table behind kafka-etl's back (test-only SQL, fixed statements)."""
    parsed = make_url(url)
    if parsed.get_backend_name() == "duckdb":
        con = duckdb.connect(parsed.database or ":memory:")
        try:
            for statement in statements:
                con.execute(statement)
        finally:
            con.close()
        return
    engine = sa.create_engine(parsed, poolclass=NullPool)
    try:
        with engine.begin() as conn:
            for statement in statements:
                conn.execute(sa.text(statement))
    finally:
        engine.dispose()


def test_continuity_passes_on_a_good_table_and_fails_on_a_duplicate_and_a_gap(
    tmp_path: Path,
    kafka_bootstrap: str,
    topic_factory: TopicFactory,
    produce: Produce,
    sink_url: str,
) -> None:
    topic = topic_factory(2)
    produce(topic, events(0, 40), partition=0)
    produce(topic, events(40, 40), partition=1)
    body = {"topic": topic, "target": sink_url, "table": "events"}
    path = write_pipelines(tmp_path, kafka_bootstrap, {"events": body})
    load = load_and_checks(definitions(path))

    good = checks(materialize(load, selection=[EVENTS]))["offset_continuity"]
    assert good.passed, good.description
    assert check_metadata(good)["rows"] == 80

    # A copy without the unique (_topic, _partition, _offset) key lets a duplicate in.
    _execute(
        sink_url,
        "CREATE TABLE events_copy AS SELECT * FROM events",
        "DROP TABLE events",
        "ALTER TABLE events_copy RENAME TO events",
        "INSERT INTO events SELECT * FROM events WHERE _partition = 0 AND _offset = 7",
        "DELETE FROM events WHERE _partition = 1 AND _offset IN (20, 21)",
    )
    bad = checks(materialize(load, selection=CHECKS_ONLY))["offset_continuity"]
    assert not bad.passed
    assert bad.severity == AssetCheckSeverity.ERROR
    meta = check_metadata(bad)
    assert (meta["duplicate_groups"], meta["missing_offsets"]) == (1, 2)
    assert meta["duplicate_examples"] == [{"_partition": 0, "_offset": 7, "count": 2}]
    assert meta["missing_examples"] == [{"partition": 1, "first": 20, "next": 22}]
    assert "1 duplicated" in (bad.description or "")


def test_offsets_kafka_has_no_message_for_are_listed_not_failed(
    tmp_path: Path, kafka_bootstrap: str, topic_factory: TopicFactory, produce: Produce
) -> None:
    topic = topic_factory(1)
    produce(topic, events(0, 5), partition=0)
    producer = Producer({"bootstrap.servers": kafka_bootstrap, "transactional.id": topic})
    producer.init_transactions(30)
    producer.begin_transaction()
    producer.produce(topic, b'{"seq": 100}', partition=0)
    producer.commit_transaction(30)  # leaves a transaction marker at offset 6
    produce(topic, [None], keys=[b"k"], partition=0)  # a tombstone at offset 7
    produce(topic, events(5, 2), partition=0)
    path = write_pipelines(
        tmp_path, kafka_bootstrap, {"events": {"topic": topic, "target": TARGET, "table": "events"}}
    )
    result = materialize(load_and_checks(definitions(path)), selection=[EVENTS])
    check = checks(result)["offset_continuity"]
    assert check.passed, check.description
    meta = check_metadata(check)
    assert meta["missing_offsets"] == 0
    assert [(g["first"], g["next"]) for g in meta["kafka_gaps_listed"]] == [(6, 7), (7, 8)]
    assert "transaction marker" in meta["kafka_gaps_listed"][0]["reason"]
    assert "tombstone" in meta["kafka_gaps_listed"][1]["reason"]


def test_freshness_fails_when_the_oldest_unloaded_message_is_too_old(
    tmp_path: Path, kafka_bootstrap: str, topic_factory: TopicFactory, produce: Produce
) -> None:
    topic = topic_factory(1)
    produce(topic, events(0, 10))
    body = {"topic": topic, "target": TARGET, "table": "events", "max_lag_minutes": 30}
    path = write_pipelines(tmp_path, kafka_bootstrap, {"events": body})
    load = load_and_checks(definitions(path))
    fresh = checks(materialize(load, selection=[EVENTS]))["freshness"]
    assert fresh.passed, fresh.description

    producer = Producer({"bootstrap.servers": kafka_bootstrap})
    two_hours_ago = int((time.time() - 7200) * 1000)
    producer.produce(topic, b'{"seq": 10}', partition=0, timestamp=two_hours_ago)
    producer.flush(30)
    stale = checks(materialize(load, selection=CHECKS_ONLY))["freshness"]
    assert not stale.passed
    meta = check_metadata(stale)
    assert meta["lag"] == 1
    assert 119 < meta["oldest_unloaded_age_minutes"] < 125
    assert "limit 30 min" in (stale.description or "")

    loaded = checks(materialize(load, selection=[EVENTS]))["freshness"]
    assert loaded.passed  # caught up again
