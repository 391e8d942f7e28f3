"""Pipelines as Dagster assets, materialized in process against the real broker."""

import os
import warnings
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from dagster import AssetExecutionContext, AssetKey, DagsterInstance, EnvVar, materialize

from dagster_project import (
    KafkaEtlResource,
    KafkaEtlTranslator,
    PipelineTranslatorData,
    kafka_etl_assets,
    kafka_etl_checks,
)
from dagster_project.resource import LiteralSecretWarning
from pipelines.config import load_project
from tests.dagster.support import (
    EVENTS,
    TARGET,
    checks,
    definitions,
    load_and_checks,
    materializations,
    resource,
)
from tests.fixtures.kafka import Produce, TopicFactory
from tests.helpers import events, expected_offsets, high_watermarks, table_offsets, write_pipelines


def test_materialize_loads_exactly_the_backlog_and_reports_it(
    tmp_path: Path, kafka_bootstrap: str, topic_factory: TopicFactory, produce: Produce
) -> None:
    topic = topic_factory(3)
    # Keyed, so every partition gets some: unkeyed, the sticky partitioner may put all 600
    # into one partition's batch, and this test describes a load of all three.
    produce(topic, events(0, 600), keys=[f"k{i}" for i in range(600)])
    path = write_pipelines(
        tmp_path, kafka_bootstrap, {"events": {"topic": topic, "target": TARGET, "table": "events"}}
    )
    defs = definitions(path)
    load = load_and_checks(defs)

    first = materialize(load, selection=[EVENTS])
    assert first.success
    marks = high_watermarks(kafka_bootstrap, topic, 3)
    assert all(marks.values()), marks
    assert table_offsets(TARGET, tmp_path, "events") == expected_offsets(marks)
    meta = materializations(first)[EVENTS]
    assert meta["dagster/row_count"] == 600
    assert meta["rows_loaded"] == 600
    assert meta["dagster/table_name"] == "warehouse.main.events"
    columns = {c.name: c.type for c in meta["dagster/column_schema"].columns}
    assert columns["seq"] == "BIGINT (int64)"  # the database's type, then Arrow's
    assert columns["action"] == "VARCHAR (string)"
    assert {"_topic", "_partition", "_offset", "_timestamp", "_key"} <= set(columns)
    per_partition = {r.data["partition"]: r.data for r in meta["partitions"].records}
    assert per_partition == {
        p: {
            "partition": p,
            "first": 0,
            "next": marks[p],
            "offsets": marks[p],
            "checkpoint": marks[p],
            "lag_after": 0,
        }
        for p in range(3)
    }
    assert meta["offset_ranges"] == ", ".join(f"{p}:[0,{marks[p]})" for p in range(3))
    assert meta["lag_after"] == 0
    assert meta["duration_seconds"] > 0
    assert meta["rows_per_second"] > 0
    assert all(e.passed for e in checks(first).values())

    produce(topic, events(600, 150))
    second = materialize(load, selection=[EVENTS])
    meta = materializations(second)[EVENTS]
    after = high_watermarks(kafka_bootstrap, topic, 3)
    assert (meta["rows_loaded"], meta["dagster/row_count"]) == (150, 750)
    assert {
        r.data["partition"]: (r.data["first"], r.data["next"]) for r in meta["partitions"].records
    } == {p: (marks[p], after[p]) for p in range(3)}
    assert table_offsets(TARGET, tmp_path, "events") == expected_offsets(after)


def test_pipelines_sharing_a_duckdb_file_are_one_subsettable_op(
    tmp_path: Path, kafka_bootstrap: str, topic_factory: TopicFactory, produce: Produce
) -> None:
    clicks, views = topic_factory(1), topic_factory(1)
    produce(clicks, events(0, 20))
    produce(views, events(0, 30))
    path = write_pipelines(
        tmp_path,
        kafka_bootstrap,
        {
            "clicks": {"topic": clicks, "target": TARGET, "table": "clicks"},
            "views": {"topic": views, "target": TARGET, "table": "views"},
        },
    )
    defs = definitions(path)
    op = defs.resolve_assets_def(AssetKey("clicks"))
    assert op is defs.resolve_assets_def(AssetKey("views"))
    assert op.can_subset

    result = materialize(load_and_checks(defs, AssetKey("views")), selection=[AssetKey("views")])
    assert set(materializations(result)) == {AssetKey("views")}
    assert {e.asset_key for e in result.get_asset_check_evaluations()} == {AssetKey("views")}
    assert len(table_offsets(TARGET, tmp_path, "views")) == 30


