"""Everything for one pipelines file: assets, checks, replays, jobs, schedules and sensors."""

from __future__ import annotations

from dagster import (
    AssetSelection,
    DefaultScheduleStatus,
    DefaultSensorStatus,
    Definitions,
    define_asset_job,
    in_process_executor,
)

from dagster_project.assets import (
    by_pool,
    dedupe,
    kafka_etl_replay_asset,
    load_assets,
    pipeline_data,
)
from dagster_project.automation import lag_sensor, load_schedule
from dagster_project.observe import observation_sensor
from dagster_project.resource import KafkaEtlResource
from dagster_project.translator import KafkaEtlTranslator
from kafka_etl.errors import ConfigError
from pipelines.config import Project

RESOURCE_KEY = "kafka_etl"


def build_definitions(
    project: Project,
    resource: KafkaEtlResource,
    *,
    translator: KafkaEtlTranslator | None = None,
    replay_start_date: str = "2026-01-01",
    sensor_interval_seconds: int = 30,
    sensors_running: bool = False,
    schedules_running: bool = True,
    observe_interval_seconds: int = 15,
    observations_running: bool = True,
) -> Definitions:
    """Per pipeline: a table asset with checks, a replay asset, ``<name>_load`` and
    ``<name>_replay`` jobs, a schedule when ``schedule:`` is set, a lag sensor, and an
    observation sensor (``<name>_observe_sensor``, every ``observe_interval_seconds``).

    Pipelines writing to one DuckDB file share one op (and pool), so the file is never opened
    by two runs at once; pipelines on SQL databases get an op (and a pool) each. The jobs run
    their single op in the run's own process (no second process to start per run).
    """
    translator = translator or KafkaEtlTranslator()
    datas = pipeline_data(project, None)
    _unique_names(project, [d.job_prefix for d in datas])
    loads = [load_assets(project, translator, group) for group in by_pool(datas).values()]
    replays = []
    jobs = []
    schedules = []
    sensors = []
    schedule_status = (
        DefaultScheduleStatus.RUNNING if schedules_running else DefaultScheduleStatus.STOPPED
    )
    sensor_status = DefaultSensorStatus.RUNNING if sensors_running else DefaultSensorStatus.STOPPED
    observe_status = (
        DefaultSensorStatus.RUNNING if observations_running else DefaultSensorStatus.STOPPED
    )
    for data in datas:
        table = translator.get_asset_spec(data)
        replay = kafka_etl_replay_asset(data, translator=translator, start_date=replay_start_date)
        replays.append(replay)
        tags = {"kafka_etl/pipeline": data.job_prefix}
        load_job = define_asset_job(
            f"{data.job_prefix}_load",
            selection=AssetSelection.assets(table.key),
            description=f"Load {data.pipeline.topic} into {data.pipeline.table} (with checks).",
            tags=tags,
            executor_def=in_process_executor,
        )
        replay_job = define_asset_job(
            f"{data.job_prefix}_replay",
            selection=AssetSelection.assets(*replay.keys),
            description=(
                f"Replay days (or a from/to range) of {data.pipeline.topic} into"
                f" {data.pipeline.table}; the checkpoint never moves."
            ),
            tags=tags,
            executor_def=in_process_executor,
        )
        jobs += [load_job, replay_job]
        schedule = load_schedule(data, load_job, schedule_status)
        if schedule is not None:
            schedules.append(schedule)
        sensors.append(
            lag_sensor(
                data,
                load_job,
                minimum_interval_seconds=sensor_interval_seconds,
                status=sensor_status,
            )
        )
        topic = translator.get_topic_spec(data)
        sensors.append(
            observation_sensor(
                data,
                table.key,
                topic.key if topic is not None else None,
                minimum_interval_seconds=observe_interval_seconds,
                status=observe_status,
            )
        )
    topics = dedupe(translator.get_topic_spec(d) for d in datas)
    return Definitions(
        assets=[*topics, *loads, *replays],
        jobs=jobs,
        schedules=schedules,
        sensors=sensors,
        resources={RESOURCE_KEY: resource},
    )


def _unique_names(project: Project, names: list[str]) -> None:
    seen: set[str] = set()
    for name in names:
        if name in seen:
            msg = (
                f"{project.source}: two pipelines are both named {name!r} once made Dagster"
                " names (letters, digits, underscores); rename one"
            )
            raise ConfigError(msg)
        seen.add(name)
