"""Decoding a micro-batch to Arrow, vectorised.

JSON values are joined with newlines and parsed by ``pyarrow.json`` in one call (multi-threaded,
in C++). Only when that fails, or yields a different number of rows than there were messages, do
we look at messages one by one, to name the offending topic/partition/offset.
"""

from __future__ import annotations

import io
import re
from collections.abc import Sequence
from typing import cast

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc
import pyarrow.json as pj

from connector.batch import METADATA_COLUMNS, Batch
from connector.reader import RawBatch
from kafka_etl.errors import RecordError

_ROW_SUFFIX = re.compile(r"\s*in row \d+$")
_MIN_BLOCK = 4 << 20


class JsonDecoder:
    """Turns ``RawBatch`` JSON objects into an Arrow table with the metadata columns."""

    def __init__(self, explicit: pa.Schema | None = None) -> None:
        self._explicit = explicit

    def decode(self, raw: RawBatch) -> Batch:
        n = len(raw)
        values = cast(list[bytes], raw.values)  # None only where the tombstone mask says so
        tombstone_mask: np.ndarray | None = None
        if n and None in values:
            tombstone_mask = np.fromiter((v is None for v in values), bool, n)
        meta = metadata_columns(raw)
        if tombstone_mask is not None:
            live = pa.array(~tombstone_mask)
            tombstones = meta.filter(pa.array(tombstone_mask))
            meta = meta.filter(live)
            values = [v for v in raw.values if v is not None]
        else:
            tombstones = None
        rows = self._parse(values, raw, tombstone_mask) if values else pa.table({})
        for name in METADATA_COLUMNS:
            if name in rows.column_names:
                # A value field named like a metadata column would be ambiguous: name the
                # first message that carries it.
                row = pc.index(pc.is_valid(rows.column(name)), True).as_py()
                index = int(_live_positions(n, tombstone_mask)[max(row, 0)])
                raise RecordError(
                    raw.topic,
                    int(raw.partitions[index]),
                    int(raw.offsets[index]),
                    f"field {name!r} clashes with kafka-etl's metadata column of that name",
                )
        for name in METADATA_COLUMNS:
            rows = rows.append_column(name, meta.column(name))
        return Batch(
            topic=raw.topic,
            rows=rows,
            ranges=raw.ranges,
            tombstones=tombstones,
            message_bytes=raw.nbytes,
        )

    def _parse(
        self, values: Sequence[bytes], raw: RawBatch, tombstones: np.ndarray | None
    ) -> pa.Table:
        data = b"\n".join(values)
        # A value with a raw newline (pretty-printed JSON) needs the slower, exact splitter.
        embedded_newlines = data.count(b"\n") != len(values) - 1
        longest = max(map(len, values))
        try:
            table = pj.read_json(
                io.BytesIO(data),
                read_options=pj.ReadOptions(block_size=max(_MIN_BLOCK, 2 * longest + 2)),
                parse_options=self._parse_options(embedded_newlines),
            )
        except pa.ArrowInvalid as exc:
            raise self._diagnose(values, raw, tombstones, str(exc)) from None
        if table.num_rows != len(values):
            raise self._diagnose(values, raw, tombstones, "not exactly one JSON object")
        return table

    def _parse_options(self, newlines_in_values: bool) -> pj.ParseOptions:
        if self._explicit is None:
            return pj.ParseOptions(newlines_in_values=newlines_in_values)
        return pj.ParseOptions(
            explicit_schema=self._explicit,
            unexpected_field_behavior="infer",
            newlines_in_values=newlines_in_values,
        )

    def _diagnose(
        self,
        values: Sequence[bytes],
        raw: RawBatch,
        tombstones: np.ndarray | None,
        batch_error: str,
    ) -> RecordError:
        """Find the first message that explains a failed batch (error path only)."""
        positions = _live_positions(len(raw), tombstones)
        first_types: dict[str, pa.DataType] = {}
        for i, value in enumerate(values):
            where = (raw.topic, int(raw.partitions[positions[i]]), int(raw.offsets[positions[i]]))
            reason = _single_error(value, self._parse_options(b"\n" in value))
            if reason is not None:
                return RecordError(*where, reason)
            # Each message parses alone: the batch failed on a type change between messages.
            table = pj.read_json(io.BytesIO(value), parse_options=self._parse_options(True))
            for field in table.schema:
                seen = first_types.setdefault(field.name, field.type)
                if not _same_kind(seen, field.type):
                    return RecordError(
                        *where, f"field {field.name!r} is {field.type}, earlier messages had {seen}"
                    )
        index = int(positions[0]) if len(positions) else 0
        return RecordError(
            raw.topic,
            int(raw.partitions[index]),
            int(raw.offsets[index]),
            f"batch could not be decoded: {_ROW_SUFFIX.sub('', batch_error)}",
        )


def metadata_columns(raw: RawBatch) -> pa.Table:
    """``_topic``, ``_partition``, ``_offset``, ``_timestamp`` and ``_key`` of every message."""
    n = len(raw)
    keys = pa.array(raw.keys, pa.binary())
    try:
        key_text = pc.cast(keys, pa.string())
    except pa.ArrowInvalid:
        bad = next(i for i, k in enumerate(raw.keys) if k is not None and not _is_utf8(k))
        raise RecordError(
            raw.topic, int(raw.partitions[bad]), int(raw.offsets[bad]), "key is not valid UTF-8"
        ) from None
    return pa.table(
        {
            "_topic": pa.array([raw.topic], pa.string()).take(np.zeros(n, np.int32)),
            "_partition": pa.array(raw.partitions, pa.int32()),
            "_offset": pa.array(raw.offsets, pa.int64()),
            "_timestamp": pa.array(raw.timestamps, pa.int64()).cast(pa.timestamp("ms", tz="UTC")),
            "_key": key_text,
        }
    )


def _single_error(value: bytes, options: pj.ParseOptions) -> str | None:
    if not value.strip():
        return "value is empty, not a JSON object"
    try:
        table = pj.read_json(io.BytesIO(value), parse_options=options)
    except pa.ArrowInvalid as exc:
        return f"not a valid JSON object: {_ROW_SUFFIX.sub('', str(exc))}"
    if table.num_rows != 1:
        return f"expected one JSON object, found {table.num_rows}"
    return None


def _same_kind(a: pa.DataType, b: pa.DataType) -> bool:
    if pa.types.is_null(a) or pa.types.is_null(b):
        return True
    numeric = pa.types.is_integer(a) or pa.types.is_floating(a)
    return a == b or (numeric and (pa.types.is_integer(b) or pa.types.is_floating(b)))


def _live_positions(n: int, tombstones: np.ndarray | None) -> np.ndarray:
    return np.arange(n) if tombstones is None else np.flatnonzero(~tombstones)


def _is_utf8(data: bytes) -> bool:
    try:
        data.decode("utf-8")
    except UnicodeDecodeError:
        return False
    return True
