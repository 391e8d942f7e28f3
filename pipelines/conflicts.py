"""``on_schema_conflict: dlq``: messages whose field type the table cannot take are set aside.

Checked in the runner, against the table as the last committed batch left it, before the batch
goes to the sink: for every field in conflict, the messages that carry a value for it become
dead letters (error class ``schema_conflict``, the one-line conflict message as the reason) and
the field is dropped from the batch's remaining rows. The sink then writes both in one
transaction, as it does for messages that could not be decoded.
"""

from __future__ import annotations

from dataclasses import replace

import numpy as np
import pyarrow as pa

from connector.batch import Batch
from connector.dead_letters import rejects_table
from connector.formats.base import Reject
from connector.reader import RawBatch
from kafka_etl.errors import SchemaConflictError, TerminalError
from sinks.base import TableSpec
from sinks.schema import plan_schema

SCHEMA_CONFLICT = "schema_conflict"
_IDENTITY = ("_topic", "_partition", "_offset")


def set_aside_conflicts(
    table: pa.Schema | None, batch: Batch, raw: RawBatch, spec: TableSpec
) -> Batch:
    """``batch`` without the messages whose values conflict with ``table``; they are added
    to ``batch.rejects``. A conflict no single field explains is raised as it is."""
    if table is None:
        return batch
    rows = batch.rows
    rejects: list[Reject] = []
    where = {
        (int(p), int(o)): i
        for i, (p, o) in enumerate(zip(raw.partitions, raw.offsets, strict=True))
    }
    while True:
        try:
            plan_schema(
                table,
                rows,
                spec.pipeline,
                widen_to_string=spec.widen_to_string,
                protected=(*_IDENTITY, *spec.key),
            )
        except SchemaConflictError as exc:
            name = exc.field
            if name is None or name not in rows.column_names or name in _IDENTITY:
                raise
            carried = np.asarray(rows.column(name).is_valid(), dtype=bool)
            partitions = rows.column("_partition").to_numpy(zero_copy_only=False)[carried]
            offsets = rows.column("_offset").to_numpy(zero_copy_only=False)[carried]
            for p, o in zip(partitions.tolist(), offsets.tolist(), strict=True):
                i = where[(p, o)]
                rejects.append(_reject(raw, i, str(exc)))
            rows = rows.filter(pa.array(~carried)).drop_columns([name])
            continue
        break
    if not rejects:
        return batch
    found = rejects_table(raw.topic, rejects)
    if batch.rejects is not None and batch.rejects.num_rows:
        found = pa.concat_tables([batch.rejects, found]).sort_by(
            [("_partition", "ascending"), ("_offset", "ascending")]
        )
    return replace(batch, rows=rows, rejects=found)


def check_error_ratio(pipeline: str, batch: Batch, messages: int, max_ratio: float) -> None:
    """Too many dead letters in one batch is a systematic problem: fail the run instead."""
    if batch.rejects is None or batch.reject_count <= max_ratio * messages:
        return
    first = batch.rejects.slice(0, 1).to_pylist()[0]
    msg = (
        f"pipeline {pipeline!r}: {batch.reject_count} of {messages} messages in a batch could not"
        f" be decoded or do not fit the table, more than max_error_ratio {max_ratio:g} allows;"
        f" first: {first['_topic']}/{first['_partition']}@{first['_offset']}:"
        f" {first['error_message']}; nothing from this batch was committed"
    )
    raise TerminalError(msg)


def _reject(raw: RawBatch, i: int, message: str) -> Reject:
    return Reject(
        partition=int(raw.partitions[i]),
        offset=int(raw.offsets[i]),
        timestamp=int(raw.timestamps[i]),
        error=SCHEMA_CONFLICT,
        message=message,
        key=raw.keys[i],
        value=raw.values[i],
        headers=raw.headers[i] if raw.headers is not None else None,
    )
