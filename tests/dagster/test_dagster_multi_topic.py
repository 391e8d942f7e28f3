"""A templated multi-topic pipeline in Dagster: one asset per table, each materialized and
checked on its own; a pattern listed when the definitions load, or (Kafka unreachable) the
topics the checkpoint table records, said in the asset description."""

from __future__ import annotations

import uuid
from datetime import UTC, datetime, timedelta
from pathlib import Path

import duckdb
from dagster import (
    AssetCheckKey,
    AssetKey,
    AssetObservation,
    DagsterInstance,
    Definitions,
    SensorResult,
    build_sensor_context,
    materialize,
)

from tests.dagster.support import (
    TARGET,
    checks,
    definitions,
    load_and_checks,
    materializations,
    resource,
)
from tests.fixtures.kafka import Produce, TopicFactory
from tests.helpers import events, table_offsets, write_pipelines


def test_a_pattern_pipeline_is_an_asset_per_table_loaded_and_checked_alone(
    tmp_path: Path, kafka_bootstrap: str, topic_factory: TopicFactory, produce: Produce
) -> None:
    prefix = f"dmt{uuid.uuid4().hex[:8]}"
    orders = topic_factory(2, name=f"{prefix}.shop.orders")
    items = topic_factory(1, name=f"{prefix}.shop.items")
    produce(orders, events(0, 40), keys=[f"k{i}" for i in range(40)])
    produce(items, events(0, 15))
    body = {
        "topic_pattern": rf"{prefix}\.shop\..*",
        "target": TARGET,
        "table": "raw_{topic_tail}",
    }
    path = write_pipelines(tmp_path, kafka_bootstrap, {"shop": body})
    defs = definitions(path)
    specs = {s.key: s for s in defs.resolve_all_asset_specs()}
    raw_orders, raw_items = AssetKey("raw_orders"), AssetKey("raw_items")
    assert {raw_orders, raw_items} <= set(specs)
    assert specs[raw_orders].metadata["kafka_etl/topic"] == orders
    assert [d.asset_key for d in specs[raw_items].deps] == [AssetKey(["kafka", items])]
    assert defs.resolve_job_def("shop__raw_orders_load") is not None

    result = materialize(load_and_checks(defs, raw_orders), selection=[raw_orders])
    assert result.success
    assert set(materializations(result)) == {raw_orders}
    assert materializations(result)[raw_orders]["rows_loaded"] == 40
    assert all(e.passed for e in checks(result).values()), checks(result)
    assert len(table_offsets(TARGET, tmp_path, "raw_orders")) == 40
    assert AssetCheckKey(raw_items, "offset_continuity") in {
        k for d in defs.resolve_asset_graph().assets_defs for k in d.check_keys
    }

    second = materialize(load_and_checks(defs, raw_items), selection=[raw_items])
    assert materializations(second)[raw_items]["rows_loaded"] == 15

    # Kafka gone when the definitions load: the topics the checkpoint table records, said so.
    offline = write_pipelines(tmp_path, "127.0.0.1:9", {"shop": body})
    specs = {s.key: s for s in definitions(offline).resolve_all_asset_specs()}
    assert {raw_orders, raw_items} <= set(specs)
    assert "Kafka was unreachable" in (specs[raw_orders].description or "")


def test_a_shared_table_pipeline_is_one_asset_loading_every_topic_once(
    tmp_path: Path, kafka_bootstrap: str, topic_factory: TopicFactory, produce: Produce
) -> None:
    prefix = f"dms{uuid.uuid4().hex[:8]}"
    clicks = topic_factory(2, name=f"{prefix}.clicks")
    views = topic_factory(1, name=f"{prefix}.views")
    produce(clicks, events(0, 30), keys=[f"k{i}" for i in range(30)])
    produce(views, events(0, 12))
    body = {"topics": [clicks, views], "target": TARGET, "table": "web", "max_lag_minutes": 60}
    path = write_pipelines(tmp_path, kafka_bootstrap, {"web": body})
    defs = definitions(path)
    web = AssetKey("web")
    specs = {s.key: s for s in defs.resolve_all_asset_specs()}
    assert [k for k in specs if k.path[0] != "kafka"] == [web]
    assert {d.asset_key for d in specs[web].deps} == {
        AssetKey(["kafka", clicks]),
        AssetKey(["kafka", views]),
    }
    assert specs[web].metadata["kafka_etl/pipeline"] == "web"
    for job in ("web_load", "web_checks", "web_replay"):
        assert defs.resolve_job_def(job) is not None
    assert {s.name for s in defs.sensors or []} >= {"web_lag_sensor", "web_observe_sensor"}

    [request] = _sensor(defs, path, "web_lag_sensor").run_requests or []
    assert request.run_key.startswith(f"web@{clicks}:0:")  # topic:partition, one key per backlog
    assert request.tags["kafka_etl/lag"] == "42"

    result = materialize(load_and_checks(defs, web), selection=[web])
    assert result.success
    loaded = materializations(result)[web]
    assert loaded["rows_loaded"] == 42
    assert loaded["topics"] == 2
    by_topic = {
        (r.data["topic"], r.data["partition"]): r.data["offsets"]
        for r in loaded["partitions"].records
    }
    assert sum(n for (t, _), n in by_topic.items() if t == clicks) == 30
    assert by_topic[(views, 0)] == 12
    assert {c.check_name: c.passed for c in checks(result).values()} == {
        "offset_continuity": True,
        "freshness": True,
    }
    assert _rows_per_topic(tmp_path) == {clicks: 30, views: 12}

    again = materialize(load_and_checks(defs, web), selection=[web])
    assert again.success
    assert materializations(again) == {}  # nothing new: an observation, no materialization
    assert _rows_per_topic(tmp_path) == {clicks: 30, views: 12}
    checked = defs.resolve_job_def("web_checks").execute_in_process()
    assert {c.check_name: c.passed for c in checks(checked).values()} == {
        "offset_continuity": True,
        "freshness": True,
    }

    assert "lag 0 is below" in str(_sensor(defs, path, "web_lag_sensor").skip_reason)
    observed = _sensor(defs, path, "web_observe_sensor").asset_events or []
    [table] = [
        e.metadata for e in observed if e.asset_key == web and isinstance(e, AssetObservation)
    ]
    assert (table["lag"].value, table["topics"].value, table["dagster/row_count"].value) == (
        0,
        2,
        42,
    )
    assert {e.asset_key for e in observed} >= {
        AssetKey(["kafka", clicks]),
        AssetKey(["kafka", views]),
    }

    replay = defs.resolve_job_def("web_replay")
    now = datetime.now(UTC)
    window = {
        "from": (now - timedelta(hours=1)).isoformat(),
        "to": (now + timedelta(minutes=1)).isoformat(),
    }
    op = {"ops": {"kafka_etl__web__replay": {"config": window}}}
    by_time = replay.execute_in_process(run_config=op)
    [seen] = [
        e.asset_observation_data.asset_observation
        for e in by_time.all_events
        if e.event_type_value == "ASSET_OBSERVATION"
    ]
    assert seen.metadata["rows_replayed"].value == 42  # every topic's window
    assert _rows_per_topic(tmp_path) == {clicks: 30, views: 12}
    offsets = {"partition": 0, "from_offset": 0, "to_offset": 5}
    refused = replay.execute_in_process(
        run_config={"ops": {"kafka_etl__web__replay": {"config": offsets}}}, raise_on_error=False
    )
    [failure] = [e for e in refused.all_events if e.is_step_failure]
    user = failure.step_failure_data.user_failure_data
    assert user is not None and "offsets names no topic" in (user.description or "")

    # As a pattern with Kafka gone when the definitions load: the recorded topics, said so.
    pattern = {**body, "topic_pattern": rf"{prefix}\..*"}
    del pattern["topics"]
    offline = write_pipelines(tmp_path, "127.0.0.1:9", {"web": pattern})
    specs = {s.key: s for s in definitions(offline).resolve_all_asset_specs()}
    assert {d.asset_key for d in specs[web].deps} == {
        AssetKey(["kafka", clicks]),
        AssetKey(["kafka", views]),
    }
    assert "Kafka was unreachable" in (specs[web].description or "")


