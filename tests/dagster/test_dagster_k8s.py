"""The README's ``k8s_job_executor`` run config for a sharded load job, validated by Dagster.

No cluster here: what can run is the job built with ``dagster_k8s.k8s_job_executor`` and its
run config validated against the executor's schema, with per-step settings keyed by the step
keys the job really has (one Kubernetes Job per shard op).
"""

from __future__ import annotations

from pathlib import Path

import pytest
import yaml
from dagster import DagsterInvalidConfigError, validate_run_config
from dagster._core.execution.api import create_execution_plan

from dagster_project import KafkaEtlResource, build_definitions
from pipelines.config import load_project
from tests.helpers import write_pipelines

k8s = pytest.importorskip("dagster_k8s")

README = Path(__file__).resolve().parents[2] / "README.md"
MARK = "<!-- k8s-run-config -->"


def _readme_run_config() -> dict[str, object]:
    """The YAML block that follows the marker in README.md."""
    text = README.read_text(encoding="utf-8")
    after = text.split(MARK, 1)[1]
    block = after.split("```yaml\n", 1)[1].split("```", 1)[0]
    return yaml.safe_load(block)  # type: ignore[no-any-return]


def test_the_readme_k8s_run_config_validates_for_a_sharded_load_job(tmp_path: Path) -> None:
    body = {"topic": "events", "target": "postgresql+psycopg://etl@db/warehouse", "shards": 4}
    path = write_pipelines(tmp_path, "kafka:9092", {"events": {**body, "table": "events"}})
    defs = build_definitions(
        load_project(path),
        KafkaEtlResource(pipelines_file=str(path)),
        shard_executor=k8s.k8s_job_executor,
        replay_start_date="2026-01-01",
    )
    job = defs.resolve_job_def("events_load")
    assert job.executor_def is k8s.k8s_job_executor
    run_config = _readme_run_config()
    validate_run_config(job, run_config)  # raises on anything the schema refuses

    plan = create_execution_plan(job, run_config)
    steps = set(plan.step_keys_to_execute)
    shard_steps = {f"kafka_etl__events.events_shard_{k}_of_4" for k in range(4)}
    assert steps == {*shard_steps, "kafka_etl__events.events_merge"}
    per_step = run_config["execution"]["config"]["per_step_k8s_config"]  # type: ignore[index]
    assert set(per_step) <= steps, set(per_step) - steps  # keys of real steps only

    wrong = {"execution": {"config": {"max_concurrent": "four"}}}
    with pytest.raises(DagsterInvalidConfigError, match="max_concurrent"):
        validate_run_config(job, wrong)
