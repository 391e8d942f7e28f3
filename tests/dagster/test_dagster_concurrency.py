"""Overlapping runs of one DuckDB-backed pipeline: pools, waiting, and losing a race cleanly."""

from __future__ import annotations

import os
import subprocess
import sys
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest
from dagster import AssetCheckKey, AssetKey, ExecuteInProcessResult, materialize

import dagster_project.resource as resource_module
from pipelines.runner import RunResult
from pipelines.runner import run_pipeline as real_run_pipeline
from tests.dagster.support import EVENTS, TARGET, definitions, materializations
from tests.fixtures.kafka import Produce, TopicFactory
from tests.helpers import events, expected_offsets, high_watermarks, table_offsets, write_pipelines

DAGSTER = str(Path(sys.executable).parent / "dagster")


def _config(tmp_path: Path, bootstrap: str, topic: str, **extra: object) -> Path:
    body = {"topic": topic, "target": TARGET, "table": "events", **extra}
    return write_pipelines(tmp_path, bootstrap, {"events": body})


def _failure(result: ExecuteInProcessResult) -> str:
    [event] = [e for e in result.all_events if e.is_step_failure]
    data = event.step_failure_data
    user = data.user_failure_data
    return (user.description if user and user.description else None) or data.error.message  # type: ignore[union-attr]


def test_two_concurrent_materializations_both_finish_and_load_every_offset_once(
    tmp_path: Path, kafka_bootstrap: str, topic_factory: TopicFactory, produce: Produce
) -> None:
    """Two `dagster asset materialize` processes at once, with no pool to keep them apart:
    the second waits for the DuckDB file, then loads only what is left (here: nothing)."""
    topic = topic_factory(3)
    produce(topic, events(0, 10_000))
    path = _config(tmp_path, kafka_bootstrap, topic, batch_max_rows=1_000)
    env = {**os.environ, "KAFKA_ETL_CONFIG": str(path)}
    env.pop("DAGSTER_HOME", None)  # each process gets its own temporary instance
    command = [DAGSTER, "asset", "materialize", "-m", "dagster_project", "--select", "events"]
    runs = [
        subprocess.Popen(
            command,
            cwd=tmp_path,
            env=env,
            stdout=subprocess.PIPE,
            stderr=subprocess.PIPE,
            text=True,
        )
        for _ in range(2)
    ]
    outcomes = [p.communicate(timeout=300) for p in runs]
    assert [p.returncode for p in runs] == [0, 0], [err[-3000:] for _, err in outcomes]
    marks = high_watermarks(kafka_bootstrap, topic, 3)
    assert table_offsets(TARGET, tmp_path, "events") == expected_offsets(marks)


def _racing(monkeypatch: pytest.MonkeyPatch) -> None:
    """Make the next run lose a race: once it has planned its reads, another run loads it all.

    (Within one process; across processes DuckDB's file lock makes the second run wait.)"""
    raced = False

    def run_pipeline(project: Any, name: str, **kwargs: Any) -> RunResult:
        nonlocal raced
        on_start: Callable[[Any], None] | None = kwargs.get("on_start")

        def start_then_race(plan: Any) -> None:
            nonlocal raced
            if on_start is not None:
                on_start(plan)
            if not raced:
                raced = True
                real_run_pipeline(project, name)

        return real_run_pipeline(project, name, **{**kwargs, "on_start": start_then_race})

    monkeypatch.setattr(resource_module, "run_pipeline", run_pipeline)


def test_a_run_that_loses_the_race_stops_with_a_clear_message_and_loads_nothing_twice(
    tmp_path: Path,
    kafka_bootstrap: str,
    topic_factory: TopicFactory,
    produce: Produce,
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    topic = topic_factory(2)
    produce(topic, events(0, 300))
    path = _config(tmp_path, kafka_bootstrap, topic)
    load = definitions(path, conflict_retries=0).resolve_assets_def(EVENTS)
    assert materialize([load], selection=[EVENTS]).success
    produce(topic, events(300, 200))
    _racing(monkeypatch)
    result = materialize([load], selection=[EVENTS], raise_on_error=False)
    assert not result.success
    message = _failure(result)
    assert message.startswith("pipeline 'events': ") and len(message.splitlines()) == 1
    assert "checkpoint moved" in message and "another run of the same pipeline" in message
    assert "nothing from this batch was committed" in message
    marks = high_watermarks(kafka_bootstrap, topic, 2)
    assert table_offsets(TARGET, tmp_path, "events") == expected_offsets(marks)


def test_a_run_that_loses_the_race_replans_and_finishes_by_default(
    tmp_path: Path,
    kafka_bootstrap: str,
    topic_factory: TopicFactory,
    produce: Produce,
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    topic = topic_factory(2)
    produce(topic, events(0, 300))
    path = _config(tmp_path, kafka_bootstrap, topic)
    load = definitions(path).resolve_assets_def(EVENTS)
    assert materialize([load], selection=[EVENTS]).success
    produce(topic, events(300, 200))
    _racing(monkeypatch)
    result = materialize([load], selection=[EVENTS])
    # The racing run loaded the 200 new messages; this one re-planned and found nothing left,
    # so it records an observation of the table, not a materialization.
    assert result.success and materializations(result) == {}
    [observed] = [
        e.event_specific_data.asset_observation  # type: ignore[union-attr]
        for e in result.all_events
        if e.event_type_value == "ASSET_OBSERVATION"
    ]
    assert observed.metadata["dagster/row_count"].value == 500
    marks = high_watermarks(kafka_bootstrap, topic, 2)
    assert table_offsets(TARGET, tmp_path, "events") == expected_offsets(marks)


def test_one_pool_per_duckdb_file_covers_loads_checks_and_replays(tmp_path: Path) -> None:
    path = write_pipelines(
        tmp_path,
        "127.0.0.1:9092",
        {
            "a": {"topic": "a", "target": TARGET, "table": "a", "max_lag_minutes": 5},
            "b": {"topic": "b", "target": TARGET, "table": "b"},
            "c": {"topic": "c", "target": "duckdb:///other/warehouse.duckdb", "table": "c"},
            "d": {"topic": "d", "target": "postgresql+psycopg://u:pw@db/dwh", "table": "d"},
            "e": {"topic": "e", "target": "postgresql+psycopg://u:pw@db/dwh", "table": "e"},
        },
    )
    defs = definitions(path)

    def pool(key: str) -> str | None:
        if key.endswith("_replay"):
            [node] = defs.resolve_job_def(key).graph.node_defs
            return node.pool  # type: ignore[attr-defined]
        return defs.resolve_assets_def(AssetKey(key)).op.pool

    shared = pool("a")
    assert shared is not None and shared.startswith("kafka_etl/duckdb/warehouse-")
    assert pool("b") == pool("a_replay") == pool("b_replay") == shared
    assert pool("c") not in (None, shared) and pool("c") == pool("c_replay")
    assert (pool("d"), pool("e")) == ("kafka_etl/pipeline/d", "kafka_etl/pipeline/e")
    # The checks are their own op, in the same pool as the loads of that file.
    checks_of_a = defs.get_asset_checks_def(AssetCheckKey(AssetKey("a"), "freshness"))  # unbound
    assert {"offset_continuity", "freshness"} <= {k.name for k in checks_of_a.check_keys}
    assert checks_of_a.op.pool == shared
