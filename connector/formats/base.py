"""The decoder contract: a ``RawBatch`` in, one Arrow ``Batch`` out, bad messages set aside.

Every format decodes the values of a batch in bulk (``ValueFormat.decode_values``) and reports the
messages it could not decode as ``Failure``s by position; ``FrameDecoder`` adds what all formats
share: tombstones, the ``_key`` column (decoded with the key format), the metadata columns,
``_headers`` when asked for, and the bookkeeping that turns failures into ``Reject``s.

    decoder.decode(raw) -> Batch                             RecordError on the first bad message
    decoder.decode_tolerant(raw) -> (Batch, [Reject, ...])   bad messages set aside, not raised

Either way ``Batch.ranges`` covers every offset read; with ``decode_tolerant`` each offset is in
exactly one of ``batch.rows``, ``batch.tombstones`` or the rejects. Infrastructure problems (a
schema registry that cannot be reached) are raised as ``TransientError`` in both modes: they are
never a property of one message.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Protocol, cast

import numpy as np
import pyarrow as pa

from connector.batch import Batch
from connector.formats.vector import scatter
from connector.names import METADATA_COLUMNS
from connector.reader import Headers, RawBatch
from kafka_etl.errors import RecordError

HEADERS_COLUMN = "_headers"
HEADERS_TYPE = pa.list_(pa.struct([pa.field("key", pa.string()), pa.field("value", pa.binary())]))

# Error classes of a Failure/Reject, for the dead-letter table and for counting.
WIRE_FORMAT = "wire_format"  # not the Confluent framing: too short, wrong magic byte
UNKNOWN_SCHEMA = "unknown_schema"  # the registry has no schema with this id
UNKNOWN_MESSAGE = "unknown_message"  # a Protobuf message index the schema does not have
MALFORMED = "malformed"  # the bytes do not decode with the writer schema / as JSON
INVALID_UTF8 = "invalid_utf8"
TYPE_CONFLICT = "type_conflict"  # JSON: a field's type differs from earlier messages
METADATA_CLASH = "metadata_clash"  # a field named like one of kafka-etl's metadata columns
BAD_KEY = "bad_key"  # the key does not decode with the key format
MAX_NESTING = 32  # levels of structs/lists in one field; deeper values are set aside


@dataclass(frozen=True, slots=True)
class Failure:
    """Why one message could not be decoded: an error class above and a readable reason."""

    error: str
    message: str


@dataclass(frozen=True, slots=True)
class Reject:
    """A message set aside by ``decode_tolerant``, with everything a dead-letter row needs."""

    partition: int
    offset: int
    timestamp: int  # milliseconds since the epoch
    error: str
    message: str
    key: bytes | None
    value: bytes | None
    headers: Headers = None

    def to_error(self, topic: str) -> RecordError:
        return RecordError(topic, self.partition, self.offset, self.message)


@dataclass(frozen=True, slots=True)
class Decoded:
    """A format's result for a list of values.

    ``table`` has one row per entry of ``rows`` (ascending positions into the input that
    decoded); every other position is in ``failures``. ``scalar`` says the values are not
    records and ``table`` holds them in a single ``value`` column.
    """

    table: pa.Table
    rows: np.ndarray
    failures: dict[int, Failure] = field(default_factory=dict)
    scalar: bool = False

    @staticmethod
    def of(table: pa.Table, n: int, failures: dict[int, Failure], scalar: bool = False) -> Decoded:
        """From a table with one row per input value, dropping the failed ones."""
        if not failures:
            return Decoded(table, np.arange(n, dtype=np.int64), failures, scalar)
        keep = np.ones(n, bool)
        keep[list(failures)] = False
        return Decoded(table.filter(pa.array(keep)), np.flatnonzero(keep), failures, scalar)


class ValueFormat(Protocol):
    """Decodes message values (or keys) of one format in bulk."""

    def decode_values(self, values: Sequence[bytes]) -> Decoded: ...


class Decoder(Protocol):
    def decode(self, raw: RawBatch) -> Batch: ...

    def decode_tolerant(self, raw: RawBatch) -> tuple[Batch, list[Reject]]: ...


class FrameDecoder:
    """A ``Decoder`` built from a value format and a key format."""

    def __init__(
        self, values: ValueFormat, keys: ValueFormat, *, include_headers: bool = False
    ) -> None:
        self.values = values
        self.keys = keys
        self.include_headers = include_headers

    def decode(self, raw: RawBatch) -> Batch:
        batch, rejects = self.decode_tolerant(raw)
        if rejects:
            raise rejects[0].to_error(raw.topic)
        return batch

    def decode_tolerant(self, raw: RawBatch) -> tuple[Batch, list[Reject]]:
        n = len(raw)
        failures: dict[int, Failure] = {}
        keys = self.key_column(raw, failures)
        live, tombstone = _split_tombstones(raw.values)
        values = cast(
            "list[bytes]", raw.values if tombstone is None else [raw.values[i] for i in live]
        )
        decoded = self.values.decode_values(values) if len(live) else _empty()
        for i, failure in decoded.failures.items():
            failures.setdefault(int(live[i]), failure)
        positions = live[decoded.rows]
        table = decoded.table
        table, positions = _drop_failed(table, positions, failures)
        table, positions = self._check_clashes(table, positions, failures)
        rows = _with_metadata(table, self.metadata(raw, keys, positions))
        tombstones = None
        if tombstone is not None:
            gone = np.flatnonzero(tombstone)
            gone = gone[[int(i) not in failures for i in gone]]
            tombstones = _with_metadata(pa.table({}), self.metadata(raw, keys, gone))
        rejects = [_reject(raw, i, failures[i]) for i in sorted(failures)]
        assert (
            rows.num_rows + (0 if tombstones is None else tombstones.num_rows) + len(rejects) == n
        ), "every message is a row, a tombstone or a reject"
        batch = Batch(
            topic=raw.topic,
            rows=rows,
            ranges=raw.ranges,
            tombstones=tombstones,
            message_bytes=raw.nbytes,
        )
        return batch, rejects

    # -- keys, metadata ----------------------------------------------------------------------
    def key_column(self, raw: RawBatch, failures: dict[int, Failure]) -> pa.Array:
        """``_key`` for every message (null for null keys and for keys that failed, which are
        added to ``failures``)."""
        n = len(raw)
        if None in raw.keys:
            where = np.flatnonzero(np.asarray(pa.array(raw.keys, pa.binary()).is_valid()))
        else:
            where = np.arange(n, dtype=np.int64)
        keys = cast("list[bytes]", raw.keys if len(where) == n else [raw.keys[i] for i in where])
        decoded = self.keys.decode_values(keys)
        for i, failure in decoded.failures.items():
            message = failure.message
            message = f"key{message[5:]}" if message.startswith("value ") else f"key: {message}"
            failures.setdefault(int(where[i]), Failure(BAD_KEY, message))
        column = _as_column(decoded)
        good = where[decoded.rows]
        return column if len(good) == n else scatter(column, good, n)

    def metadata(self, raw: RawBatch, keys: pa.Array, positions: np.ndarray) -> pa.Table:
        """The metadata columns (and ``_headers`` if asked for) of the messages at ``positions``."""
        index = pa.array(positions.astype(np.int64))
        n = len(positions)
        columns: dict[str, pa.Array] = {
            "_topic": pa.array([raw.topic], pa.string()).take(pa.array(np.zeros(n, np.int32))),
            "_partition": pa.array(raw.partitions[positions], pa.int32()),
            "_offset": pa.array(raw.offsets[positions], pa.int64()),
            "_timestamp": pa.array(raw.timestamps[positions], pa.int64()).view(
                pa.timestamp("ms", tz="UTC")
            ),
            "_key": keys.take(index),
        }
        if self.include_headers:
            columns[HEADERS_COLUMN] = headers_column(raw.headers, positions)
        return pa.table(columns)

    def _check_clashes(
        self, table: pa.Table, positions: np.ndarray, failures: dict[int, Failure]
    ) -> tuple[pa.Table, np.ndarray]:
        """A value field named like a metadata column would be ambiguous: the messages that
        carry one are set aside, and the (then empty) column is dropped."""
        reserved = {*METADATA_COLUMNS, *([HEADERS_COLUMN] if self.include_headers else [])}
        depths = {f.name: _depth(f.type) for f in table.schema}
        clashes = [
            n
            for n in table.column_names
            if n in reserved or not n or "\x00" in n or depths[n] > MAX_NESTING
        ]
        if not clashes:
            return table, positions
        for name in clashes:
            if name in reserved:
                failure = Failure(
                    METADATA_CLASH,
                    f"field {name!r} clashes with kafka-etl's metadata column of that name",
                )
            elif depths[name] > MAX_NESTING:  # Arrow's C interface stops at 64 levels
                failure = Failure(
                    MALFORMED,
                    f"field {name!r} is nested {depths[name]} levels deep"
                    f" (at most {MAX_NESTING} are supported)",
                )
            else:  # no database can name a column so
                failure = Failure(MALFORMED, f"field name {name!r} cannot be a column name")
            carried = np.asarray(table.column(name).is_valid())
            for i in positions[carried]:
                failures.setdefault(int(i), failure)
        table = table.drop_columns(clashes)
        return _drop_failed(table, positions, failures)


def headers_column(headers: list[Headers] | None, positions: np.ndarray) -> pa.Array:
    """``_headers`` as ``list<struct<key: string, value: binary>>``: Kafka headers keep their
    order and may repeat a key, which a map column (unique keys in DuckDB) could not hold."""
    if headers is None:
        return pa.array([[]] * len(positions), HEADERS_TYPE)
    chosen = [headers[i] or () for i in positions.tolist()]
    counts = np.fromiter(map(len, chosen), np.int64, len(chosen))
    flat = [pair for pairs in chosen for pair in pairs]
    entries = pa.StructArray.from_arrays(
        [pa.array([k for k, _ in flat], pa.string()), pa.array([v for _, v in flat], pa.binary())],
        fields=list(HEADERS_TYPE.value_type),
    )
    offsets = np.zeros(len(chosen) + 1, np.int32)
    np.cumsum(counts, out=offsets[1:])
    return pa.ListArray.from_arrays(pa.array(offsets), entries, type=HEADERS_TYPE)


def _depth(t: pa.DataType) -> int:
    """Levels of nesting of a type (0 for scalars)."""
    if not pa.types.is_nested(t):
        return 0
    return 1 + max((_depth(t.field(i).type) for i in range(t.num_fields)), default=0)


def _as_column(decoded: Decoded) -> pa.Array:
    table = decoded.table
    if decoded.scalar:
        if "value" not in table.column_names:  # no keys at all in this batch
            return pa.nulls(table.num_rows)
        return table.column("value").combine_chunks()
    if table.num_columns == 0:
        return pa.StructArray.from_buffers(pa.struct([]), table.num_rows, [None])
    return pa.StructArray.from_arrays(
        [c.combine_chunks() for c in table.columns], fields=list(table.schema)
    )


def _split_tombstones(values: list[bytes | None]) -> tuple[np.ndarray, np.ndarray | None]:
    n = len(values)
    if None not in values:
        return np.arange(n, dtype=np.int64), None
    tombstone = np.fromiter((v is None for v in values), bool, n)
    return np.flatnonzero(~tombstone), tombstone


def _drop_failed(
    table: pa.Table, positions: np.ndarray, failures: dict[int, Failure]
) -> tuple[pa.Table, np.ndarray]:
    if not failures or not len(positions):
        return table, positions
    keep = ~np.isin(positions, np.fromiter(failures, np.int64, len(failures)))
    if keep.all():
        return table, positions
    return table.filter(pa.array(keep)), positions[keep]


def _with_metadata(values: pa.Table, metadata: pa.Table) -> pa.Table:
    columns = [*values.columns, *metadata.columns]
    names = [*values.column_names, *metadata.column_names]
    return pa.Table.from_arrays(columns, names=names)


def _empty() -> Decoded:
    return Decoded(pa.table({}), np.empty(0, np.int64))


def _reject(raw: RawBatch, i: int, failure: Failure) -> Reject:
    return Reject(
        partition=int(raw.partitions[i]),
        offset=int(raw.offsets[i]),
        timestamp=int(raw.timestamps[i]),
        error=failure.error,
        message=failure.message,
        key=raw.keys[i],
        value=raw.values[i],
        headers=raw.headers[i] if raw.headers is not None else None,
    )
