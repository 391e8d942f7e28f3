"""The daily replay asset: a day (partition), a from/to range or offsets, checkpoint untouched."""

from __future__ import annotations

from datetime import UTC, datetime, time, timedelta
from pathlib import Path
from time import sleep

from dagster import AssetKey, materialize

from tests.dagster.support import EVENTS, TARGET, definitions, materializations, table_rows
from tests.fixtures.kafka import Produce, TopicFactory
from tests.helpers import checkpoints, events, write_pipelines

REPLAY = AssetKey("events_replay")
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


def test_replaying_a_day_rewrites_its_rows_and_leaves_table_and_checkpoint_as_they_were(
    tmp_path: Path, kafka_bootstrap: str, topic_factory: TopicFactory, produce: Produce
) -> None:
    _not_at_midnight()
    topic = topic_factory(2)
    produce(topic, events(0, 300))
    path = _loaded(tmp_path, kafka_bootstrap, topic)
    before = table_rows(tmp_path / "warehouse.duckdb")
    marks = checkpoints(TARGET, tmp_path, "events", topic)
    replay = definitions(path).resolve_assets_def(REPLAY)
    today = datetime.now(UTC).date()

    result = materialize([replay], partition_key=str(today))
    meta = materializations(result)[REPLAY]
    assert (meta["rows_replayed"], meta["dagster/row_count"]) == (300, 300)
    assert meta["replay_from"] == f"{today}T00:00:00+00:00"
    assert table_rows(tmp_path / "warehouse.duckdb") == before
    assert checkpoints(TARGET, tmp_path, "events", topic) == marks

    yesterday = materialize([replay], partition_key=str(today - timedelta(days=1)))
    assert materializations(yesterday)[REPLAY]["rows_replayed"] == 0


def test_a_launchpad_run_replays_a_from_to_range_or_offsets(
    tmp_path: Path, kafka_bootstrap: str, topic_factory: TopicFactory, produce: Produce
) -> None:
    topic = topic_factory(1)
    produce(topic, events(0, 50))
    path = _loaded(tmp_path, kafka_bootstrap, topic)
    before = table_rows(tmp_path / "warehouse.duckdb")
    replay = definitions(path).resolve_assets_def(REPLAY)
    now = datetime.now(UTC)
    window = {
        "from": (now - timedelta(hours=1)).isoformat(),
        "to": (now + timedelta(minutes=1)).isoformat().replace("+00:00", "Z"),
    }
    by_time = materialize([replay], run_config={"ops": {OP: {"config": window}}})
    assert materializations(by_time)[REPLAY]["rows_replayed"] == 50
    offsets = {"partition": 0, "from_offset": 10, "to_offset": 20}
    by_offsets = materialize([replay], run_config={"ops": {OP: {"config": offsets}}})
    meta = materializations(by_offsets)[REPLAY]
    assert (meta["rows_replayed"], meta["offset_ranges"]) == (10, "0:[10,20)")
    assert table_rows(tmp_path / "warehouse.duckdb") == before

    half = materialize(
        [replay],
        run_config={"ops": {OP: {"config": {"from": window["from"]}}}},
        raise_on_error=False,
    )
    assert not half.success
    [failure] = [e for e in half.all_events if e.is_step_failure]
    user = failure.step_failure_data.user_failure_data
    assert user is not None and "give both 'from' and 'to'" in (user.description or "")
