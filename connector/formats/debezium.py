"""Debezium change events (``envelope: debezium``): a replica of the source table.

A value is Debezium's envelope ``{before, after, source, op, ts_ms}`` (read by the JSON
converter's format, with or without schemas, or Connect's Avro), decoded for the whole batch at
once; this module then splits the batch by ``op``, column by column:

* ``c`` (create), ``r`` (snapshot read), ``u`` (update): the ``after`` image is the row;
* ``d`` (delete): a delete of the row's identity, in ``Batch.tombstones`` (so the sinks' guarded
  delete applies it, as a tombstone's);
* a null value (Debezium's tombstone after a ``d``, for log compaction): skipped and counted
  (``Batch.tombstones_skipped``): the ``d`` before it already deleted the row;
* ``t`` (truncate): refused, the run stops (see ``TruncateError``): a replica that silently kept
  the truncated rows would be wrong, and deleting "every row older than the truncate" has no
  meaning across partitions;
* ``m`` (a logical decoding message), an unknown ``op``, no ``op``, a ``c``/``r``/``u`` without
  ``after``: rejects (dead-letter path).

The row identity is ``_key``: the canonical JSON text (``{"id":1}``) of the identity fields, the
same for a row and for the delete of that row however the key was sent (with or without a
schema, JSON or Avro). Without ``key:`` those are the record key's fields; with ``key:`` they are
the named fields of ``after`` (rows) or ``before`` (deletes; the record key's fields of those
names where ``before`` lacks them).

Each row and delete also gets ``_op``, ``_source_ts`` (when the source made the change) and the
source position columns its ``source`` block has (``connector.names.SOURCE_POSITION_COLUMNS``).
"""

from __future__ import annotations

import json
from collections.abc import Sequence

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc

from connector.batch import Batch
from connector.formats.base import (
    BAD_KEY,
    HEADERS_COLUMN,
    MALFORMED,
    METADATA_CLASH,
    Failure,
    FrameDecoder,
    Reject,
    ValueFormat,
    _reject,
    _with_metadata,
)
from connector.formats.vector import scatter
from connector.names import (
    METADATA_COLUMNS,
    OP_COLUMN,
    SOURCE_POSITION_COLUMNS,
    SOURCE_TS_COLUMN,
)
from connector.reader import RawBatch
from kafka_etl.errors import RecordError

UNSUPPORTED_OP = "unsupported_op"
NOT_AN_EVENT = "not_debezium"
_UPSERTS = ("c", "r", "u")
_POSITION_TYPES = {"lsn": pa.int64(), "file": pa.string(), "pos": pa.int64(), "gtid": pa.string()}


class TruncateError(RecordError):
    """A ``t`` event: the replica would keep rows the source no longer has."""


