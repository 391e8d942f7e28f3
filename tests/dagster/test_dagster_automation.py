"""The lag sensor (with build_sensor_context) and the schedules built from the YAML."""

from __future__ import annotations

import json
import time
from datetime import UTC, datetime
from pathlib import Path

from dagster import (
    AssetKey,
    DagsterInstance,
    RunRequest,
    SensorResult,
    SkipReason,
    build_schedule_context,
    build_sensor_context,
    materialize,
)

from tests.dagster.support import EVENTS, TARGET, definitions, resource
from tests.fixtures.kafka import Produce, TopicFactory
from tests.helpers import events, high_watermarks, write_pipelines


def _evaluate(path: Path, name: str = "events", **overrides: object) -> SensorResult | SkipReason:
    defs = definitions(path)
    sensor = defs.resolve_sensor_def(f"{name}_lag_sensor")
    context = build_sensor_context(
        resources={"kafka_etl": resource(path, **overrides)}, instance=DagsterInstance.ephemeral()
    )
    result = sensor(context)
    assert isinstance(result, SensorResult | SkipReason)
    return result


def _requests(result: SensorResult | SkipReason) -> list[RunRequest]:
    return list(result.run_requests or []) if isinstance(result, SensorResult) else []


def test_the_lag_sensor_requests_one_run_per_new_backlog_and_none_without_lag(
    tmp_path: Path, kafka_bootstrap: str, topic_factory: TopicFactory, produce: Produce
) -> None:
    topic = topic_factory(2)
    path = write_pipelines(
        tmp_path, kafka_bootstrap, {"events": {"topic": topic, "target": TARGET, "table": "events"}}
    )
    empty = _evaluate(path)
    assert _requests(empty) == []
    assert isinstance(empty, SensorResult) and empty.skip_reason is not None
    assert "lag 0 is below the threshold 1" in str(empty.skip_reason.skip_message)

    produce(topic, events(0, 40))
    marks = high_watermarks(kafka_bootstrap, topic, 2)
    first = _evaluate(path)
    [request] = _requests(first)
    assert request.run_key == f"events@0:{marks[0]},1:{marks[1]}"
    assert isinstance(first, SensorResult) and first.cursor is not None
    assert json.loads(first.cursor) == {
        "high_watermarks": {"0": marks[0], "1": marks[1]},
        "lag": 40,
    }
    # The same backlog gets the same run key, which Dagster runs only once.
    assert [r.run_key for r in _requests(_evaluate(path))] == [request.run_key]

    defs = definitions(path)
    assert materialize([defs.resolve_assets_def(EVENTS)], selection=[EVENTS]).success
    assert _requests(_evaluate(path)) == []  # loaded: the consumer group is at the end

    produce(topic, events(40, 5))
    [again] = _requests(_evaluate(path))
    assert again.run_key != request.run_key


def test_the_lag_sensor_waits_for_its_threshold(
    tmp_path: Path, kafka_bootstrap: str, topic_factory: TopicFactory, produce: Produce
) -> None:
    topic = topic_factory(1)
    body = {"topic": topic, "target": TARGET, "table": "events", "lag_threshold": 50}
    path = write_pipelines(tmp_path, kafka_bootstrap, {"events": body})
    produce(topic, events(0, 49))
    below = _evaluate(path)
    assert _requests(below) == []
    produce(topic, events(49, 1))
    assert len(_requests(_evaluate(path))) == 1


def test_the_lag_sensor_skips_quickly_when_kafka_does_not_answer(tmp_path: Path) -> None:
    body = {"topic": "anything", "target": TARGET, "table": "events"}
    path = write_pipelines(tmp_path, "127.0.0.1:1", {"events": body})
    started = time.monotonic()
    result = _evaluate(path, lookup_timeout_seconds=2.0)
    assert time.monotonic() - started < 15  # bounded: the daemon is never blocked for long
    assert isinstance(result, SkipReason)
    assert "Kafka did not answer" in str(result.skip_message)


def test_a_schedule_from_the_yaml_targets_the_pipelines_load_job(tmp_path: Path) -> None:
    path = write_pipelines(
        tmp_path,
        "127.0.0.1:9092",
        {
            "events": {
                "topic": "events",
                "target": TARGET,
                "table": "events",
                "schedule": "15 3 * * *",
                "schedule_timezone": "Europe/Berlin",
            },
            "clicks": {"topic": "clicks", "target": "duckdb:///other.duckdb", "table": "clicks"},
        },
    )
    defs = definitions(path)
    schedule = defs.resolve_schedule_def("events_schedule")
    assert (schedule.job_name, schedule.cron_schedule, schedule.execution_timezone) == (
        "events_load",
        "15 3 * * *",
        "Europe/Berlin",
    )
    tick = datetime(2026, 11, 21, 2, 15, tzinfo=UTC)
    [request] = (
        schedule.evaluate_tick(build_schedule_context(scheduled_execution_time=tick)).run_requests
        or []
    )
    assert isinstance(request, RunRequest)
    job = defs.resolve_job_def("events_load")
    assert job.asset_layer.executable_asset_keys == {EVENTS}
    # The checks have their own job and schedule: a failed load does not decide them.
    checks_job = defs.resolve_job_def("events_checks")
    assert {k.name for k in checks_job.asset_layer.asset_graph.asset_check_keys} >= {
        "offset_continuity"
    }
    assert not checks_job.asset_layer.executable_asset_keys
    checks_schedule = defs.resolve_schedule_def("events_checks_schedule")
    assert (checks_schedule.job_name, checks_schedule.cron_schedule) == (
        "events_checks",
        "*/5 * * * *",
    )
    # No schedule: field absent. Every pipeline still has a sensor.
    assert not any(s.name == "clicks_schedule" for s in defs.schedules or [])
    assert defs.resolve_sensor_def("clicks_lag_sensor").job_name == "clicks_load"
    assert (
        AssetKey("clicks") in defs.resolve_job_def("clicks_load").asset_layer.executable_asset_keys
    )


def test_a_load_failing_on_a_message_says_how_to_go_on_and_tags_its_run(
    tmp_path: Path, kafka_bootstrap: str, topic_factory: TopicFactory, produce: Produce
) -> None:
    topic = topic_factory(1)
    produce(topic, events(0, 3))
    produce(topic, [b"not json"])
    path = write_pipelines(
        tmp_path, kafka_bootstrap, {"events": {"topic": topic, "target": TARGET, "table": "events"}}
    )
    instance = DagsterInstance.ephemeral()
    defs = definitions(path)
    result = materialize([defs.resolve_assets_def(EVENTS)], instance=instance, raise_on_error=False)
    assert not result.success
    [failure] = [e for e in result.all_events if e.is_step_failure]
    user = failure.step_failure_data.user_failure_data
    description = user.description if user else ""
    assert f"{topic}/0@3:" in (description or "")
    assert "set on_error: dlq for pipeline 'events'" in (description or "")
    assert "reset events --partition 0 --to-offset 4" in (description or "")
    run = instance.get_run_by_id(result.run_id)
    assert run is not None and run.tags["kafka_etl/failed_at"] == f"{topic}/0@3"
