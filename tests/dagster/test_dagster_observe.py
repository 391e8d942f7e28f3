"""What Dagster shows between loads: observations, CLI loads, no-op runs and progress lines,
against the real broker (sensors evaluated with a real instance, in process)."""

from __future__ import annotations

import os
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

from dagster import (
    AssetKey,
    AssetMaterialization,
    AssetObservation,
    DagsterInstance,
    Definitions,
    SensorResult,
    build_sensor_context,
    materialize,
)

from dagster_project.resource import progress_line
from dagster_project.table_side import read_table_side
from dagster_project.translator import PipelineTranslatorData
from pipelines.config import load_project
from pipelines.runner import Progress, run_pipeline
from tests.dagster.support import EVENTS, TARGET, checks, definitions, materializations, resource
from tests.fixtures.kafka import Produce, TopicFactory
from tests.helpers import events, high_watermarks, write_pipelines

TOPIC_PREFIX = ("kafka",)


def _values(event: Any) -> dict[str, Any]:
    return {k: getattr(v, "value", v) for k, v in event.metadata.items()}


def _observe(
    defs: Definitions, path: Path, instance: DagsterInstance, cursor: str | None
) -> tuple[dict[AssetKey, dict[str, Any]], str | None]:
    sensor = defs.get_sensor_def("events_observe_sensor")
    context = build_sensor_context(
        instance=instance, cursor=cursor, resources={"kafka_etl": resource(path)}
    )
    result = sensor(context)
    assert isinstance(result, SensorResult), result
    found = {}
    for e in result.asset_events:
        if isinstance(e, AssetObservation):
            found[e.asset_key] = _values(e)
    return found, result.cursor


def test_observations_follow_a_growing_backlog_then_fall_to_zero_after_a_load(
    tmp_path: Path, kafka_bootstrap: str, topic_factory: TopicFactory, produce: Produce
) -> None:
    topic = topic_factory(2)
    path = write_pipelines(
        tmp_path, kafka_bootstrap, {"events": {"topic": topic, "target": TARGET, "table": "events"}}
    )
    defs = definitions(path)
    topic_key = AssetKey([*TOPIC_PREFIX, topic])
    instance = DagsterInstance.ephemeral()
    cursor = None
    lags = []
    for i in range(3):
        produce(topic, events(i * 100, 100))
        seen, cursor = _observe(defs, path, instance, cursor)
        lags.append(seen[EVENTS]["lag"])
        assert seen[EVENTS]["oldest_unloaded_age_seconds"] >= 0
        assert seen[topic_key]["high_watermarks"] == 100 * (i + 1)
        assert "dagster/row_count" not in seen[EVENTS]  # no table yet
    assert lags == [100, 200, 300]
    assert "messages_per_second" in seen[topic_key]

    assert materialize([defs.resolve_assets_def(EVENTS)], selection=[EVENTS]).success
    seen, cursor = _observe(defs, path, instance, cursor)
    table = seen[EVENTS]
    assert table["lag"] == 0
    assert table["oldest_unloaded_age_seconds"] == 0
    assert table["dagster/row_count"] == 300
    assert table["seconds_since_last_load"] >= 0
    marks = high_watermarks(kafka_bootstrap, topic, 2)
    rows = {r.data["partition"]: r.data for r in table["partitions"].records}
    assert rows == {
        p: {"partition": p, "checkpoint": marks[p], "high_watermark": marks[p], "lag": 0}
        for p in range(2)
    }
    per_partition = {r.data["partition"]: r.data for r in seen[topic_key]["partitions"].records}
    assert {p: r["high_watermark"] for p, r in per_partition.items()} == marks


