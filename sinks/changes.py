"""What an upsert batch changes: the last state per key, and the tombstones to apply.

Which message is newer (the rule every sink applies, in the batch and against stored rows):

* same topic and partition: the higher offset is newer (Kafka's order, nothing else counts);
* different partitions (a key that moved, or a key made of value fields): the later
  ``_timestamp`` is newer; on equal timestamps a stored row is kept, and within one batch the
  higher (topic, partition) wins so the choice is deterministic.

That is why upsert tables store ``_topic``, ``_partition``, ``_offset`` and ``_timestamp`` on every
row: an update or delete only applies when the incoming message is newer than the stored row, so
replays and backfills cannot regress data.

Tombstones carry no value, only the Kafka key; a tombstone therefore deletes the row(s) whose stored
``_key`` equals its key, whatever the ``key:`` columns are. Within a batch, a row is dropped when a
newer tombstone for its ``_key`` follows it (update, tombstone, update: the last update stays).

A delete also leaves a marker (``sinks.delete_markers``): a stored tombstone, compared with the
same rule. ``without_deleted`` drops the upserts whose Kafka key has a marker that is newer;
as with any stored row, a tie (other partition, same timestamp) goes to the marker.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc

from connector.batch import Batch
from connector.names import IDENTITY_COLUMNS
from kafka_etl.errors import RecordError
from sinks.base import TableSpec

_ORDER = (*IDENTITY_COLUMNS, "_timestamp")
_INDEX = "__kafka_etl_row"


@dataclass(frozen=True, slots=True)
class Changes:
    upserts: pa.Table  # one row per key: its newest state in the batch
    deletes: pa.Table  # metadata columns of the newest tombstone per Kafka key
    skipped: int  # tombstones not applied (delete_on_tombstone off, or no Kafka key)


def reduce_batch(batch: Batch, rows: pa.Table, spec: TableSpec) -> Changes:
    """Collapse ``rows`` (the batch's rows, fitted to the table) and its tombstones per key."""
    check_keys(batch.topic, rows, spec)
    tombstones = batch.tombstones
    empty = pa.table({name: pa.array([], pa.null()) for name in (*_ORDER, "_key")})
    if not spec.delete_on_tombstone or tombstones is None or tombstones.num_rows == 0:
        return Changes(last_per_key(rows, spec.key), empty, batch.tombstone_count)
    keyed = tombstones.filter(pc.is_valid(tombstones.column("_key")))
    deletes = last_per_key(keyed, ("_key",))
    rows = _drop_deleted(rows, deletes)
    return Changes(last_per_key(rows, spec.key), deletes, tombstones.num_rows - keyed.num_rows)


def without_deleted(changes: Changes, markers: pa.Table) -> Changes:
    """``changes`` without the upserts that stored delete markers (``_key`` and the delete's
    ``_topic``, ``_partition``, ``_offset``, ``_timestamp``) say were deleted later."""
    if markers.num_rows == 0 or changes.upserts.num_rows == 0:
        return changes
    rows = changes.upserts
    names = ["_key", *_ORDER]
    markers = markers.select(names).cast(pa.schema([rows.schema.field(n) for n in names]))
    upserts = _drop_deleted(rows, markers, stored=True)
    return Changes(upserts, changes.deletes, changes.skipped)


def check_keys(topic: str, rows: pa.Table, spec: TableSpec) -> None:
    """Every upsert row needs a value in every key column; the error names the message."""
    for name in spec.key:
        if name not in rows.column_names:
            if rows.num_rows == 0:
                continue
            raise _key_error(topic, rows, 0, f"key column {name!r} is missing from the value")
        column = rows.column(name)
        if pa.types.is_nested(column.type):
            raise _key_error(topic, rows, 0, f"key column {name!r} holds {column.type}")
        if column.null_count:
            first = int(np.flatnonzero(pc.is_null(column).to_numpy(zero_copy_only=False))[0])
            raise _key_error(topic, rows, first, f"key column {name!r} is null")


def _key_error(topic: str, rows: pa.Table, index: int, reason: str) -> RecordError:
    partition = int(rows.column("_partition")[index].as_py())
    offset = int(rows.column("_offset")[index].as_py())
    return RecordError(topic, partition, offset, reason)


def last_per_key(table: pa.Table, key: tuple[str, ...]) -> pa.Table:
    """The newest row per ``key`` by the rule above, in no particular order."""
    if table.num_rows <= 1:
        return table
    # Within one partition the highest offset, then across partitions the latest timestamp.
    newest = _last_of_groups(table, [*key, "_topic", "_partition"], ["_offset"])
    return _last_of_groups(newest, list(key), ["_timestamp", "_topic", "_partition"])


def _last_of_groups(table: pa.Table, group: list[str], order: list[str]) -> pa.Table:
    """Sort by ``group`` then ``order``; keep the last row of every group."""
    if table.num_rows <= 1:
        return table
    indices = pc.sort_indices(table, sort_keys=[(c, "ascending") for c in [*group, *order]])
    ordered = table.take(indices)
    n = ordered.num_rows
    boundary = np.zeros(n - 1, dtype=bool)
    for name in group:
        column = ordered.column(name)
        changed = pc.not_equal(column.slice(1), column.slice(0, n - 1))
        boundary |= changed.to_numpy(zero_copy_only=False).astype(bool)
    last = np.append(np.flatnonzero(boundary), n - 1)
    return ordered.take(pa.array(last))


def _drop_deleted(rows: pa.Table, deletes: pa.Table, *, stored: bool = False) -> pa.Table:
    """Rows followed by a newer tombstone for their Kafka key: in the same batch, or
    ``stored`` (delete markers, which keep a tie across partitions, like a stored row)."""
    if rows.num_rows == 0 or deletes.num_rows == 0:
        return rows
    left = rows.select(["_key", *_ORDER]).append_column(
        _INDEX, pa.array(np.arange(rows.num_rows, dtype=np.int64))
    )
    right = deletes.select(["_key", *_ORDER]).rename_columns(
        ["_key", *(f"t{name}" for name in _ORDER)]
    )
    pairs = left.join(right, keys="_key", join_type="inner", use_threads=False)
    if pairs.num_rows == 0:
        return rows
    same = pc.and_(
        pc.equal(pairs.column("_topic"), pairs.column("t_topic")),
        pc.equal(pairs.column("_partition"), pairs.column("t_partition")),
    )
    newer = pc.if_else(
        same,
        pc.greater(pairs.column("t_offset"), pairs.column("_offset")),
        (pc.greater_equal if stored else pc.greater)(
            pairs.column("t_timestamp"), pairs.column("_timestamp")
        ),
    )
    gone = pairs.column(_INDEX).filter(newer).to_numpy()
    keep = np.ones(rows.num_rows, dtype=bool)
    keep[gone] = False
    return rows.filter(pa.array(keep))
