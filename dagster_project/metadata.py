"""What the UI shows after a load or a replay, from the runner's ``RunResult``.

Only names, counts and offsets: no connection setting ever becomes metadata (the target is
shown with its password masked).
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import pyarrow as pa
from dagster import (
    AssetKey,
    AssetObservation,
    MaterializeResult,
    MetadataValue,
    TableColumn,
    TableColumnConstraints,
    TableRecord,
    TableSchema,
)

from dagster_project.table_side import read_table_side
from dagster_project.translator import PipelineTranslatorData
from pipelines.runner import RunResult
from pipelines.shard_results import merge_topics

_PARTITIONS_SCHEMA = TableSchema(
    columns=[
        TableColumn("partition", "int"),
        TableColumn("first", "int", description="first offset loaded"),
        TableColumn("next", "int", description="checkpoint after the run (last loaded + 1)"),
        TableColumn("offsets", "int", description="offsets covered by this run"),
        TableColumn("checkpoint", "int", description="next offset to load, after the run"),
        TableColumn("lag_after", "int", description="offsets left to load after the run"),
    ]
)
_TOPIC_PARTITIONS_SCHEMA = TableSchema(
    columns=[TableColumn("topic", "string"), *_PARTITIONS_SCHEMA.columns]
)


# What only a load that committed something has: left out of a no-op run's observation.
_LOAD_ONLY = ("rows_loaded", "offset_ranges", "lag_after", "duration_seconds", "rows_per_second")
CHECKPOINTS_SCHEMA = TableSchema(
    columns=[
        TableColumn("partition", "int"),
        TableColumn("checkpoint", "int", description="next offset to load (last loaded + 1)"),
        TableColumn("high_watermark", "int", description="next offset Kafka will write"),
        TableColumn("lag", "int", description="offsets not loaded yet"),
    ]
)


def column_schema(schema: pa.Schema, db_types: dict[str, str] | None = None) -> TableSchema:
    """The table's columns; with ``db_types``, each type reads ``BIGINT (int64)``: the
    database's own type, then the Arrow type kafka-etl loads it from."""
    types = db_types or {}
    return TableSchema(
        columns=[
            TableColumn(
                name=f.name,
                type=f"{types[f.name]} ({f.type})" if f.name in types else str(f.type),
                constraints=TableColumnConstraints(nullable=f.nullable),
            )
            for f in schema
        ]
    )


def committed(result: RunResult) -> bool:
    """Whether the load committed anything (else its event is an observation)."""
    return bool(result.ranges or result.rows or result.dead_lettered)


def load_event(
    key: AssetKey, data: PipelineTranslatorData, result: RunResult, *, loaded: bool | None = None
) -> MaterializeResult | AssetObservation:
    """A materialization for a load that committed something; an observation (checkpoints,
    lag, table rows) for one that found nothing new (``loaded`` overrides ``committed``)."""
    side = read_table_side(data)  # the run closed the sink: the file is free
    types = side.column_types if side else None
    if not (committed(result) if loaded is None else loaded):
        metadata = result_metadata(result, data.table_name, db_types=types)
        checkpoints = side.checkpoints if side else {}
        metadata["partitions"] = checkpoint_table(checkpoints, result.lag_after)
        metadata["lag"] = MetadataValue.int(sum(result.lag_after.values()))  # as observations
        if side is not None and side.rows is not None:
            metadata["dagster/row_count"] = MetadataValue.int(side.rows)
        for name in _LOAD_ONLY:
            metadata.pop(name, None)
        return AssetObservation(asset_key=key, metadata=metadata)
    metadata = result_metadata(
        result, data.table_name, db_types=types, checkpoints=side.checkpoints if side else None
    )
    return MaterializeResult(asset_key=key, metadata=metadata)


