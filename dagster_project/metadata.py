"""What the UI shows after a load or a replay, from the runner's ``RunResult``.

Only names, counts and offsets: no connection setting ever becomes metadata (the target is
shown with its password masked).
"""

from __future__ import annotations

from typing import Any

import pyarrow as pa
from dagster import (
    MetadataValue,
    TableColumn,
    TableColumnConstraints,
    TableRecord,
    TableSchema,
)

from pipelines.runner import RunResult

_PARTITIONS_SCHEMA = TableSchema(
    columns=[
        TableColumn("partition", "int"),
        TableColumn("first", "int", description="first offset loaded"),
        TableColumn("next", "int", description="checkpoint after the run (last loaded + 1)"),
        TableColumn("offsets", "int", description="offsets covered by this run"),
        TableColumn("lag_after", "int", description="offsets left to load after the run"),
    ]
)


def column_schema(schema: pa.Schema) -> TableSchema:
    return TableSchema(
        columns=[
            TableColumn(
                name=f.name,
                type=str(f.type),
                constraints=TableColumnConstraints(nullable=f.nullable),
            )
            for f in schema
        ]
    )


def result_metadata(result: RunResult, table_name: str, *, replay: bool = False) -> dict[str, Any]:
    """``dagster/*`` table metadata plus rows, offsets, lag, duration and throughput."""
    partitions = sorted(set(result.ranges) | set(result.lag_after))
    records = []
    for p in partitions:
        r = result.ranges.get(p)
        records.append(
            TableRecord(
                {
                    "partition": p,
                    "first": r.first if r else None,
                    "next": r.next if r else None,
                    "offsets": r.size if r else 0,
                    "lag_after": result.lag_after.get(p, 0),
                }
            )
        )
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
        metadata["dagster/column_schema"] = column_schema(result.schema)
    if result.tombstones:
        metadata["tombstones_skipped"] = MetadataValue.int(result.tombstones)
    if result.dead_lettered:
        metadata["dead_lettered"] = MetadataValue.int(result.dead_lettered)
    if result.columns_added:
        metadata["columns_added"] = MetadataValue.json(list(result.columns_added))
    if result.gaps:
        metadata["kafka_gaps"] = MetadataValue.json(
            [
                {"partition": g.partition, "first": g.expected, "next": g.log_start, "lost": g.lost}
                for g in result.gaps
            ]
        )
    return metadata