def test_a_table_loaded_outside_dagster_is_found_by_the_next_observation(
    tmp_path: Path, kafka_bootstrap: str, topic_factory: TopicFactory, produce: Produce
) -> None:
    topic = topic_factory(2)
    produce(topic, events(0, 80))
    path = write_pipelines(
        tmp_path, kafka_bootstrap, {"events": {"topic": topic, "target": TARGET, "table": "events"}}
    )
    run_pipeline(load_project(path), "events")  # no Dagster involved
    defs = definitions(path)
    sensor = defs.get_sensor_def("events_observe_sensor")
    instance = DagsterInstance.ephemeral()

    def evaluate() -> list[AssetMaterialization]:
        context = build_sensor_context(instance=instance, resources={"kafka_etl": resource(path)})
        result = sensor(context)
        assert isinstance(result, SensorResult)
        found = [e for e in result.asset_events if isinstance(e, AssetMaterialization)]
        for e in result.asset_events:
            instance.report_runless_asset_event(e)  # what the daemon does with them
        return found

    [found] = evaluate()
    assert found.asset_key == EVENTS
    assert _values(found)["dagster/row_count"] == 80
    assert instance.get_latest_materialization_event(EVENTS) is not None
    assert evaluate() == []  # once on record, observations only


def test_a_duckdb_file_held_by_a_writer_is_skipped_not_waited_for(
    tmp_path: Path, kafka_bootstrap: str, topic_factory: TopicFactory, produce: Produce
) -> None:
    topic = topic_factory(1)
    produce(topic, events(0, 10))
    path = write_pipelines(
        tmp_path, kafka_bootstrap, {"events": {"topic": topic, "target": TARGET, "table": "events"}}
    )
    defs = definitions(path)
    assert materialize([defs.resolve_assets_def(EVENTS)], selection=[EVENTS]).success
    # Another process holds the file for writing (as a running load does).
    holder = subprocess.Popen(
        [
            sys.executable,
            "-c",
            "import duckdb, sys, time; c = duckdb.connect(sys.argv[1]); print('held', flush=True);"
            " time.sleep(60)",
            str(tmp_path / "warehouse.duckdb"),
        ],
        stdout=subprocess.PIPE,
        text=True,
    )
    try:
        assert holder.stdout is not None and holder.stdout.readline().strip() == "held"
        began = time.monotonic()
        seen, _ = _observe(defs, path, DagsterInstance.ephemeral(), None)
        assert time.monotonic() - began < 15
        assert seen[EVENTS]["lag"] == 0  # from the consumer group
        assert "dagster/row_count" not in seen[EVENTS]
        assert "busy" in seen[EVENTS]["table_side"]
    finally:
        holder.kill()
        holder.wait()


def test_a_load_that_finds_nothing_new_records_an_observation_and_keeps_the_last_load(
    tmp_path: Path, kafka_bootstrap: str, topic_factory: TopicFactory, produce: Produce
) -> None:
    topic = topic_factory(2)
    produce(topic, events(0, 50), keys=[f"k{i}" for i in range(50)])
    body = {"topic": topic, "target": TARGET, "table": "events", "max_lag_minutes": 60}
    path = write_pipelines(tmp_path, kafka_bootstrap, {"events": body})
    defs = definitions(path)
    load = defs.resolve_assets_def(EVENTS)
    instance = DagsterInstance.ephemeral()
    first = materialize([load], selection=[EVENTS], instance=instance)
    assert materializations(first)[EVENTS]["rows_loaded"] == 50
    latest = instance.get_latest_materialization_event(EVENTS)

    again = materialize([load], selection=[EVENTS], instance=instance)
    assert again.success
    assert materializations(again) == {}
    observed = [
        e.event_specific_data.asset_observation  # type: ignore[union-attr]
        for e in again.all_events
        if e.event_type_value == "ASSET_OBSERVATION"
    ]
    assert len(observed) == 1
    meta = _values(observed[0])
    assert meta["dagster/row_count"] == 50
    assert meta["lag"] == 0
    marks = high_watermarks(kafka_bootstrap, topic, 2)
    assert {r.data["partition"]: r.data["checkpoint"] for r in meta["partitions"].records} == marks
    assert all(e.passed for e in checks(again).values())  # checks still ran on the table
    assert instance.get_latest_materialization_event(EVENTS) == latest


