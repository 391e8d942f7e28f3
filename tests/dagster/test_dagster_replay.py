"""The replay job: a day (partition or ``day:``), a from/to range or offsets, checkpoint untouched;
its days start at the earliest day Kafka retains, and each run observes what it rewrote."""

from __future__ import annotations

from datetime import UTC, datetime, time, timedelta
from pathlib import Path
from time import sleep
from typing import Any

from confluent_kafka import Producer
from dagster import AssetObservation, ExecuteInProcessResult, materialize

from tests.dagster.support import EVENTS, TARGET, definitions, table_rows
from tests.fixtures.kafka import Produce, TopicFactory
from tests.helpers import checkpoints, events, write_pipelines

JOB = "events_replay"
OP = "kafka_etl__events__replay"


def _not_at_midnight() -> None:
    """Messages produced now must belong to today's partition when the test replays it."""
    now = datetime.now(UTC)
    to_midnight = (datetime.combine(now.date() + timedelta(days=1), time(), UTC) - now).seconds
    if to_midnight < 60:
        sleep(to_midnight + 1)


def _loaded(tmp_path: Path, bootstrap: str, topic: str) -> Path:
    path = write_pipelines(
        tmp_path, bootstrap, {"events": {"topic": topic, "target": TARGET, "table": "events"}}
    )
    assert materialize([definitions(path).resolve_assets_def(EVENTS)], selection=[EVENTS]).success
    return path


def _observed(result: ExecuteInProcessResult) -> tuple[dict[str, Any], str]:
    """The replay's observation of the table asset: metadata values and description."""
    [event] = [e for e in result.all_events if e.event_type_value == "ASSET_OBSERVATION"]
    observation = event.event_specific_data.asset_observation  # type: ignore[union-attr]
    assert isinstance(observation, AssetObservation) and observation.asset_key == EVENTS
    meta = {k: getattr(v, "value", v) for k, v in observation.metadata.items()}
    return meta, observation.description or ""


def test_replaying_a_day_rewrites_its_rows_and_an_empty_day_shows_0(
    tmp_path: Path, kafka_bootstrap: str, topic_factory: TopicFactory, produce: Produce
) -> None:
    _not_at_midnight()
    topic = topic_factory(2)
    produce(topic, events(0, 300))
    path = _loaded(tmp_path, kafka_bootstrap, topic)
    before = table_rows(tmp_path / "warehouse.duckdb")
    marks = checkpoints(TARGET, tmp_path, "events", topic)
    replay = definitions(path).resolve_job_def(JOB)
    today = datetime.now(UTC).date()
    assert replay.partitions_def is not None
    assert replay.partitions_def.get_first_partition_key() == str(today)  # all Kafka holds

    meta, description = _observed(replay.execute_in_process(partition_key=str(today)))
    assert (meta["rows_replayed"], meta["dagster/row_count"]) == (300, 300)
    assert meta["replay_from"] == f"{today}T00:00:00+00:00"
    assert description.startswith("Replayed 300 rows")
    assert table_rows(tmp_path / "warehouse.duckdb") == before
    assert checkpoints(TARGET, tmp_path, "events", topic) == marks

    day = {"ops": {OP: {"config": {"day": str(today - timedelta(days=1))}}}}
    meta, description = _observed(replay.execute_in_process(run_config=day))
    assert meta["rows_replayed"] == 0
    assert "Replayed 0 rows: Kafka holds no message of" in description


def test_replay_days_start_at_the_earliest_day_kafka_retains(
    tmp_path: Path, kafka_bootstrap: str, topic_factory: TopicFactory
) -> None:
    topic = topic_factory(2)
    producer = Producer({"bootstrap.servers": kafka_bootstrap})
    three_days_ago = datetime.now(UTC) - timedelta(days=3)
    producer.produce(
        topic, b'{"seq": 0}', partition=1, timestamp=int(three_days_ago.timestamp() * 1000)
    )
    producer.produce(topic, b'{"seq": 1}', partition=0)
    producer.flush(30)
    path = write_pipelines(
        tmp_path, kafka_bootstrap, {"events": {"topic": topic, "target": TARGET, "table": "events"}}
    )
    days = definitions(path).resolve_job_def(JOB).partitions_def
    assert days is not None
    assert days.get_first_partition_key() == str(three_days_ago.date())


def test_a_launchpad_run_replays_a_from_to_range_or_offsets(
    tmp_path: Path, kafka_bootstrap: str, topic_factory: TopicFactory, produce: Produce
) -> None:
    topic = topic_factory(1)
    produce(topic, events(0, 50))
    path = _loaded(tmp_path, kafka_bootstrap, topic)
    before = table_rows(tmp_path / "warehouse.duckdb")
    replay = definitions(path).resolve_job_def(JOB)
    now = datetime.now(UTC)
    window = {
        "from": (now - timedelta(hours=1)).isoformat(),
        "to": (now + timedelta(minutes=1)).isoformat().replace("+00:00", "Z"),
    }
    by_time = replay.execute_in_process(run_config={"ops": {OP: {"config": window}}})
    assert _observed(by_time)[0]["rows_replayed"] == 50
    offsets = {"partition": 0, "from_offset": 10, "to_offset": 20}
    by_offsets = replay.execute_in_process(run_config={"ops": {OP: {"config": offsets}}})
    meta = _observed(by_offsets)[0]
    assert (meta["rows_replayed"], meta["offset_ranges"]) == (10, "0:[10,20)")
    assert table_rows(tmp_path / "warehouse.duckdb") == before

    half = replay.execute_in_process(
        run_config={"ops": {OP: {"config": {"from": window["from"]}}}}, raise_on_error=False
    )
    assert not half.success
    [failure] = [e for e in half.all_events if e.is_step_failure]
    user = failure.step_failure_data.user_failure_data
    assert user is not None and "give both 'from' and 'to'" in (user.description or "")