class DebeziumDecoder:
    """A ``Decoder`` for Debezium change events; ``key`` is the pipeline's ``key:`` (None: the
    record key's fields are the identity)."""

    def __init__(
        self,
        values: ValueFormat,
        keys: ValueFormat,
        *,
        key: tuple[str, ...] | None = None,
        include_headers: bool = False,
        pipeline: str = "",
    ) -> None:
        self.values = values
        self.keys = keys
        self.key = key
        self.pipeline = pipeline
        self.frame = FrameDecoder(values, keys, include_headers=include_headers)

    def decode(self, raw: RawBatch) -> Batch:
        batch, rejects = self.decode_tolerant(raw)
        if rejects:
            raise rejects[0].to_error(raw.topic)
        return batch

    def decode_tolerant(self, raw: RawBatch) -> tuple[Batch, list[Reject]]:
        n = len(raw)
        failures: dict[int, Failure] = {}
        values_at = np.empty(n, dtype=object)
        values_at[:] = raw.values
        is_null: np.ndarray = values_at == None  # noqa: E711 (elementwise, in C)
        record_keys = self._record_keys(raw, failures)
        for i in [i for i in failures if is_null[i]]:  # a skipped tombstone needs no key
            del failures[i]
        live = np.flatnonzero(~is_null)
        values = [raw.values[i] for i in live.tolist()] if len(live) != n else raw.values
        decoded = self.values.decode_values(values)  # type: ignore[arg-type]
        for i, failure in decoded.failures.items():
            failures.setdefault(int(live[i]), failure)
        positions = live[decoded.rows]
        events = decoded.table
        op = self._ops(raw, events, positions, failures)
        identity = self._identity(events, positions, record_keys, op, n, failures)
        upsert = np.isin(op, _UPSERTS)
        delete = op == "d"
        after = _struct(events, "after")
        valid = np.asarray(after.is_valid()) if after is not None else np.zeros(len(op), bool)
        missing = upsert & ~valid
        for i in positions[missing].tolist():
            failures.setdefault(
                i, Failure(NOT_AN_EVENT, f"op {_op_at(op, positions, i)!r} has no 'after' image")
            )
        ok = ~np.isin(positions, np.fromiter(failures, np.int64, len(failures)))
        keys_column = identity
        change = _change_columns(events)
        row_sel = np.flatnonzero(ok & upsert)
        rows_table = _after_columns(after, row_sel)
        rows_table, row_sel = self._clashes(rows_table, row_sel, positions, failures)
        rows = _with_metadata(rows_table, self.frame.metadata(raw, keys_column, positions[row_sel]))
        rows = _with_metadata(rows, change.take(pa.array(row_sel, pa.int64())))
        ok = ~np.isin(positions, np.fromiter(failures, np.int64, len(failures)))
        del_sel = np.flatnonzero(ok & delete)
        tombstones = self.frame.metadata(raw, keys_column, positions[del_sel])
        if HEADERS_COLUMN in tombstones.column_names:
            tombstones = tombstones.drop_columns([HEADERS_COLUMN])
        rejects = [_reject(raw, i, failures[i]) for i in sorted(failures)]
        skipped = int(is_null.sum())
        assert rows.num_rows + tombstones.num_rows + len(rejects) + skipped == n, (
            "every message is a row, a delete, a reject or a skipped tombstone"
        )
        batch = Batch(
            topic=raw.topic,
            rows=rows,
            ranges=raw.ranges,
            tombstones=tombstones,
            message_bytes=raw.nbytes,
            tombstones_skipped=skipped,
        )
        return batch, rejects

    # -- parts ---------------------------------------------------------------------------------
    def _record_keys(self, raw: RawBatch, failures: dict[int, Failure]) -> pa.Table:
        """The decoded record key of every message: a table of its fields, one row per message
        (nulls for null keys and keys that failed, which are added to ``failures``)."""
        n = len(raw)
        where = np.flatnonzero(np.asarray(pa.array(raw.keys, pa.binary()).is_valid()))
        keys = [raw.keys[i] for i in where.tolist()]
        decoded = self.keys.decode_values(keys)  # type: ignore[arg-type]
        for i, failure in decoded.failures.items():
            failures.setdefault(int(where[i]), Failure(BAD_KEY, f"key: {failure.message}"))
        good = where[decoded.rows]
        table = decoded.table
        if decoded.scalar and self.key is not None:
            return pa.table({})  # the identity comes from the value's fields
        if decoded.scalar:
            failures.update(
                {
                    int(i): Failure(BAD_KEY, "key: not a record of the key's fields")
                    for i in good.tolist()
                }
            )
            return pa.table({})
        return pa.table(
            {
                name: scatter(table.column(name).combine_chunks(), good, n)
                for name in table.column_names
            }
        )

    def _ops(
        self, raw: RawBatch, events: pa.Table, positions: np.ndarray, failures: dict[int, Failure]
    ) -> np.ndarray:
        """``op`` of every decoded event ('' where it is missing, which is a reject)."""
        if "op" not in events.column_names or not pa.types.is_string(events.column("op").type):
            reason = "not a Debezium change event: no 'op' field"
            if "payload" in events.column_names and "op" not in events.column_names:
                reason += " (a 'payload' without the JSON converter's 'schema' before it?)"
            for i in positions.tolist():
                failures.setdefault(i, Failure(NOT_AN_EVENT, reason))
            return np.full(len(positions), "", object)
        encoded = pc.dictionary_encode(pc.fill_null(events.column("op"), "").combine_chunks())
        names = np.asarray(encoded.dictionary.to_pylist() or [""], object)
        op = names[encoded.indices.to_numpy(zero_copy_only=False)]
        known = np.isin(op, (*_UPSERTS, "d"))
        for j in np.flatnonzero(~known).tolist():
            i = int(positions[j])
            value = op[j]
            if value == "t":
                msg = (
                    "op 't' (the source table was truncated): kafka-etl does not truncate a"
                    " replica; truncate the table, then move past this event with `kafka-etl"
                    f" reset {self.pipeline or 'NAME'} --partition {int(raw.partitions[i])}"
                    f" --to-offset {int(raw.offsets[i]) + 1}`, or skip truncates at the source"
                    " (Debezium's skipped.operations=t)"
                )
                raise TruncateError(raw.topic, int(raw.partitions[i]), int(raw.offsets[i]), msg)
            if value == "m":
                reason = "op 'm' (a logical decoding message) is no change to a row"
            elif value == "":
                reason = "not a Debezium change event: no 'op' field"
            else:
                reason = f"unknown Debezium op {value!r} (expected c, r, u, d or t)"
            failures.setdefault(i, Failure(UNSUPPORTED_OP if value else NOT_AN_EVENT, reason))
        return op

    def _identity(
        self,
        events: pa.Table,
        positions: np.ndarray,
        record_keys: pa.Table,
        op: np.ndarray,
        n: int,
        failures: dict[int, Failure],
    ) -> pa.Array:
        """``_key`` of every message (by position): the canonical identity text, or null."""
        keys_at = (
            record_keys.take(pa.array(positions, pa.int64())) if record_keys.num_columns else None
        )
        if self.key is None:
            if keys_at is None or keys_at.num_columns == 0:
                text = pa.nulls(len(positions), pa.string())
            else:
                text = canonical_text(keys_at, keys_at.column_names)
            reason = (
                "no record key: the source table has no primary key (set Debezium's"
                " message.key.columns, or the pipeline's key:)"
            )
        else:
            after = _struct(events, "after")
            before = _struct(events, "before")
            names = list(self.key)
            image = _image(after, names, len(positions))
            old = _image(before, names, len(positions))
            if keys_at is not None:
                old = _fill(old, keys_at, names)
            is_delete = pa.array(op == "d")
            text = pc.if_else(is_delete, canonical_text(old, names), canonical_text(image, names))
            reason = f"no value for the key field(s) {', '.join(names)}"
        missing = np.asarray(pc.is_null(text)) & (op != "")
        for i in positions[missing].tolist():
            failures.setdefault(i, Failure(MALFORMED, reason))
        return scatter(text, positions, n)

    def _clashes(
        self,
        table: pa.Table,
        sel: np.ndarray,
        positions: np.ndarray,
        failures: dict[int, Failure],
    ) -> tuple[pa.Table, np.ndarray]:
        """``after`` fields named like a metadata column would be ambiguous: set aside."""
        reserved = {*METADATA_COLUMNS, OP_COLUMN, SOURCE_TS_COLUMN, *SOURCE_POSITION_COLUMNS}
        if self.frame.include_headers:
            reserved.add(HEADERS_COLUMN)
        clashes = [c for c in table.column_names if c in reserved or not c]
        if not clashes:
            return table, sel
        bad = np.zeros(len(sel), bool)
        for name in clashes:
            carried = np.asarray(table.column(name).is_valid())
            for i in positions[sel[carried]].tolist():
                failures.setdefault(
                    i,
                    Failure(
                        METADATA_CLASH,
                        f"field {name!r} clashes with kafka-etl's metadata column of that name",
                    ),
                )
            bad |= carried
        table = table.drop_columns(clashes).filter(pa.array(~bad))
        return table, sel[~bad]


