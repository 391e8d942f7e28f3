"""What a pipeline looks like right now, as ``AssetObservation``s Dagster plots over time.

The Kafka side comes from the consumer group (the runner commits it after each database
commit) and the brokers, every call bounded. The table side (rows, checkpoints, time of the last
load, database column types) is read without ever making a writer wait on us for long: a DuckDB
file is opened read-only with no wait, and skipped while a load holds it; a server database is
read with plain queries.
"""

from __future__ import annotations

import json
import time
from collections.abc import Mapping
from typing import Any

from dagster import (
    AssetKey,
    AssetMaterialization,
    AssetObservation,
    DagsterRunStatus,
    DefaultSensorStatus,
    MetadataValue,
    RunsFilter,
    SensorDefinition,
    SensorEvaluationContext,
    SensorResult,
    SkipReason,
    TableColumn,
    TableRecord,
    TableSchema,
    sensor,
)

from connector.client import close_consumer, make_consumer
from connector.lag import first_timestamps, group_lag
from dagster_project.members import member_units
from dagster_project.metadata import CHECKPOINTS_SCHEMA
from dagster_project.resource import KafkaEtlResource
from dagster_project.table_side import read_table_side
from dagster_project.translator import PipelineTranslatorData
from kafka_etl.errors import TransientError

_IN_PROGRESS = [
    DagsterRunStatus.QUEUED,
    DagsterRunStatus.NOT_STARTED,
    DagsterRunStatus.STARTING,
    DagsterRunStatus.STARTED,
]
_TOPIC_SCHEMA = TableSchema(
    columns=[
        TableColumn("partition", "int"),
        TableColumn("log_start", "int", description="oldest offset Kafka retains"),
        TableColumn("high_watermark", "int", description="next offset Kafka will write"),
    ]
)


_TOPIC_CHECKPOINTS_SCHEMA = TableSchema(
    columns=[TableColumn("topic", "string"), *CHECKPOINTS_SCHEMA.columns]
)


def oldest_unloaded_age(
    data: PipelineTranslatorData,
    positions: Mapping[int, int],
    ends: Mapping[int, int],
    timeout: float,
) -> float:
    """Seconds since the oldest message in ``[position, end)`` was written (0 when none is)."""
    p = data.pipeline
    wanted = {q: o for q, o in positions.items() if o < ends.get(q, o)}
    if not wanted:
        return 0.0
    consumer = make_consumer(data.project.consumer_settings(p), p.consumer_group)
    try:
        stamps = first_timestamps(consumer, p.topic, wanted, ends, timeout=timeout)
    finally:
        close_consumer(consumer)
    if not stamps:
        return 0.0
    return max(time.time() - min(stamps.values()) / 1000, 0.0)


def observe(
    data: PipelineTranslatorData,
    table_key: AssetKey,
    topic_key: AssetKey | None,
    *,
    previous: Mapping[str, Any] | None = None,
    timeout: float = 10.0,
) -> tuple[list[AssetObservation], dict[str, Any]]:
    """Observations of the table asset (and of the topic asset, when there is one), and the
    state to pass back as ``previous`` next time (for the topic's message rate).

    Raises ``TransientError`` when Kafka does not answer within ``timeout``.
    """
    p = data.pipeline
    lags = group_lag(data.project.consumer_settings(p), p.topic, p.consumer_group, timeout=timeout)
    side = read_table_side(data)
    records = []
    total = 0
    positions = {}
    for x in lags:
        # The table's checkpoint when it could be read; the group's (never ahead of it) else.
        checkpoint = side.checkpoints.get(x.partition) if side else None
        if checkpoint is None:
            checkpoint = x.position
        start = x.log_start if checkpoint is None else max(checkpoint, x.log_start)
        positions[x.partition] = start
        lag = max(x.high_watermark - start, 0)
        total += lag
        records.append(
            TableRecord(
                {
                    "partition": x.partition,
                    "checkpoint": checkpoint,
                    "high_watermark": x.high_watermark,
                    "lag": lag,
                }
            )
        )
    ends = {x.partition: x.high_watermark for x in lags}
    age = oldest_unloaded_age(data, positions, ends, timeout)
    table_meta: dict[str, Any] = {
        "lag": MetadataValue.int(total),
        "oldest_unloaded_age_seconds": MetadataValue.float(round(age, 1)),
        "partitions": MetadataValue.table(records, schema=CHECKPOINTS_SCHEMA),
        "dagster/table_name": MetadataValue.text(data.table_name),
    }
    if side is not None:
        if side.rows is not None:
            table_meta["dagster/row_count"] = MetadataValue.int(side.rows)
        if side.last_load is not None:
            table_meta["last_load"] = MetadataValue.timestamp(side.last_load)
            table_meta["seconds_since_last_load"] = MetadataValue.float(
                round(max(time.time() - side.last_load.timestamp(), 0.0), 1)
            )
    else:
        table_meta["table_side"] = MetadataValue.text("skipped: the database is busy or down")
    events = [AssetObservation(asset_key=table_key, metadata=table_meta)]
    now = time.time()
    marks = sum(x.high_watermark for x in lags)
    state = {"at": now, "high_watermarks": marks, "lag": total}
    if topic_key is not None:
        topic_meta: dict[str, Any] = {
            "high_watermarks": MetadataValue.int(marks),
            "retained_messages": MetadataValue.int(
                sum(x.high_watermark - x.log_start for x in lags)
            ),
            "partitions": MetadataValue.table(
                [
                    TableRecord(
                        {
                            "partition": x.partition,
                            "log_start": x.log_start,
                            "high_watermark": x.high_watermark,
                        }
                    )
                    for x in lags
                ],
                schema=_TOPIC_SCHEMA,
            ),
        }
        if previous and now > float(previous.get("at", now)):
            rate = (marks - int(previous.get("high_watermarks", marks))) / (
                now - float(previous["at"])
            )
            topic_meta["messages_per_second"] = MetadataValue.float(round(max(rate, 0.0), 2))
        events.append(AssetObservation(asset_key=topic_key, metadata=topic_meta))
    return events, state


