"""Schedules from the YAML's ``schedule:`` and one lag sensor per pipeline."""

import hashlib
import json
from typing import TYPE_CHECKING

from dagster import (
    DagsterInvalidDefinitionError,
    DefaultScheduleStatus,
    DefaultSensorStatus,
    RunRequest,
    ScheduleDefinition,
    SensorDefinition,
    SensorEvaluationContext,
    SensorResult,
    SkipReason,
    sensor,
)

from dagster_project.resource import KafkaEtlResource
from dagster_project.translator import PipelineTranslatorData
from kafka_etl.errors import ConfigError, TransientError

if TYPE_CHECKING:  # not exported by dagster; what define_asset_job returns
    from dagster._core.definitions.unresolved_asset_job_definition import (
        UnresolvedAssetJobDefinition,
    )

_READABLE_KEY_PARTITIONS = 8  # beyond this many partitions the run key is a digest


def load_schedule(
    data: PipelineTranslatorData,
    job: "UnresolvedAssetJobDefinition",
    status: DefaultScheduleStatus = DefaultScheduleStatus.RUNNING,
) -> ScheduleDefinition | None:
    """The pipeline's ``schedule:`` cron in ``schedule_timezone``, or None when absent."""
    p = data.pipeline
    if p.schedule is None:
        return None
    try:
        return ScheduleDefinition(
            name=f"{data.job_prefix}_schedule",
            cron_schedule=p.schedule,
            execution_timezone=p.schedule_timezone,
            job=job,
            default_status=status,
            description=f"Loads {p.topic} into {p.table} at '{p.schedule}' ({p.schedule_timezone})",
        )
    except DagsterInvalidDefinitionError as exc:
        msg = f"{data.project.source}: pipeline {p.name!r}, field 'schedule': {exc}"
        raise ConfigError(msg) from None


def run_key(name: str, high_watermarks: dict[int, int]) -> str:
    """The same backlog (same high watermarks) always gets the same key, so one run."""
    marks = ",".join(f"{p}:{o}" for p, o in sorted(high_watermarks.items()))
    if len(high_watermarks) > _READABLE_KEY_PARTITIONS:
        marks = hashlib.sha256(marks.encode()).hexdigest()[:16]
    return f"{name}@{marks}"


def lag_sensor(
    data: PipelineTranslatorData,
    job: "UnresolvedAssetJobDefinition",
    *,
    minimum_interval_seconds: int = 30,
    status: DefaultSensorStatus = DefaultSensorStatus.STOPPED,
) -> SensorDefinition:
    """Requests a load when the pipeline's lag reaches ``lag_threshold``.

    Lag comes from the consumer group (see ``connector.lag``), so the sensor never opens the
    target database and every Kafka call it makes is bounded by the resource's
    ``lookup_timeout_seconds``. The cursor holds the last high watermarks and lag.
    """
    p = data.pipeline
    name = p.name
    threshold = p.lag_threshold

    @sensor(
        name=f"{data.job_prefix}_lag_sensor",
        job=job,
        minimum_interval_seconds=minimum_interval_seconds,
        default_status=status,
        description=f"Loads {p.topic} into {p.table} when its lag reaches {threshold:,}.",
    )
    def _lag_sensor(
        context: SensorEvaluationContext, kafka_etl: KafkaEtlResource
    ) -> SensorResult | SkipReason:
        try:
            lags = kafka_etl.lag(name)
        except TransientError as exc:
            return SkipReason(f"Kafka did not answer, will try again: {exc}")
        marks = {x.partition: x.high_watermark for x in lags}
        total = sum(x.lag for x in lags)
        cursor = json.dumps(
            {
                "high_watermarks": {str(k): v for k, v in sorted(marks.items())},
                "lag": total,
            }
        )
        if total < threshold:
            return SensorResult(
                skip_reason=SkipReason(f"lag {total:,} is below the threshold {threshold:,}"),
                cursor=cursor,
            )
        by_partition = ", ".join(f"{x.partition}:{x.lag:,}" for x in lags if x.lag)
        context.log.info(f"pipeline {name!r}: lag {total:,} ({by_partition}); requesting a run")
        return SensorResult(
            run_requests=[
                RunRequest(
                    run_key=run_key(name, marks),
                    tags={"kafka_etl/lag": str(total)},
                )
            ],
            cursor=cursor,
        )

    return _lag_sensor
