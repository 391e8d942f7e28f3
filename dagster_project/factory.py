"""Everything for one pipelines file: assets, checks, replays, jobs, schedules and sensors."""

from __future__ import annotations

from typing import Any

from dagster import (
    AssetSelection,
    DefaultScheduleStatus,
    DefaultSensorStatus,
    Definitions,
    ExecutorDefinition,
    define_asset_job,
    in_process_executor,
    multiprocess_executor,
)

from dagster_project.assets import (
    build_kafka_etl_asset_specs,
    by_pool,
    dedupe,
    load_assets,
    pipeline_data,
)
from dagster_project.automation import checks_schedule as checks_schedule_
from dagster_project.automation import lag_sensor, load_schedule
from dagster_project.check_defs import kafka_etl_checks
from dagster_project.observe import observation_sensor
from dagster_project.replays import RETAINED, kafka_etl_replay_job
from dagster_project.resource import KafkaEtlResource
from dagster_project.shard_assets import is_sharded, sharded_load_asset
from dagster_project.translator import KafkaEtlTranslator
from kafka_etl.errors import ConfigError
from pipelines.checks import cron
from pipelines.config import Project

RESOURCE_KEY = "kafka_etl"
DEFAULT_CHECKS_SCHEDULE = "*/5 * * * *"
DEFAULT_POISON_AFTER = 2


def build_definitions(
    project: Project,
    resource: KafkaEtlResource,
    *,
    translator: KafkaEtlTranslator | None = None,
    replay_start_date: str = RETAINED,
    sensor_interval_seconds: int = 30,
    sensors_running: bool = False,
    schedules_running: bool = True,
    checks_schedule: str | None = DEFAULT_CHECKS_SCHEDULE,
    poison_after: int = DEFAULT_POISON_AFTER,
    observe_interval_seconds: int = 15,
    observations_running: bool = True,
    shard_executor: ExecutorDefinition | None = None,
) -> Definitions:
    """Per pipeline: a table asset, its checks, ``<name>_load``, ``<name>_checks`` and
    ``<name>_replay`` jobs, a schedule when ``schedule:`` is set, a checks schedule
    (``checks_schedule`` cron, None for none), a lag sensor (which stops asking for runs after
    ``poison_after`` failures at the same offset) and an observation sensor
    (``<name>_observe_sensor``, every ``observe_interval_seconds``).

    Pipelines writing to one DuckDB file share one op (and pool), so the file is never opened
    by two runs at once; pipelines on SQL databases get an op (and a pool) each. The jobs run
    their single op in the run's own process (no second process to start per run).

    A pipeline with ``shards: N`` (N > 1) is a graph of N shard ops and a merge op
    (``dagster_project.shard_assets``); its load job runs on ``shard_executor``
    (``multiprocess_executor`` by default; e.g. ``dagster_celery.celery_executor`` or
    ``dagster_k8s.k8s_job_executor`` to spread the shards over machines).

    A multi-topic pipeline is one unit per table (``dagster_project.members``): a templated
    one a unit per member (``pipeline::topic``), a shared table one unit for all its topics.
    """
    if checks_schedule is not None:
        try:
            cron(checks_schedule)
        except ValueError as exc:
            msg = f"checks_schedule: {exc}"
            raise ConfigError(msg) from None
    translator = translator or KafkaEtlTranslator()
    datas = pipeline_data(project, None)
    groups = by_pool(datas).values()
    loads = [
        load_assets(project, translator, single)
        for group in groups
        if (single := [d for d in group if not is_sharded(d)])
    ]
    loads += [
        sharded_load_asset(d, build_kafka_etl_asset_specs(project, [d.ref], translator)[0])
        for d in datas
        if is_sharded(d)
    ]
    checks = [
        kafka_etl_checks(project=project, translator=translator, units=group) for group in groups
    ]
    jobs: list[Any] = []
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
        replay_job = kafka_etl_replay_job(data, table.key, start_date=replay_start_date)
        tags = {"kafka_etl/pipeline": data.job_prefix}
        load_job = define_asset_job(
            f"{data.job_prefix}_load",
            selection=AssetSelection.assets(table.key).without_checks(),
            description=f"Load {data.pipeline.topics_shown} into {data.pipeline.table}.",
            tags=tags,
            executor_def=(shard_executor or multiprocess_executor)
            if is_sharded(data)
            else in_process_executor,
        )
        checks_job = define_asset_job(
            f"{data.job_prefix}_checks",
            selection=AssetSelection.checks_for_assets(table.key),
            description=(
                f"Check {data.pipeline.table} against {data.pipeline.topics_shown}: continuity and"
                " freshness, read from the table and Kafka whether or not the last load worked."
            ),
            tags=tags,
            executor_def=in_process_executor,
        )
        jobs += [load_job, checks_job, replay_job]
        schedule = load_schedule(data, load_job, schedule_status)
        if schedule is not None:
            schedules.append(schedule)
        if checks_schedule is not None:
            schedules.append(checks_schedule_(data, checks_job, checks_schedule, schedule_status))
        sensors.append(
            lag_sensor(
                data,
                load_job,
                minimum_interval_seconds=sensor_interval_seconds,
                status=sensor_status,
                poison_after=poison_after,
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
                topic_keys={
                    m.pipeline.topic: s.key
                    for m in data.listed_members()
                    if (s := translator.get_topic_spec(m)) is not None
                },
            )
        )
    topics = dedupe(s for d in datas for s in translator.get_topic_specs(d))
    return Definitions(
        assets=[*topics, *loads],
        asset_checks=checks,
        jobs=jobs,
        schedules=schedules,
        sensors=sensors,
        resources={RESOURCE_KEY: resource},
    )
