"""Schedules from the YAML's ``schedule:`` and one lag sensor per pipeline."""

import hashlib
import json
from collections.abc import Mapping
from typing import TYPE_CHECKING, Any

from dagster import (
    DagsterInstance,
    DagsterRunStatus,
    DefaultScheduleStatus,
    DefaultSensorStatus,
    RunRequest,
    RunsFilter,
    ScheduleDefinition,
    SensorDefinition,
    SensorEvaluationContext,
    SensorResult,
    SkipReason,
    sensor,
)

from connector.lag import PartitionLag
from dagster_project.resource import (
    TAG_CONFIG,
    TAG_FAILED_AT,
    TAG_HIGH_WATERMARK,
    KafkaEtlResource,
    config_digest,
)
from dagster_project.translator import PipelineTranslatorData
from kafka_etl.errors import TransientError

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
    # The Pipeline model checked the cron and the time zone (pipelines/checks.py).
    return ScheduleDefinition(
        name=f"{data.job_prefix}_schedule",
        cron_schedule=p.schedule,
        execution_timezone=p.schedule_timezone,
        job=job,
        default_status=status,
        description=(
            f"Loads {p.topics_shown} into {p.table} at '{p.schedule}' ({p.schedule_timezone})"
        ),
    )


def checks_schedule(
    data: PipelineTranslatorData,
    job: "UnresolvedAssetJobDefinition",
    cron: str,
    status: DefaultScheduleStatus = DefaultScheduleStatus.RUNNING,
) -> ScheduleDefinition:
    """The checks on their own clock (``checks_schedule``, in ``schedule_timezone``); ``cron``
    was checked by ``build_definitions`` (``pipelines.checks.cron``)."""
    p = data.pipeline
    return ScheduleDefinition(
        name=f"{data.job_prefix}_checks_schedule",
        cron_schedule=cron,
        execution_timezone=p.schedule_timezone,
        job=job,
        default_status=status,
        description=f"Checks {p.table} against {p.topics_shown} at '{cron}'",
    )


def run_key(name: str, high_watermarks: Mapping[Any, int]) -> str:
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
    poison_after: int = 2,
    poison_retry_messages: int = 10_000,
) -> SensorDefinition:
    """Requests a load when the pipeline's lag reaches ``lag_threshold``.

    Lag comes from the consumer group (see ``connector.lag``), so the sensor never opens the
    target database and every Kafka call it makes is bounded by the resource's
    ``lookup_timeout_seconds``. The cursor holds the last high watermarks and lag.

    When the last ``poison_after`` runs of the job all failed on the same message, it asks for
    no other run until the pipeline's config or the checkpoint changes, or the partition's high
    watermark grew by ``poison_retry_messages`` (see ``poisoned``).
    """
    p = data.pipeline
    name = data.ref
    threshold = p.lag_threshold

    @sensor(
        name=f"{data.job_prefix}_lag_sensor",
        job=job,
        minimum_interval_seconds=minimum_interval_seconds,
        default_status=status,
        description=f"Loads {p.topics_shown} into {p.table} when its lag reaches {threshold:,}.",
    )
    def _lag_sensor(
        context: SensorEvaluationContext, kafka_etl: KafkaEtlResource
    ) -> SensorResult | SkipReason:
        try:
            by_topic = kafka_etl.topic_lags(name)
        except TransientError as exc:
            return SkipReason(f"Kafka did not answer, will try again: {exc}")
        lags = [x for found in by_topic.values() for x in found]
        # one topic: by partition; a shared table's several: by topic:partition
        marks: dict[Any, int] = {
            (x.partition if len(by_topic) == 1 else f"{t}:{x.partition}"): x.high_watermark
            for t, found in by_topic.items()
            for x in found
        }
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
        stuck = poisoned(
            context.instance,
            job.name,
            by_topic,
            config_digest(kafka_etl.pipeline_data(name)),
            poison_after,
            poison_retry_messages,
        )
        if stuck is not None:
            return SensorResult(
                skip_reason=SkipReason(
                    f"pipeline {name}: the last {poison_after} runs failed at {stuck}; not"
                    " requesting another until the pipeline, the checkpoint or the backlog"
                    f" changes (by {poison_retry_messages:,} messages); see the runs' error for"
                    " what to do (on_error: dlq, or the reset command it gives)"
                ),
                cursor=cursor,
            )
        by_partition = ", ".join(
            f"{k}:{x.lag:,}" for k, x in zip(marks, lags, strict=True) if x.lag
        )
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


def poisoned(
    instance: DagsterInstance,
    job_name: str,
    lags: Mapping[str, list[PartitionLag]],
    digest: str,
    after: int,
    retry_messages: int,
) -> str | None:
    """``topic/partition@offset`` when the last ``after`` runs failed there and nothing changed
    (``lags``: per topic, as ``KafkaEtlResource.topic_lags``).

    The load tags a run that fails on a message with its coordinates, the config digest and
    the partition's high watermark then (``KafkaEtlResource._tag_failure``).
    """
    if after <= 0:
        return None
    runs = instance.get_runs(filters=RunsFilter(job_name=job_name), limit=after)
    if len(runs) < after or any(r.status != DagsterRunStatus.FAILURE for r in runs):
        return None
    spots = {r.tags.get(TAG_FAILED_AT) for r in runs}
    configs = {r.tags.get(TAG_CONFIG) for r in runs}
    if len(spots) != 1 or None in spots or configs != {digest}:
        return None
    [spot] = spots
    assert spot is not None
    topic, where = spot.rsplit("/", 1)
    partition, offset = where.split("@")
    by_partition = {x.partition: x for x in lags.get(topic, [])}
    now = by_partition.get(int(partition))
    if now is None or (now.log_start if now.position is None else now.position) != int(offset):
        return None  # the checkpoint moved (a reset, or a load got past it)
    highs = [int(r.tags.get(TAG_HIGH_WATERMARK, "0")) for r in runs]
    if now.high_watermark >= max(highs) + retry_messages:
        return None
    return spot
