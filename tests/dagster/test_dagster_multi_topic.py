"""A templated multi-topic pipeline in Dagster: one asset per table, each materialized and
checked on its own; a pattern listed when the definitions load, or (Kafka unreachable) the
topics the checkpoint table records, said in the asset description."""

from __future__ import annotations

import uuid
from pathlib import Path

from dagster import AssetCheckKey, AssetKey, materialize

from tests.dagster.support import TARGET, checks, definitions, load_and_checks, materializations
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