def _sensor(defs: Definitions, path: Path, name: str) -> SensorResult:
    context = build_sensor_context(
        resources={"kafka_etl": resource(path)}, instance=DagsterInstance.ephemeral()
    )
    result = defs.resolve_sensor_def(name)(context)
    assert isinstance(result, SensorResult), result
    return result


def _rows_per_topic(base: Path) -> dict[str, int]:
    con = duckdb.connect(str(base / "warehouse.duckdb"), read_only=True)
    try:
        return dict(con.execute("SELECT _topic, count(*) FROM web GROUP BY 1").fetchall())
    finally:
        con.close()


def test_a_sharded_shared_table_loads_each_shard_of_every_topic_once(
    tmp_path: Path, kafka_bootstrap: str, topic_factory: TopicFactory, produce: Produce
) -> None:
    prefix = f"dmss{uuid.uuid4().hex[:8]}"
    first = topic_factory(2, name=f"{prefix}.a")
    second = topic_factory(2, name=f"{prefix}.b")
    for topic, count in ((first, 8), (second, 6)):
        for p in range(2):
            produce(topic, events(100 * p, count), partition=p)
    body = {"topics": [first, second], "target": TARGET, "table": "web", "shards": 2}
    defs = definitions(write_pipelines(tmp_path, kafka_bootstrap, {"web": body}))
    web = AssetKey("web")
    load = defs.resolve_assets_def(web)

    result = materialize([load], selection=[web])
    assert result.success
    assert materializations(result)[web]["rows_loaded"] == 28
    assert _rows_per_topic(tmp_path) == {first: 16, second: 12}
    again = materialize([load], selection=[web])
    assert again.success and not materializations(again)
    assert _rows_per_topic(tmp_path) == {first: 16, second: 12}


def test_a_shared_table_failing_on_one_topic_names_it_and_keeps_the_topics_before(
    tmp_path: Path, kafka_bootstrap: str, topic_factory: TopicFactory, produce: Produce
) -> None:
    prefix = f"dmsf{uuid.uuid4().hex[:8]}"
    good = topic_factory(1, name=f"{prefix}.a")
    bad = topic_factory(1, name=f"{prefix}.b")
    produce(good, events(0, 5))
    produce(bad, events(0, 2))
    produce(bad, [b"not json"])
    body = {"topics": [good, bad], "target": TARGET, "table": "web"}
    path = write_pipelines(tmp_path, kafka_bootstrap, {"web": body})
    instance = DagsterInstance.ephemeral()
    defs = definitions(path)
    web = AssetKey("web")
    result = materialize([defs.resolve_assets_def(web)], instance=instance, raise_on_error=False)
    assert not result.success
    [failure] = [e for e in result.all_events if e.is_step_failure]
    user = failure.step_failure_data.user_failure_data
    description = (user.description if user else "") or ""
    assert f"pipeline 'web::{bad}'" in description and f"{bad}/0@2:" in description
    assert f"reset web --topic {bad} --partition 0 --to-offset 3" in description
    run = instance.get_run_by_id(result.run_id)
    assert run is not None and run.tags["kafka_etl/failed_at"] == f"{bad}/0@2"
    # the first topic committed; the second's batch with the bad message did not
    assert _rows_per_topic(tmp_path) == {good: 5}