def canonical_text(table: pa.Table, names: Sequence[str]) -> pa.Array:
    """``{"a":1,"b":"x"}`` per row: the fields ``names`` of ``table`` as compact JSON, in that
    order; null where every one of them is null (a missing identity)."""
    n = table.num_rows
    if not names or n == 0:
        return pa.nulls(n, pa.string())
    parts: list[pa.Array] = []
    any_value = np.zeros(n, bool)
    for k, name in enumerate(names):
        column = (
            table.column(name).combine_chunks()
            if name in table.column_names
            else pa.nulls(n, pa.string())
        )
        any_value |= np.asarray(column.is_valid())
        prefix = ("{" if k == 0 else ",") + json.dumps(name) + ":"
        parts.append(pa.array([prefix] * n, pa.string()) if n else pa.array([], pa.string()))
        parts.append(pc.fill_null(_json_value(column), "null"))
    parts.append(pa.array(["}"] * n, pa.string()))
    text = pc.binary_join_element_wise(*parts, "")
    return pc.if_else(pa.array(any_value), text, pa.scalar(None, pa.string()))


def _json_value(column: pa.Array) -> pa.Array:
    t = column.type
    if pa.types.is_integer(t) or pa.types.is_decimal(t) or pa.types.is_floating(t):
        return column.cast(pa.string())
    if pa.types.is_boolean(t):
        return column.cast(pa.string())
    if pa.types.is_null(t):
        return pa.nulls(len(column), pa.string())
    if pa.types.is_string(t) or pa.types.is_large_string(t) or pa.types.is_temporal(t):
        text = column.cast(pa.string())
        if pc.any(pc.match_substring_regex(text, "[\\x00-\\x1f]")).as_py():
            return pa.array([None if v is None else json.dumps(v) for v in text.to_pylist()])
        text = pc.replace_substring(text, "\\", "\\\\")
        text = pc.replace_substring(text, '"', '\\"')
        return pc.binary_join_element_wise('"', text, '"', "")
    # Bytes, structs, lists: rare in a key; rendered one by one.
    return pa.array(
        [
            None if v is None else json.dumps(v.hex() if isinstance(v, bytes) else v, default=str)
            for v in column.to_pylist()
        ],
        pa.string(),
    )