def members_event(
    key: AssetKey,
    data: PipelineTranslatorData,
    members: Sequence[PipelineTranslatorData],
    results: Sequence[RunResult],
) -> MaterializeResult | AssetObservation:
    """The one event of a shared table (``data``) from its members' loads, one result per
    member: ``load_event`` of the merged counts (``merge_topics``), with the per-partition
    figures per topic (a ``topic`` column before those of ``partitions``)."""
    event = load_event(key, data, merge_topics(results), loaded=any(map(committed, results)))
    metadata = dict(event.metadata or {})
    records = []
    for member, result in zip(members, results, strict=True):
        side = read_table_side(member)
        for record in partition_records(result, side.checkpoints if side else None):
            records.append(TableRecord({"topic": result.topic, **record.data}))
    ranges = [f"{r.topic} {x}" for r in results for x in r.ranges.values()]
    lag = MetadataValue.int(sum(n for r in results for n in r.lag_after.values()))
    metadata["partitions"] = MetadataValue.table(records, schema=_TOPIC_PARTITIONS_SCHEMA)
    metadata["topics"] = MetadataValue.int(len(results))
    if isinstance(event, AssetObservation):
        metadata["lag"] = lag
        return AssetObservation(asset_key=key, metadata=metadata)
    metadata["offset_ranges"] = MetadataValue.text(", ".join(ranges) or "none")
    metadata["lag_after"] = lag
    if "kafka_gaps" in metadata:
        metadata["kafka_gaps"] = MetadataValue.json(
            [{"topic": r.topic, **gap} for r in results for gap in gap_records(r)]
        )
    return MaterializeResult(asset_key=key, metadata=metadata)


def checkpoint_table(checkpoints: dict[int, int], lag: dict[int, int]) -> MetadataValue:
    records = [
        TableRecord(
            {
                "partition": p,
                "checkpoint": checkpoints.get(p),
                "high_watermark": checkpoints[p] + lag.get(p, 0) if p in checkpoints else None,
                "lag": lag.get(p, 0),
            }
        )
        for p in sorted(set(checkpoints) | set(lag))
    ]
    return MetadataValue.table(records, schema=CHECKPOINTS_SCHEMA)


def result_metadata(
    result: RunResult,
    table_name: str,
    *,
    replay: bool = False,
    db_types: dict[str, str] | None = None,
    checkpoints: dict[int, int] | None = None,
) -> dict[str, Any]:
    """``dagster/*`` table metadata plus rows, offsets, lag, duration and throughput.

    ``checkpoints`` (read from the table after the run) fill the per-partition checkpoint of
    partitions this run did not touch."""
    records = partition_records(result, checkpoints)
    metadata: dict[str, Any] = {
        "dagster/table_name": MetadataValue.text(table_name),
        "rows_replayed" if replay else "rows_loaded": MetadataValue.int(result.rows),
        "offset_ranges": MetadataValue.text(
            ", ".join(str(r) for r in result.ranges.values()) or "none"
        ),
        "partitions": MetadataValue.table(records, schema=_PARTITIONS_SCHEMA),
        "duration_seconds": MetadataValue.float(round(result.seconds, 3)),
        "rows_per_second": MetadataValue.float(round(result.rows_per_second, 1)),
        "batches": MetadataValue.int(result.batches),
        "topic": MetadataValue.text(result.topic),
    }
    if not replay:
        metadata["lag_after"] = MetadataValue.int(sum(result.lag_after.values()))
    if result.table_rows is not None:  # unknown when the database went away after the load
        metadata["dagster/row_count"] = MetadataValue.int(result.table_rows)
    if result.schema is not None:
        metadata["dagster/column_schema"] = column_schema(result.schema, db_types)
    if result.tombstones:
        metadata["tombstones_skipped"] = MetadataValue.int(result.tombstones)
    if result.dead_lettered:
        metadata["dead_lettered"] = MetadataValue.int(result.dead_lettered)
    if result.columns_added:
        metadata["columns_added"] = MetadataValue.json(list(result.columns_added))
    if result.gaps:
        metadata["kafka_gaps"] = MetadataValue.json(gap_records(result))
    return metadata


def partition_records(
    result: RunResult, checkpoints: dict[int, int] | None = None
) -> list[TableRecord]:
    """One ``partitions`` record per partition the run loaded, has lag on, or is stored."""
    stored = checkpoints or {}
    records = []
    for p in sorted(set(result.ranges) | set(result.lag_after) | set(stored)):
        r = result.ranges.get(p)
        records.append(
            TableRecord(
                {
                    "partition": p,
                    "first": r.first if r else None,
                    "next": r.next if r else None,
                    "offsets": r.size if r else 0,
                    "checkpoint": r.next if r else stored.get(p),
                    "lag_after": result.lag_after.get(p, 0),
                }
            )
        )
    return records


def gap_records(result: RunResult) -> list[dict[str, int]]:
    return [
        {"partition": g.partition, "first": g.expected, "next": g.log_start, "lost": g.lost}
        for g in result.gaps
    ]
