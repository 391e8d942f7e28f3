"""Replays as a job, not a partitioned asset: a day (partition or ``day:``), a range or offsets.

A daily-partitioned asset read like data loss: Dagster counts every day never materialized as
"missing" (it showed "335 missing / 0% filled" over a table holding every row), although a day
is only ever replayed on purpose. A job's partitions are days one *may* replay; each run records
what it rewrote as an observation of the table asset (``rows_replayed``, 0 visibly 0), and the
days start at the earliest one Kafka still retains, not at a fixed date.
"""

import logging
from collections.abc import Iterator
from datetime import UTC, date, datetime, timedelta
from typing import Any
from zoneinfo import ZoneInfo

from confluent_kafka import KafkaException
from dagster import (
    AssetKey,
    AssetObservation,
    DailyPartitionsDefinition,
    Failure,
    JobDefinition,
    MetadataValue,
    OpExecutionContext,
    Output,
    in_process_executor,
    job,
    op,
)

from connector.client import make_consumer, partitions, watermarks
from connector.lag import first_timestamps
from dagster_project.assets import DAGSTER_NAMES, ReplayConfig
from dagster_project.resource import KafkaEtlResource
from dagster_project.translator import PipelineTranslatorData
from kafka_etl.errors import KafkaEtlError
from pipelines.ranges import RangeError, replay_range

log = logging.getLogger(__name__)
RETAINED = "retained"  # replay_start_date meaning "the earliest day Kafka still holds"
LOOKUP_TIMEOUT = 3.0  # seconds; at definitions load, so short, with a fallback


def earliest_retained_day(data: PipelineTranslatorData, timeout: float = LOOKUP_TIMEOUT) -> date:
    """The day (in ``schedule_timezone``) of the oldest message Kafka still holds: the
    timestamp of the first message at each partition's log start. Today when the topic is empty.
    """
    p = data.pipeline
    zone = ZoneInfo(p.schedule_timezone)
    if data.shared:  # a shared table: the earliest day of any of its topics
        days = [earliest_retained_day(m, timeout) for m in data.listed_members()]
        return min(days, default=datetime.now(zone).date())
    consumer = make_consumer(data.project.consumer_settings(p), p.consumer_group)
    try:
        parts = partitions(consumer, p.topic, timeout)
        marks = watermarks(consumer, p.topic, parts, timeout=timeout)
        starts = {q: low for q, (low, _) in marks.items()}
        ends = {q: high for q, (_, high) in marks.items()}
        stamps = first_timestamps(consumer, p.topic, starts, ends, timeout=timeout)
    finally:
        consumer.close()
    if not stamps:
        return datetime.now(zone).date()
    return datetime.fromtimestamp(min(stamps.values()) / 1000, UTC).astimezone(zone).date()


def replay_days(data: PipelineTranslatorData, start_date: str) -> DailyPartitionsDefinition:
    """Days from ``start_date`` (``retained``: the earliest day Kafka holds), today included.

    Looked up when the code location loads; if Kafka does not answer within a few seconds the
    days start a week ago (reload the code location once Kafka is back).
    """
    if start_date == RETAINED:
        try:
            start = earliest_retained_day(data)
        except (KafkaEtlError, KafkaException) as exc:
            start = datetime.now(ZoneInfo(data.pipeline.schedule_timezone)).date() - timedelta(7)
            log.warning(
                "pipeline %r: replay days start at %s: the earliest retained day is unknown (%s)",
                data.pipeline.name,
                start,
                exc,
            )
        start_date = start.isoformat()
    return DailyPartitionsDefinition(
        start_date=start_date, timezone=data.pipeline.schedule_timezone, end_offset=1
    )


def kafka_etl_replay_job(
    data: PipelineTranslatorData, table: AssetKey, *, start_date: str = RETAINED
) -> JobDefinition:
    """``<name>_replay``: one day per partition (backfills), or a range or offsets from the
    Launchpad; each run records an observation of ``table`` saying what it rewrote."""
    p = data.pipeline
    days = replay_days(data, start_date)

    @op(name=f"kafka_etl__{data.job_prefix}__replay", pool=data.pool)
    def _replay(
        context: OpExecutionContext, config: ReplayConfig, kafka_etl: KafkaEtlResource
    ) -> Iterator[Any]:
        what, kwargs = _range(context, config, p.schedule_timezone)
        metadata = kafka_etl.replay(context, data.ref, **kwargs)
        rows = metadata["rows_replayed"].value
        description = (
            f"Replayed {rows:,} rows of {what} into {p.table}"
            if rows
            else f"Replayed 0 rows: Kafka holds no message of {what} for {p.table}"
        )
        metadata["replayed"] = MetadataValue.text(what)
        yield AssetObservation(asset_key=table, metadata=metadata, description=description)
        context.log.info(f"pipeline {p.name!r}: {description}")
        yield Output(None, metadata={"rows_replayed": MetadataValue.int(rows)})

    @job(
        name=f"{data.job_prefix}_replay",
        partitions_def=days,
        executor_def=in_process_executor,
        tags={"kafka_etl/pipeline": data.job_prefix},
        description=(
            f"Replay days (partitions from the earliest day Kafka retains) or a from/to range of"
            f" {p.topics_shown} into {p.table}; the checkpoint never moves. Each run records"
            " rows_replayed as an observation of the table asset."
        ),
    )
    def _job() -> None:
        _replay()

    return _job


def _range(
    context: OpExecutionContext, config: ReplayConfig, zone: str
) -> tuple[str, dict[str, Any]]:
    """What to replay: offsets or a from/to range (the CLI's own validator,
    ``pipelines.ranges``), else a day (``day`` or the run's partition) in ``zone``."""
    try:
        wanted = replay_range(
            DAGSTER_NAMES,
            since=config.from_,
            until=config.to,
            partition=config.partition,
            from_offset=config.from_offset,
            to_offset=config.to_offset,
            window_required=False,
        )
    except RangeError as exc:
        raise Failure(str(exc)) from None
    if wanted.offsets is not None:
        ((partition, (first, stop)),) = wanted.offsets.items()
        return f"partition {partition} [{first},{stop})", {"offsets": wanted.offsets}
    if wanted.since is not None and wanted.until is not None:
        since, until = wanted.since, wanted.until
        return f"{since.isoformat()} to {until.isoformat()}", {"since": since, "until": until}
    if not (config.day or context.has_partition_key):
        msg = "choose a day (partition or 'day'), or set 'from'/'to' or offsets in the run config"
        raise Failure(msg)
    day = config.day or context.partition_key
    try:
        start = datetime.combine(date.fromisoformat(day), datetime.min.time(), ZoneInfo(zone))
    except ValueError:
        msg = f"day {day!r}: expected YYYY-MM-DD"
        raise Failure(msg) from None
    return f"{day} ({zone})", {"since": start, "until": start + timedelta(days=1)}
