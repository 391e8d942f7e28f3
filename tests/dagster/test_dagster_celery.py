"""A sharded load through Dagster's Celery executor: redis-server, two Celery workers, real runs.

The run (``dagster job execute``) sends each shard op to the broker; two ``--pool solo``
workers (one task at a time each) run them against a persistent Dagster instance in a temp
DAGSTER_HOME. Exactly once is read from the PostgreSQL table: every (partition, offset) once.
"""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path

import pytest
import yaml
from dagster import AssetKey, DagsterInstance

from tests.dagster.celery_support import Workers, celery_workers, kill_group, redis_server
from tests.fixtures.databases import fresh_database
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

pytest.importorskip("dagster_celery")

REPO_ROOT = Path(__file__).resolve().parents[2]
DAGSTER = str(Path(sys.executable).parent / "dagster")
EVENTS = AssetKey("events")
JOB_TIMEOUT = 240

# The code location the run and the workers load: the project's definitions with the sharded
# load jobs on the Celery executor (what a deployment would write, see README).
DEFS = """\
import os

from dagster_celery import celery_executor

from dagster_project import KafkaEtlResource, build_definitions
from pipelines.config import load_project

_path = os.environ["KAFKA_ETL_CONFIG"]
defs = build_definitions(
    load_project(_path),
    KafkaEtlResource(pipelines_file=_path),
    shard_executor=celery_executor,
    replay_start_date="2026-01-01",
)
"""


@pytest.fixture(scope="module")
def broker(tmp_path_factory: pytest.TempPathFactory) -> Iterator[str]:
    with redis_server(tmp_path_factory.mktemp("redis")) as url:
        yield url


class Location:
    """One test's code location, instance and workers."""

    def __init__(self, tmp_path: Path, broker: str, config: Path) -> None:
        self.home = tmp_path / "dagster_home"
        self.home.mkdir()
        (self.home / "dagster.yaml").write_text("telemetry:\n  enabled: false\n")
        self.defs = tmp_path / "celery_defs.py"
        self.defs.write_text(DEFS)
        self.run_config = tmp_path / "run.yaml"
        execution = {"config": {"broker": f"{broker}/0", "backend": f"{broker}/1"}}
        self.run_config.write_text(yaml.safe_dump({"execution": execution}))
        self.env = {
            **os.environ,
            "KAFKA_ETL_CONFIG": str(config),
            "DAGSTER_HOME": str(self.home),
            "PYTHONPATH": str(REPO_ROOT),  # this checkout's code, whichever the venv installed
        }
        self.env.pop("DAGSTER_CELERY_BROKER_HOST", None)

    def start_run(self) -> subprocess.Popen[bytes]:
        command = [DAGSTER, "job", "execute", "-f", str(self.defs), "-a", "defs"]
        command += ["-j", "events_load", "-c", str(self.run_config)]
        log = (self.home / "run.log").open("ab")
        try:
            return subprocess.Popen(
                command,
                cwd=self.home,
                env=self.env,
                stdout=log,
                stderr=subprocess.STDOUT,
                start_new_session=True,
            )
        finally:
            log.close()

    def run(self) -> int:
        proc = self.start_run()
        try:
            return proc.wait(timeout=JOB_TIMEOUT)
        finally:
            kill_group(proc)

    def log(self) -> str:
        return (self.home / "run.log").read_text(errors="replace")[-4000:]


def _fill(produce: Produce, topic: str, partitions: int, per_partition: int) -> None:
    for p in range(partitions):
        produce(topic, events(p * per_partition, per_partition), partition=p)


def _setup(
    tmp_path: Path, bootstrap: str, topic: str, url: str, broker: str, **extra: object
) -> Location:
    body = {"topic": topic, "target": url, "table": "events", "shards": 4, **extra}
    config = write_pipelines(tmp_path, bootstrap, {"events": body})
    return Location(tmp_path, broker, config)


def _shard_workers(home: Path) -> dict[str, str]:
    """Step key -> Celery worker hostname, for the shard steps of the latest run so far."""
    with DagsterInstance.from_config(str(home)) as instance:
        records = instance.get_run_records(limit=1)
        if not records:
            return {}
        found = {}
        for entry in instance.all_logs(records[0].dagster_run.run_id):
            event = entry.dagster_event
            if event is None or not entry.step_key or "_shard_" not in entry.step_key:
                continue
            if event.event_type_value != "ENGINE_EVENT":
                continue
            data = event.engine_event_data
            worker = data.metadata.get("Celery worker") if data is not None else None
            if worker is not None:
                found[entry.step_key] = str(getattr(worker, "value", worker))
        return found


