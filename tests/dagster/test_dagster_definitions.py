"""What the definitions say about each pipeline, config mistakes, and the dg component."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from datetime import timedelta
from pathlib import Path

import pytest
from dagster import AssetKey, FreshnessPolicy

from dagster_project.component import KafkaEtlComponent
from dagster_project.factory import build_definitions
from kafka_etl.errors import ConfigError
from pipelines.config import load_project
from tests.dagster.support import EVENTS, TARGET, definitions, resource
from tests.helpers import write_pipelines

REPO = Path(__file__).resolve().parents[2]
BIN = Path(sys.executable).parent


def test_each_pipeline_is_an_asset_described_from_its_yaml(tmp_path: Path) -> None:
    body = {
        "topic": "user-events",
        "target": TARGET,
        "table": "events",
        "description": "Logins from the web app.",
        "owners": ["team:data-platform", "ana@example.com"],
        "max_lag_minutes": 45,
    }
    pg = {"topic": "orders", "target": "postgresql+psycopg://etl:hunter2@db/dwh", "table": "o"}
    path = write_pipelines(tmp_path, "127.0.0.1:9092", {"events": body, "orders": pg})
    specs = {s.key: s for s in definitions(path).resolve_all_asset_specs()}

    spec = specs[EVENTS]
    assert spec.group_name == "warehouse"
    assert spec.kinds == {"kafka", "duckdb"}
    assert list(spec.owners) == ["team:data-platform", "ana@example.com"]
    assert spec.description is not None
    assert spec.description.startswith("Kafka topic `user-events` → table `events`")
    assert "append mode" in spec.description and "Logins from the web app." in spec.description
    assert spec.metadata["dagster/table_name"] == "warehouse.main.events"
    assert spec.freshness_policy == FreshnessPolicy.time_window(fail_window=timedelta(minutes=45))
    assert [d.asset_key for d in spec.deps] == [AssetKey(["kafka", "user-events"])]

    orders = specs[AssetKey("o")]
    assert (orders.group_name, orders.kinds) == ("dwh", {"kafka", "postgres"})
    assert orders.metadata["kafka_etl/target"] == "postgresql+psycopg://etl:***@db/dwh"
    assert "hunter2" not in json.dumps({k: str(v) for k, v in orders.metadata.items()})
    assert orders.freshness_policy is None
    # Replays are a job (days Kafka retains), not an asset that would count days as missing.
    assert AssetKey("events_replay") not in specs


@pytest.mark.parametrize(
    ("field", "value", "message"),
    [
        ("owners", ["bob"], "field 'owners': 'bob' is neither an email address nor 'team:<name>'"),
        ("schedule", "0 0 * * * *", "field 'schedule'"),
        ("schedule", "0 0 30 2 *", "field 'schedule': '0 0 30 2 *' is not a cron schedule"),
        ("schedule_timezone", "Mars/Olympus", "field 'schedule_timezone': unknown time zone"),
    ],
)
def test_definition_mistakes_name_the_file_pipeline_and_field(
    tmp_path: Path, field: str, value: object, message: str
) -> None:
    body = {"topic": "t", "target": TARGET, "table": "events", field: value}
    path = write_pipelines(tmp_path, "127.0.0.1:9092", {"events": body})
    with pytest.raises(ConfigError) as error:
        definitions(path)
    assert str(error.value).startswith(f"{path}: pipeline 'events', ")
    assert message in str(error.value)


@pytest.mark.parametrize("cron", ["61 * * * *", "0 0 * * * *", "@fortnightly", "0 0 31 2 *"])
def test_a_bad_checks_schedule_is_refused_by_the_component_model_and_the_factory(
    tmp_path: Path, cron: str
) -> None:
    with pytest.raises(ValueError, match="is not a cron schedule"):
        KafkaEtlComponent(checks_schedule=cron)
    path = write_pipelines(
        tmp_path, "127.0.0.1:9092", {"events": {"topic": "t", "target": TARGET, "table": "e"}}
    )
    with pytest.raises(ConfigError, match=r"^checks_schedule: .* is not a cron schedule"):
        build_definitions(load_project(path), resource(path), checks_schedule=cron)


def test_dg_lists_and_checks_the_component_defs(tmp_path: Path) -> None:
    body = {"topic": "t", "target": TARGET, "table": "events", "schedule": "0 * * * *"}
    path = write_pipelines(tmp_path, "127.0.0.1:9092", {"events": body})
    env = {
        **os.environ,
        "KAFKA_ETL_CONFIG": str(path),
        "VIRTUAL_ENV": str(BIN.parent),
        "PATH": f"{BIN}{os.pathsep}{os.environ.get('PATH', '')}",
        "NO_COLOR": "1",
    }
    check = subprocess.run(
        [str(BIN / "dg"), "check", "defs"],
        cwd=REPO,
        env=env,
        capture_output=True,
        text=True,
        timeout=180,
        check=False,
    )
    assert check.returncode == 0, check.stdout + check.stderr
    listed = subprocess.run(
        [str(BIN / "dg"), "list", "defs", "--json"],
        cwd=REPO,
        env=env,
        capture_output=True,
        text=True,
        timeout=180,
        check=False,
    )
    assert listed.returncode == 0, listed.stderr
    document = json.loads(listed.stdout)
    keys = {a["asset_key"] for a in document["assets"]}
    assert {"events", "kafka/t"} <= keys and "events_replay" not in keys
    assert {j["name"] for j in document["jobs"]} >= {
        "events_load",
        "events_checks",
        "events_replay",
    }
    assert sorted(s["name"] for s in document["schedules"]) == [
        "events_checks_schedule",
        "events_schedule",
    ]
    assert sorted(s["name"] for s in document["sensors"]) == [
        "events_lag_sensor",
        "events_observe_sensor",
    ]