def test_a_cli_load_is_a_materialization_in_the_instance_of_dagster_home(
    tmp_path: Path, kafka_bootstrap: str, topic_factory: TopicFactory, produce: Produce
) -> None:
    topic = topic_factory(2)
    produce(topic, events(0, 120))
    path = write_pipelines(
        tmp_path, kafka_bootstrap, {"events": {"topic": topic, "target": TARGET, "table": "events"}}
    )
    home = tmp_path / "home"
    home.mkdir()
    env = {**os.environ, "DAGSTER_HOME": str(home), "COLUMNS": "200"}
    done = subprocess.run(
        [sys.executable, "-m", "pipelines.cli", "-c", str(path), "run", "events"],
        capture_output=True,
        text=True,
        env=env,
        timeout=300,
        check=False,
    )
    assert done.returncode == 0, done.stderr
    assert "not recorded in Dagster" not in done.stderr
    instance = DagsterInstance.from_ref(DagsterInstance.local_temp(str(home)).get_ref())
    event = instance.get_latest_materialization_event(EVENTS)
    assert event is not None and event.run_id == ""
    m = event.asset_materialization
    assert m is not None
    meta = _values(m)
    marks = high_watermarks(kafka_bootstrap, topic, 2)
    assert meta["dagster/row_count"] == 120
    assert meta["offset_ranges"] == ", ".join(f"{p}:[0,{marks[p]})" for p in range(2) if marks[p])
    columns = {c.name: c.type for c in meta["dagster/column_schema"].columns}
    assert columns["seq"] == "BIGINT (int64)"
    assert columns["_timestamp"].startswith("TIMESTAMP WITH TIME ZONE (timestamp")


def test_a_cli_load_without_dagster_home_never_imports_dagster(
    tmp_path: Path, kafka_bootstrap: str, topic_factory: TopicFactory, produce: Produce
) -> None:
    topic = topic_factory(1)
    produce(topic, events(0, 5))
    path = write_pipelines(
        tmp_path, kafka_bootstrap, {"events": {"topic": topic, "target": TARGET, "table": "events"}}
    )
    env = {k: v for k, v in os.environ.items() if k != "DAGSTER_HOME"}
    code = (
        "import sys; from pipelines import cli; rc = cli.main(sys.argv[1:]);"
        " assert 'dagster' not in sys.modules, 'dagster imported'; sys.exit(rc)"
    )
    done = subprocess.run(
        [sys.executable, "-c", code, "-c", str(path), "run", "events"],
        capture_output=True,
        text=True,
        env=env,
        timeout=300,
        check=False,
    )
    assert done.returncode == 0, done.stderr


def test_progress_lines_give_offsets_rows_rate_and_eta() -> None:
    line = progress_line(
        "events", Progress(rows=4_000, offsets_done=4_000, offsets_total=10_000), 2
    )
    assert line == "pipeline 'events': 4,000/10,000 offsets (40%), 4,000 rows, 2,000 rows/s, ETA 3s"
    assert progress_line("e", Progress(0, 0, 0), 0).endswith("ETA unknown")


EXPECTED_TYPES = {  # the database's own name for a JSON integer and for _timestamp
    "duckdb": ("BIGINT", "TIMESTAMP WITH TIME ZONE"),
    "postgresql": ("BIGINT", "TIMESTAMP WITH TIME ZONE"),
    "mariadb": ("BIGINT", "DATETIME"),
    "sqlite": ("BIGINT", "DATETIME"),
}


def test_the_table_side_reads_rows_checkpoints_last_load_and_database_types_on_every_sink(
    tmp_path: Path,
    kafka_bootstrap: str,
    topic_factory: TopicFactory,
    produce: Produce,
    sink_url: str,
) -> None:
    topic = topic_factory(2)
    produce(topic, events(0, 40))
    path = write_pipelines(
        tmp_path, kafka_bootstrap, {"events": {"topic": topic, "target": sink_url, "table": "t"}}
    )
    project = load_project(path)
    data = PipelineTranslatorData(project, project.pipeline("events"))
    before = read_table_side(data)
    assert before is None or (before.rows is None and before.checkpoints == {})
    run_pipeline(project, "events")
    side = read_table_side(data)
    assert side is not None
    assert side.rows == 40
    assert side.checkpoints == high_watermarks(kafka_bootstrap, topic, 2)
    assert side.last_load is not None
    integer, timestamp = EXPECTED_TYPES[data.backend.replace("mysql", "mariadb")]
    assert side.column_types["seq"].startswith(integer), side.column_types  # BIGINT(20)
    assert side.column_types["_timestamp"].startswith(timestamp), side.column_types