def observe_members(
    data: PipelineTranslatorData,
    table_key: AssetKey,
    topic_keys: Mapping[str, AssetKey],
    *,
    previous: Mapping[str, Any] | None = None,
    timeout: float = 10.0,
) -> tuple[list[AssetObservation], dict[str, Any]]:
    """``observe`` for a shared table: each topic observed as its own member, then one
    observation of the table (lag summed, the oldest unloaded age the largest, the partitions
    per topic); the state is per topic."""
    table: list[AssetObservation] = []
    events: list[AssetObservation] = []
    state: dict[str, Any] = {}
    for member in member_units(data):
        topic = member.pipeline.topic
        found, state[topic] = observe(
            member,
            table_key,
            topic_keys.get(topic),
            previous=(previous or {}).get(topic),
            timeout=timeout,
        )
        table.append(found[0])
        events += found[1:]
    if not table:
        return [], state
    meta = dict(table[0].metadata)
    meta["lag"] = MetadataValue.int(sum(_value(e, "lag") for e in table))
    age = max(_value(e, "oldest_unloaded_age_seconds") for e in table)
    meta["oldest_unloaded_age_seconds"] = MetadataValue.float(age)
    records = [
        TableRecord({"topic": topic, **r.data})
        for topic, e in zip(state, table, strict=True)
        for r in _value(e, "partitions").records
    ]
    meta["partitions"] = MetadataValue.table(records, schema=_TOPIC_CHECKPOINTS_SCHEMA)
    meta["topics"] = MetadataValue.int(len(table))
    return [AssetObservation(asset_key=table_key, metadata=meta), *events], state


def _value(event: AssetObservation, name: str) -> Any:
    return event.metadata[name].value


def observation_sensor(
    data: PipelineTranslatorData,
    table_key: AssetKey,
    topic_key: AssetKey | None,
    *,
    minimum_interval_seconds: int = 15,
    status: DefaultSensorStatus = DefaultSensorStatus.RUNNING,
    topic_keys: Mapping[str, AssetKey] | None = None,
) -> SensorDefinition:
    """Records ``observe`` as asset observations every ``minimum_interval_seconds``; it
    requests no run. The cursor keeps the last high watermarks for the message rate. A shared
    table is observed per topic (``observe_members``; ``topic_keys``: topic -> asset key)."""
    p = data.pipeline
    name = data.ref

    @sensor(
        name=f"{data.job_prefix}_observe_sensor",
        minimum_interval_seconds=minimum_interval_seconds,
        default_status=status,
        description=(
            f"Observes lag, rows and checkpoints of {p.table} and the high watermarks of"
            f" {p.topics_shown} (no run; the DuckDB file is skipped while a load holds it)."
        ),
    )
    def _observe(
        context: SensorEvaluationContext, kafka_etl: KafkaEtlResource
    ) -> SensorResult | SkipReason:
        previous = json.loads(context.cursor) if context.cursor else None
        try:
            current = kafka_etl.pipeline_data(name)
            if current.shared:
                events, state = observe_members(
                    current,
                    table_key,
                    topic_keys or {},
                    previous=previous,
                    timeout=kafka_etl.lookup_timeout_seconds,
                )
            else:
                events, state = observe(
                    current,
                    table_key,
                    topic_key,
                    previous=previous,
                    timeout=kafka_etl.lookup_timeout_seconds,
                )
        except TransientError as exc:
            return SkipReason(f"Kafka did not answer, will try again: {exc}")
        if not events:
            return SkipReason(f"pipeline {name!r}: no topic to observe yet")
        found = _unrecorded_load(context, data.job_prefix, table_key, events[0])
        return SensorResult(asset_events=[*events, *found], cursor=json.dumps(state))

    return _observe


def _unrecorded_load(
    context: SensorEvaluationContext, job_prefix: str, key: AssetKey, seen: AssetObservation
) -> list[AssetMaterialization]:
    """A runless materialization for a table that holds loaded rows while Dagster has none on
    record (loaded by a CLI without ``DAGSTER_HOME``, or before Dagster was set up), so the
    asset never says "Never materialized" over a loaded table. Not while a run of the pipeline
    is in progress: that run records its own."""
    meta = seen.metadata
    if "last_load" not in meta or "dagster/row_count" not in meta:
        return []
    instance = context.instance
    if instance.get_latest_materialization_event(key) is not None:
        return []
    running = instance.get_runs(
        filters=RunsFilter(statuses=_IN_PROGRESS, tags={"kafka_etl/pipeline": job_prefix}),
        limit=1,
    )
    if running:
        return []
    keep = ("dagster/row_count", "dagster/table_name", "partitions", "last_load")
    return [
        AssetMaterialization(
            asset_key=key,
            description="Found by the observation sensor: loaded outside Dagster.",
            metadata={k: meta[k] for k in keep if k in meta},
            tags={"kafka_etl/source": "observation"},
        )
    ]
