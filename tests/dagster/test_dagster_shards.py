"""A pipeline with ``shards: N`` as a Dagster asset: N shard ops, one merge, one materialization."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest
from dagster import (
    AssetKey,
    DagsterInstance,
    ExecuteInProcessResult,
    materialize,
    multiprocess_executor,
)

from dagster_project.shard_assets import TAG_SHARD
from pipelines.shards import Shard
from tests.dagster.support import definitions, materializations
from tests.fixtures.databases import fresh_database, sinks
from tests.fixtures.kafka import Produce, TopicFactory
from tests.helpers import (
    assert_rows_match_checkpoints,
    checkpoints,
    events,
    expected_offsets,
    high_watermarks,
    table_offsets,
    write_pipelines,
)

EVENTS = AssetKey("events")
REPO_ROOT = Path(__file__).resolve().parents[2]
DAGSTER = str(Path(sys.executable).parent / "dagster")


def _fill(produce: Produce, topic: str, partitions: int, per_partition: int) -> None:
    for p in range(partitions):
        produce(topic, events(p * per_partition, per_partition), partition=p)


def _config(tmp_path: Path, bootstrap: str, topic: str, target: str, **extra: object) -> Path:
    body = {"topic": topic, "target": target, "table": "events", "shards": 4, **extra}
    return write_pipelines(tmp_path, bootstrap, {"events": body})


def _failure(result: ExecuteInProcessResult) -> str:
    [event] = [e for e in result.all_events if e.is_step_failure]
    user = event.step_failure_data.user_failure_data
    assert user is not None and user.description, event
    return user.description


def test_a_sharded_asset_is_n_shard_ops_and_a_merge_in_pools_that_let_them_overlap(
    tmp_path: Path, kafka_bootstrap: str
) -> None:
    body = {"topic": "t", "table": "events", "shards": 4}
    path = write_pipelines(
        tmp_path,
        kafka_bootstrap,
        {
            "events": {**body, "target": "postgresql+psycopg://u@127.0.0.1/db"},
            "local": {**body, "topic": "t2", "table": "local", "target": "duckdb:///w.duckdb"},
            "plain": {"topic": "t3", "table": "plain", "target": "duckdb:///w.duckdb"},
        },
    )
    defs = definitions(path)
    load = defs.resolve_assets_def(EVENTS)
    nodes = {n.name: n.definition for n in load.node_def.node_dict.values()}  # type: ignore[attr-defined]
    assert set(nodes) == {*(f"events_shard_{k}_of_4" for k in range(4)), "events_merge"}
    pools = {nodes[f"events_shard_{k}_of_4"].pool for k in range(4)}
    # One pool per shard: two runs of a shard never overlap, the shards of one run do.
    assert pools == {f"kafka_etl/pipeline/events/shard-{k}-of-4" for k in range(4)}
    assert {nodes[f"events_shard_{k}_of_4"].tags[TAG_SHARD] for k in range(4)} == {
        f"{k}/4" for k in range(4)
    }
    assert load.specs_by_key[EVENTS].deps[0].asset_key == AssetKey(["kafka", "t"])
    # DuckDB: one writer per file, so the shards share the file's pool (with granularity: run
    # they start together and take turns on the file lock).
    local = defs.resolve_assets_def(AssetKey("local"))
    local_pools = {n.definition.pool for n in local.node_def.node_dict.values()}  # type: ignore[attr-defined]
    assert len(local_pools - {None}) == 1
    plain = defs.resolve_assets_def(AssetKey("plain"))
    assert plain.op.pool == next(iter(local_pools - {None}))  # unsharded: one op, as before
    assert defs.resolve_job_def("events_load").executor_def is multiprocess_executor
    assert defs.resolve_job_def("plain_load").executor_def.name == "in_process"


@sinks("duckdb", "sqlite", "postgresql", "mariadb")
def test_one_materialization_with_the_merged_metadata_and_every_offset_once(
    tmp_path: Path,
    kafka_bootstrap: str,
    topic_factory: TopicFactory,
    produce: Produce,
    sink_url: str,
) -> None:
    topic = topic_factory(6)  # shards 0 and 1 own two partitions each, 2 and 3 one each
    _fill(produce, topic, 6, 500)
    path = _config(tmp_path, kafka_bootstrap, topic, sink_url, batch_max_rows=200)
    load = definitions(path).resolve_assets_def(EVENTS)

    result = materialize([load], selection=[EVENTS])
    assert result.success
    [meta] = materializations(result).values()
    assert meta["rows_loaded"] == 3_000 and meta["dagster/row_count"] == 3_000
    shards = [result.output_for_node(f"kafka_etl__events.events_shard_{k}_of_4") for k in range(4)]
    assert [r.shard for r in shards] == [Shard(k, 4) for k in range(4)]
    assert [sorted(r.ranges) for r in shards] == [[0, 4], [1, 5], [2], [3]]
    assert meta["batches"] == sum(r.batches for r in shards) >= 6
    assert meta["offset_ranges"] == ", ".join(f"{p}:[0,500)" for p in range(6))
    parts = [
        (r.data["partition"], r.data["offsets"], r.data["lag_after"])
        for r in meta["partitions"].records
    ]
    assert parts == [(p, 500, 0) for p in range(6)]
    assert meta["lag_after"] == 0
    marks = high_watermarks(kafka_bootstrap, topic, 6)
    assert table_offsets(sink_url, tmp_path, "events") == expected_offsets(marks)
    assert assert_rows_match_checkpoints(sink_url, tmp_path, "events", "events", topic) == marks

    produce(topic, events(10_000, 50), partition=5)  # only shard 1 (partitions 1, 5) has news
    again = materialize([load], selection=[EVENTS])
    [meta] = materializations(again).values()
    assert (meta["rows_loaded"], meta["offset_ranges"]) == (50, "5:[500,550)")
    assert meta["dagster/row_count"] == 3_050

    nothing = materialize([load], selection=[EVENTS])
    assert nothing.success and not materializations(nothing)  # an observation, not a load
    [observed] = nothing.get_asset_observation_events()
    assert observed.asset_observation_data.asset_observation.metadata["lag"].value == 0
    marks = high_watermarks(kafka_bootstrap, topic, 6)
    assert table_offsets(sink_url, tmp_path, "events") == expected_offsets(marks)


def test_a_failed_shard_fails_the_run_in_one_line_and_a_rerun_resumes_exactly_once(
    tmp_path: Path, kafka_bootstrap: str, topic_factory: TopicFactory, produce: Produce
) -> None:
    target = "duckdb:///warehouse.duckdb"
    topic = topic_factory(4)
    _fill(produce, topic, 4, 300)
    produce(topic, [b"{not json"], partition=2)  # partition 2 is shard 2/4's
    produce(topic, events(5_000, 100), partition=2)
    path = _config(tmp_path, kafka_bootstrap, topic, target, batch_max_rows=100)
    load = definitions(path).resolve_assets_def(EVENTS)

    failed = materialize([load], selection=[EVENTS], raise_on_error=False)
    assert not failed.success
    message = _failure(failed)
    assert len(message.splitlines()) == 1, message
    assert message.startswith(f"pipeline 'events' shard 2/4: {topic}/2@300"), message
    assert "on_error: dlq" in message  # says what to do
    # The other shards committed everything; shard 2 up to the bad message.
    assert checkpoints(target, tmp_path, "events", topic) == {0: 300, 1: 300, 2: 300, 3: 300}

    fixed = _config(tmp_path, kafka_bootstrap, topic, target, batch_max_rows=100, on_error="dlq")
    rerun = materialize([definitions(fixed).resolve_assets_def(EVENTS)], selection=[EVENTS])
    [meta] = materializations(rerun).values()
    assert (meta["offset_ranges"], meta["dead_lettered"]) == ("2:[300,401)", 1)
    marks = high_watermarks(kafka_bootstrap, topic, 4)
    landed = table_offsets(target, tmp_path, "events")
    assert landed == [o for o in expected_offsets(marks) if o != (2, 300)]


@pytest.mark.timeout(300)
def test_the_multiprocess_executor_runs_the_shards_in_processes_of_their_own(
    tmp_path: Path,
    kafka_bootstrap: str,
    topic_factory: TopicFactory,
    produce: Produce,
    postgresql_url: str,
) -> None:
    """`dagster job execute` of the load job: 4 shard processes into PostgreSQL, exactly once."""
    topic = topic_factory(8)
    _fill(produce, topic, 8, 2_000)
    home = tmp_path / "dagster_home"
    home.mkdir()
    with fresh_database(postgresql_url) as url:
        path = _config(tmp_path, kafka_bootstrap, topic, url, batch_max_rows=1_000)
        env = {
            **os.environ,
            "KAFKA_ETL_CONFIG": str(path),
            "DAGSTER_HOME": str(home),
            "PYTHONPATH": str(REPO_ROOT),  # this checkout's code, whichever the venv installed
        }
        done = subprocess.run(
            [DAGSTER, "job", "execute", "-m", "dagster_project", "-j", "events_load"],
            cwd=tmp_path,
            env=env,
            capture_output=True,
            text=True,
            timeout=240,
        )
        assert done.returncode == 0, done.stderr[-3000:]
        marks = high_watermarks(kafka_bootstrap, topic, 8)
        assert table_offsets(url, tmp_path, "events") == expected_offsets(marks)
        with DagsterInstance.from_config(str(home)) as instance:
            [record] = instance.get_run_records()
            steps = instance.all_logs(record.dagster_run.run_id)
            pids = {
                e.dagster_event.pid
                for e in steps
                if e.dagster_event is not None
                and e.dagster_event.event_type_value == "STEP_START"
                and "_shard_" in (e.step_key or "")
            }
            assert len(pids) == 4  # one process per shard op
            event = instance.get_latest_materialization_event(EVENTS)
            assert event is not None
            meta = event.asset_materialization.metadata  # type: ignore[union-attr]
            assert meta["rows_loaded"].value == 16_000