def test_a_translator_subclass_renames_keys_and_groups(
    tmp_path: Path, kafka_bootstrap: str, topic_factory: TopicFactory, produce: Produce
) -> None:
    class Lake(KafkaEtlTranslator):
        def get_asset_spec(self, data: PipelineTranslatorData):  # type: ignore[no-untyped-def]
            spec = super().get_asset_spec(data)
            return spec.replace_attributes(
                key=AssetKey(["lake", data.pipeline.name]), group_name="lake"
            )

    topic = topic_factory(1)
    produce(topic, events(0, 10))
    path = write_pipelines(
        tmp_path, kafka_bootstrap, {"events": {"topic": topic, "target": TARGET, "table": "events"}}
    )
    defs = definitions(path, translator=Lake())
    key = AssetKey(["lake", "events"])
    load = defs.resolve_assets_def(key)
    assert load.group_names_by_key[key] == "lake"
    assert defs.resolve_job_def("events_replay") is not None
    result = materialize([load], selection=[key])
    assert materializations(result)[key]["rows_loaded"] == 10


def test_no_connection_secret_reaches_metadata_or_logs(
    tmp_path: Path,
    kafka_bootstrap: str,
    topic_factory: TopicFactory,
    produce: Produce,
    monkeypatch: pytest.MonkeyPatch,
    capfd: pytest.CaptureFixture[str],
) -> None:
    secret = "s3cr3t-" + os.urandom(6).hex()
    monkeypatch.setenv("KAFKA_ETL_TEST_PASSWORD", secret)
    topic = topic_factory(1)
    produce(topic, events(0, 5))
    path = write_pipelines(
        tmp_path,
        kafka_bootstrap,
        {"events": {"topic": topic, "target": TARGET, "table": "events"}},
    )
    # The password is set but unused (PLAINTEXT listener): it must still never be shown.
    with warnings.catch_warnings(record=True) as warned, DagsterInstance.ephemeral() as instance:
        warnings.simplefilter("always")
        defs = definitions(
            path, sasl_username="etl", sasl_password=EnvVar("KAFKA_ETL_TEST_PASSWORD")
        )
        result = materialize(
            [defs.resolve_assets_def(EVENTS)],
            selection=[EVENTS],
            instance=instance,
        )
        assert result.success
        logged = [repr(r) for r in instance.all_logs(result.run_id)]
    # An EnvVar is no literal secret, not even once Dagster has resolved it at run time.
    assert not [w for w in warned if issubclass(w.category, LiteralSecretWarning)]
    assert logged and not any(secret in line for line in logged)
    captured = capfd.readouterr()
    assert secret not in captured.out + captured.err
    # Not vacuous: the password does reach the consumer settings, in memory only.
    with pytest.warns(LiteralSecretWarning, match="sasl_password is a literal secret"):
        in_memory = resource(path, sasl_username="etl", sasl_password=secret).load_project()
    assert secret not in repr(in_memory) + in_memory.model_dump_json()
    assert in_memory.consumer_settings(in_memory.pipeline("events"))["sasl.password"] == secret


def test_the_factory_used_directly_as_in_the_readme(
    tmp_path: Path, kafka_bootstrap: str, topic_factory: TopicFactory, produce: Produce
) -> None:
    topic = topic_factory(1)
    produce(topic, events(0, 12))
    path = write_pipelines(
        tmp_path, kafka_bootstrap, {"events": {"topic": topic, "target": TARGET, "table": "events"}}
    )

    @kafka_etl_assets(project=load_project(path), pipelines=["events"])
    def warehouse(context: AssetExecutionContext, kafka_etl: KafkaEtlResource) -> Iterator[Any]:
        yield from kafka_etl.run(context)

    assert warehouse.op.pool is not None and warehouse.op.pool.startswith("kafka_etl/duckdb/")
    checked = kafka_etl_checks(project=load_project(path), pipelines=["events"])
    result = materialize([warehouse, checked], resources={"kafka_etl": resource(path)})
    assert materializations(result)[EVENTS]["rows_loaded"] == 12
    assert checks(result)["offset_continuity"].passed
