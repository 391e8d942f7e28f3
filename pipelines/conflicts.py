"""``on_schema_conflict: dlq``: messages whose field type the table cannot take are set aside.

Checked in the runner, against the table as the last committed batch left it, before the batch
goes to the sink: for every field in conflict, the messages that carry a value for it become
dead letters (error class ``schema_conflict``, the one-line conflict message as the reason) and
the field is dropped from the batch's remaining rows. The sink then writes both in one
transaction, as it does for messages that could not be decoded.
"""

from __future__ import annotations

import threading
from dataclasses import replace

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc

from connector.batch import Batch
from connector.dead_letters import rejects_table
from connector.formats.base import Reject
from connector.names import IDENTITY_COLUMNS
from connector.reader import RawBatch
from kafka_etl.errors import SchemaConflictError, TerminalError
from sinks.base import TableSpec
from sinks.schema import plan_schema

SCHEMA_CONFLICT = "schema_conflict"
_IDENTITY = IDENTITY_COLUMNS


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


class ErrorBudget:
    """The one error-ratio policy: how many messages a run may set aside before the problem
    counts as systematic (wrong format, a producer bug) and the run fails instead.

    A run fails once its bad messages so far (not decodable, ``on_error: dlq``, or not
    fitting the table, ``on_schema_conflict: dlq``) exceed ``max_ratio`` of the messages it
    has read so far, where fewer than ``min_messages`` read count as ``min_messages``. So one
    bad message in a batch of 11 (a 5-minute schedule, a lag sensor) is dead-lettered, while
    2,000 bad messages of 2,000 still stop the run at the batch that crosses the line, and
    that batch commits nothing. Defaults: 0.01 over at least 1,000, so up to 10 bad messages
    in a small run. Counting is thread-safe: batches are decoded on the reading thread while
    the writer sets aside schema conflicts of the batch before.
    """

    def __init__(self, pipeline: str, max_ratio: float, min_messages: int) -> None:
        self.pipeline = pipeline
        self.max_ratio = max_ratio
        self.min_messages = min_messages
        self.messages = 0
        self.bad = 0
        self._lock = threading.Lock()

    @property
    def allowed(self) -> float:
        return self.max_ratio * max(self.messages, self.min_messages)

    def charge(self, bad: int, messages: int, first: str = "") -> None:
        """Count ``messages`` more read and ``bad`` more set aside (``first`` names the first
        of those: ``topic/partition@offset: reason``); raise ``TerminalError`` past the budget."""
        with self._lock:
            self.messages += messages
            self.bad += bad
            if not bad or self.bad <= self.allowed:
                return
            msg = (
                f"pipeline {self.pipeline!r}: {self.bad:,} of the {self.messages:,} messages read"
                " so far could not be decoded or do not fit the table, more than"
                f" max_error_ratio {self.max_ratio:g} allows (of at least"
                f" {self.min_messages:,} messages, min_messages_for_ratio); first bad one of"
                f" this batch: {first}; nothing from this batch was committed"
            )
        raise TerminalError(msg)


def charge_conflicts(budget: ErrorBudget, before: Batch, after: Batch) -> None:
    """Charge ``budget`` for the messages ``set_aside_conflicts`` added to ``after``."""
    added = after.reject_count - before.reject_count
    if added <= 0 or after.rejects is None:
        return
    conflicts = after.rejects.filter(pc.equal(after.rejects.column("error_class"), SCHEMA_CONFLICT))
    first = conflicts.slice(0, 1).to_pylist()[0]
    where = f"{first['_topic']}/{first['_partition']}@{first['_offset']}"
    budget.charge(added, 0, f"{where}: {first['error_message']}")


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
