"""A topic of 1,000 partitions: the batched look-ups (one request per broker, not one per
partition) plan, load, report and replay every partition exactly as the per-partition API
would. How long they take is measured by bench/bench_scale.py, not asserted here."""

from __future__ import annotations

import datetime as dt
from collections.abc import Iterator
from pathlib import Path

import pytest
from confluent_kafka import Consumer, TopicPartition

from connector.client import close_consumer, make_consumer, offsets_for_time, plan_read
from connector.lag import group_lag
from pipelines.runner import pipeline_status, replay_pipeline, run_pipeline
from tests.fixtures.kafka import produce_json, topics_on
from tests.helpers import project_for, table_offsets, write_pipelines

PARTITIONS = 1_000
# Messages per partition: most partitions stay empty, a few hold some.
FILLED = {0: 3, 1: 1, 499: 2, 998: 5, 999: 1}
TARGET = "duckdb:///warehouse.duckdb"


@pytest.fixture(scope="module")
def big_topic(kafka_bootstrap: str) -> Iterator[str]:
    """One topic for the module: creating 1,000 partitions takes the broker a while."""
    factory = topics_on(kafka_bootstrap)
    topic = next(factory)(PARTITIONS)
    for p, count in FILLED.items():
        produce_json(kafka_bootstrap, topic, [{"p": p, "i": i} for i in range(count)], partition=p)
    yield topic
    next(factory, None)  # deletes the topic


def _per_partition(bootstrap: str, topic: str) -> dict[int, tuple[int, int]]:
    """The watermarks one partition at a time, as kafka-etl asked for them before."""
    consumer = Consumer({"bootstrap.servers": bootstrap, "group.id": "tests-many"})
    try:
        return {
            p: consumer.get_watermark_offsets(TopicPartition(topic, p), timeout=10, cached=False)
            for p in range(PARTITIONS)
        }
    finally:
        consumer.close()


def test_a_plan_covers_every_partition_from_its_checkpoint(
    kafka_bootstrap: str, big_topic: str
) -> None:
    consumer = make_consumer({"bootstrap.servers": kafka_bootstrap}, "tests-many")
    try:
        plan = plan_read(consumer, big_topic, {0: 1, 999: 1})
    finally:
        close_consumer(consumer)
    assert sorted(plan.end) == list(range(PARTITIONS))
    assert plan.end == {p: FILLED.get(p, 0) for p in range(PARTITIONS)}
    assert plan.start == {p: 1 if p in (0, 999) else 0 for p in range(PARTITIONS)}
    assert plan.unrecorded == frozenset(range(PARTITIONS)) - {0, 999}
    assert plan.total_lag == sum(FILLED.values()) - 2
    # The same high watermarks (and log starts) as the one-partition-at-a-time API.
    marks = _per_partition(kafka_bootstrap, big_topic)
    assert {p: high for p, (_, high) in marks.items()} == plan.end


def test_run_status_and_replay_on_every_partition(
    tmp_path: Path, kafka_bootstrap: str, big_topic: str
) -> None:
    body = {"topic": big_topic, "target": TARGET, "table": "events"}
    project = project_for(write_pipelines(tmp_path, kafka_bootstrap, {"events": body}))
    seen: list[int] = []
    result = run_pipeline(project, "events", on_start=lambda plan: seen.append(len(plan.end)))
    assert seen == [PARTITIONS]
    assert result.rows == sum(FILLED.values())
    assert result.lag_after == dict.fromkeys(range(PARTITIONS), 0)
    expected = [(p, o) for p, count in sorted(FILLED.items()) for o in range(count)]
    assert table_offsets(TARGET, tmp_path, "events") == expected

    status = pipeline_status(project, "events")
    assert [s.partition for s in status] == list(range(PARTITIONS))
    assert {s.partition: (s.position, s.high_watermark) for s in status if s.position} == {
        p: (count, count) for p, count in FILLED.items()
    }
    assert all(s.lag == 0 and s.log_start == 0 for s in status)
    lags = group_lag(project.consumer_settings(project.pipeline("events")), big_topic, "events")
    assert len(lags) == PARTITIONS

    # By time: every message is after the epoch and before tomorrow.
    since = dt.datetime(2000, 1, 1, tzinfo=dt.UTC)
    until = dt.datetime.now(dt.UTC) + dt.timedelta(days=1)
    consumer = make_consumer({"bootstrap.servers": kafka_bootstrap}, "tests-many")
    try:
        assert offsets_for_time(consumer, big_topic, until) == {
            p: FILLED.get(p, 0) for p in range(PARTITIONS)
        }
        assert offsets_for_time(consumer, big_topic, since) == dict.fromkeys(range(PARTITIONS), 0)
    finally:
        close_consumer(consumer)
    replayed = replay_pipeline(project, "events", since=since, until=until)
    assert replayed.rows == sum(FILLED.values())
    assert table_offsets(TARGET, tmp_path, "events") == expected