@pytest.mark.timeout(300)
def test_four_shards_through_the_celery_executor_land_every_offset_exactly_once(
    tmp_path: Path,
    kafka_bootstrap: str,
    topic_factory: TopicFactory,
    produce: Produce,
    postgresql_url: str,
    broker: str,
) -> None:
    topic = topic_factory(8)
    _fill(produce, topic, 8, 2_500)
    with fresh_database(postgresql_url) as url:
        where = _setup(tmp_path, kafka_bootstrap, topic, url, broker, batch_max_rows=1_000)
        with celery_workers(broker, tmp_path / "workers", where.env, ("w1", "w2")):
            assert where.run() == 0, where.log()
            workers = _shard_workers(where.home)
        assert len(workers) == 4, workers  # every shard op ran in a Celery worker
        assert set(workers.values()) <= {f"w{i}@{os.uname().nodename}" for i in (1, 2)}
        marks = high_watermarks(kafka_bootstrap, topic, 8)
        assert table_offsets(url, tmp_path, "events") == expected_offsets(marks)
        assert assert_rows_match_checkpoints(url, tmp_path, "events", "events", topic) == marks
        with DagsterInstance.from_config(str(where.home)) as instance:
            event = instance.get_latest_materialization_event(EVENTS)
            assert event is not None and event.asset_materialization is not None
            meta = event.asset_materialization.metadata
            assert meta["rows_loaded"].value == 20_000  # type: ignore[attr-defined]
            assert meta["dagster/row_count"].value == 20_000  # type: ignore[attr-defined]


def _kill_a_worker_once_its_shard_committed(
    where: Location, workers: Workers, url: str, tmp_path: Path, topic: str, total: int
) -> str:
    """SIGKILL the worker of a shard step as soon as that shard has committed a batch (and
    has more to load); returns the worker's name."""
    deadline = time.monotonic() + JOB_TIMEOUT
    while time.monotonic() < deadline:
        running = _shard_workers(where.home)
        done = checkpoints(url, tmp_path, "events", topic)
        for step, host in running.items():
            k = int(step.rsplit("_shard_", 1)[1].split("_of_")[0])
            owned = [p for p in done if p % 4 == k]
            if owned and sum(done[p] for p in owned) < total:
                name = host.split("@", 1)[0]
                workers.kill(name)
                return name
        time.sleep(0.2)
    raise AssertionError(f"no shard committed a batch in {JOB_TIMEOUT}s: {where.log()}")


@pytest.mark.timeout(400)
def test_a_worker_killed_mid_load_then_a_rerun_lands_every_offset_exactly_once(
    tmp_path: Path,
    kafka_bootstrap: str,
    topic_factory: TopicFactory,
    produce: Produce,
    postgresql_url: str,
    broker: str,
) -> None:
    per_partition = 10_000
    topic = topic_factory(4)  # one partition per shard
    _fill(produce, topic, 4, per_partition)
    with fresh_database(postgresql_url) as url:
        where = _setup(tmp_path, kafka_bootstrap, topic, url, broker, batch_max_rows=500)
        with celery_workers(broker, tmp_path / "workers", where.env, ("w1", "w2")) as workers:
            run = where.start_run()
            try:
                killed = _kill_a_worker_once_its_shard_committed(
                    where, workers, url, tmp_path, topic, per_partition
                )
                # The run waits on a task no worker will finish: interrupt it (the executor
                # revokes what it had sent), as an operator would cancel it.
                kill_group(run, signal.SIGINT)
            finally:
                kill_group(run)
            assert run.returncode != 0
            partial = checkpoints(url, tmp_path, "events", topic)
            assert sum(partial.values()) < 4 * per_partition, partial

            workers.start(f"{killed}b")  # two workers again
            assert where.run() == 0, where.log()
        marks = high_watermarks(kafka_bootstrap, topic, 4)
        assert table_offsets(url, tmp_path, "events") == expected_offsets(marks)
        assert assert_rows_match_checkpoints(url, tmp_path, "events", "events", topic) == marks