def _struct(events: pa.Table, name: str) -> pa.StructArray | None:
    if name not in events.column_names:
        return None
    column = events.column(name).combine_chunks()
    return column if pa.types.is_struct(column.type) else None


def _image(struct: pa.StructArray | None, names: Sequence[str], n: int) -> pa.Table:
    columns: dict[str, pa.Array] = {}
    for name in names:
        child = _child(struct, name)
        columns[name] = child if child is not None else pa.nulls(n, pa.string())
    return pa.table(columns)


def _fill(image: pa.Table, keys: pa.Table, names: Sequence[str]) -> pa.Table:
    """``image`` with null fields taken from the record key's fields of the same name."""
    columns = {}
    for name in names:
        mine = image.column(name).combine_chunks()
        if name in keys.column_names and mine.null_count:
            theirs = keys.column(name).combine_chunks()
            if pa.types.is_null(mine.type):
                mine = theirs
            elif theirs.type == mine.type:
                mine = pc.coalesce(mine, theirs)
        columns[name] = mine
    return pa.table(columns)


def _child(struct: pa.StructArray | None, name: str) -> pa.Array | None:
    if struct is None:
        return None
    for i in range(struct.type.num_fields):
        if struct.type.field(i).name == name:
            child = struct.field(i)
            if struct.offset or len(child) != len(struct):
                child = child.slice(struct.offset, len(struct))
            if struct.null_count:
                child = pc.if_else(pc.is_valid(struct), child, pa.scalar(None, child.type))
            return child
    return None


def _after_columns(after: pa.StructArray | None, sel: np.ndarray) -> pa.Table:
    """The fields of the ``after`` images at ``sel``, as columns."""
    if after is None:
        return pa.table({})
    taken = after.take(pa.array(sel, pa.int64()))
    return pa.Table.from_arrays(taken.flatten(), names=[f.name for f in taken.type])


def _change_columns(events: pa.Table) -> pa.Table:
    """``_op``, ``_source_ts`` and the source's position columns, one row per event."""
    n = events.num_rows
    op = events.column("op") if "op" in events.column_names else pa.nulls(n, pa.string())
    columns: dict[str, pa.Array] = {OP_COLUMN: op.cast(pa.string())}
    source = _struct(events, "source")
    ts = _child(source, "ts_ms")
    if ts is None or pa.types.is_null(ts.type):
        ts = pa.nulls(n, pa.int64())
    columns[SOURCE_TS_COLUMN] = (
        ts
        if pa.types.is_timestamp(ts.type)
        else ts.cast(pa.int64()).view(pa.timestamp("ms", tz="UTC"))
    )
    for column, field in SOURCE_POSITION_COLUMNS.items():
        value = _child(source, field)
        if value is not None:
            kind = _POSITION_TYPES[field]
            columns[column] = value.cast(kind)
    return pa.table(columns)


def _op_at(op: np.ndarray, positions: np.ndarray, i: int) -> str:
    return str(op[int(np.flatnonzero(positions == i)[0])])
