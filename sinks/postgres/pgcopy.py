"""PostgreSQL's binary COPY format, encoded from Arrow columns with numpy (no per-row Python).

Binary input costs the server about 40% less than CSV: no number, boolean or timestamp parsing.
Each column is encoded for the exact type of its target column (``int8`` is 8 bytes, ``jsonb``
is a version byte and JSON text, timestamps are microseconds since 2000-01-01); a column of a
type not listed here makes ``encode`` return None and the caller falls back to CSV.

Layout: ``PGCOPY\\n\\377\\r\\n\\0``, flags and extension length (int32 0, 0); per row an int16
field count, per field an int32 length (-1 for NULL) and the bytes; an int16 -1 trailer.
All integers are big-endian.
"""

from __future__ import annotations

from collections.abc import Iterator
from dataclasses import dataclass
from typing import Any

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc
import sqlalchemy as sa
from sqlalchemy.dialects import postgresql
from sqlalchemy.types import TypeEngine

_HEADER = b"PGCOPY\n\xff\r\n\x00" + b"\x00\x00\x00\x00" + b"\x00\x00\x00\x00"
_TRAILER = b"\xff\xff"
_PG_EPOCH_US = 946_684_800_000_000  # 2000-01-01 in microseconds since 1970-01-01
_PG_EPOCH_DAYS = 10_957
_ROWS_PER_JOIN = 16_384  # a few MB per piece, far below Arrow's 2 GiB binary limit


@dataclass(frozen=True, slots=True)
class _Fixed:
    arrow: pa.DataType
    wire: str  # numpy dtype of the big-endian value


_FIXED = {
    "bool": _Fixed(pa.bool_(), "u1"),
    "int2": _Fixed(pa.int16(), ">i2"),
    "int4": _Fixed(pa.int32(), ">i4"),
    "int8": _Fixed(pa.int64(), ">i8"),
    "float4": _Fixed(pa.float32(), ">f4"),
    "float8": _Fixed(pa.float64(), ">f8"),
    "timestamp": _Fixed(pa.int64(), ">i8"),
    "date": _Fixed(pa.int32(), ">i4"),
}


def wire_kind(sql: TypeEngine[Any]) -> str | None:
    """The binary representation a column of this type takes, or None if not supported."""
    if isinstance(sql, postgresql.JSONB):
        return "jsonb"
    if isinstance(sql, sa.JSON):
        return "json"
    if isinstance(sql, sa.Boolean):
        return "bool"
    if isinstance(sql, sa.SmallInteger):
        return "int2"
    if isinstance(sql, sa.BigInteger):
        return "int8"
    if isinstance(sql, sa.Integer):
        return "int4"
    if isinstance(sql, sa.Float):
        return "float4" if isinstance(sql, sa.REAL) or (sql.precision or 53) <= 24 else "float8"
    if isinstance(sql, sa.DateTime):
        return "timestamp"
    if isinstance(sql, sa.Date):
        return "date"
    if isinstance(sql, sa.String) and not isinstance(sql, sa.Enum):
        return "text"
    return None


def stream(rows: pa.Table, kinds: list[str | None]) -> tuple[list[str], Iterator[bytes]] | None:
    """``rows`` (nested values already JSON text) as a binary COPY stream, in pieces of a few
    MB (so the server parses one while the next is encoded), and the column order it uses:
    fixed-width columns without NULLs first, as they form one block per row."""
    if any(k is None for k in kinds) or rows.num_rows == 0:
        return None
    fields = []
    for i, kind in enumerate(kinds):
        assert kind is not None
        field = _field(rows.schema.field(i).name, rows.column(i).combine_chunks(), kind)
        if field is None:
            return None
        fields.append(field)
    fields.sort(key=lambda f: not (f.fixed is not None and bool(f.valid.all())))  # stable
    n = rows.num_rows

    def pieces() -> Iterator[bytes]:
        yield _HEADER
        for start in range(0, n, _ROWS_PER_JOIN):
            yield _rows(fields, start, min(_ROWS_PER_JOIN, n - start))
        yield _TRAILER

    return [f.name for f in fields], pieces()


def encode(rows: pa.Table, kinds: list[str | None]) -> tuple[bytes, list[str]] | None:
    """The whole stream of ``stream`` as one ``bytes``."""
    streamed = stream(rows, kinds)
    if streamed is None:
        return None
    order, pieces = streamed
    return b"".join(pieces), order


@dataclass(frozen=True, slots=True)
class _Encoded:
    """One column: its length field per row (-1 for NULL) and its bytes."""

    name: str
    lengths: np.ndarray  # int32 per row
    valid: np.ndarray  # bool per row
    fixed: np.ndarray | None  # rows x width bytes, for fixed-width types
    text: pa.Array | None  # binary values (NULL where the row is NULL), for text types


def _rows(fields: list[_Encoded], start: int, n: int) -> bytes:
    """Rows ``start .. start+n``: fixed parts gathered into numpy blocks, variable parts joined
    row by row by Arrow's ``binary_join_element_wise`` (C++), no per-row Python."""
    pieces: list[pa.Array] = []
    block = [np.frombuffer(len(fields).to_bytes(2, "big"), np.uint8)[None, :].repeat(n, 0)]
    for f in fields:
        lengths = f.lengths[start : start + n].astype(">i4").view(np.uint8).reshape(n, 4)
        block.append(lengths)
        if f.fixed is not None and f.valid.all():
            block.append(f.fixed[start : start + n])
            continue
        pieces.append(_binary(np.hstack(block)))
        block = []
        if f.fixed is not None:
            pieces.append(_binary(f.fixed[start : start + n], f.valid[start : start + n]))
        else:
            assert f.text is not None
            pieces.append(f.text.slice(start, n))
    if block:
        pieces.append(_binary(np.hstack(block)))
    if len(pieces) == 1:
        return np.ascontiguousarray(block_bytes(pieces[0], n)).tobytes()
    joined = pc.binary_join_element_wise(
        *pieces, pa.scalar(b"", pa.binary()), null_handling="replace", null_replacement=""
    )
    return block_bytes(joined, n).tobytes()


def block_bytes(array: pa.Array, n: int) -> np.ndarray:
    """The concatenated values of a binary array without NULLs (its data buffer)."""
    offsets = np.frombuffer(array.buffers()[1], dtype=np.int32)
    data = np.frombuffer(array.buffers()[2], dtype=np.uint8)
    return data[offsets[array.offset] : offsets[array.offset + n]]


def _binary(matrix: np.ndarray, valid: np.ndarray | None = None) -> pa.Array:
    """A rows x width byte matrix as a binary array (NULL where not ``valid``)."""
    n, width = matrix.shape
    data = pa.py_buffer(np.ascontiguousarray(matrix))
    bitmap = None if valid is None else pa.py_buffer(np.packbits(valid, bitorder="little"))
    fixed = pa.FixedSizeBinaryArray.from_buffers(pa.binary(width), n, [bitmap, data])
    return fixed.cast(pa.binary())


def _field(name: str, array: pa.Array, kind: str) -> _Encoded | None:
    valid = np.asarray(array.is_valid().to_numpy(zero_copy_only=False), dtype=bool)
    if kind in _FIXED:
        return _fixed(name, array, kind, valid)
    return _text(name, array, kind, valid)


def _fixed(name: str, array: pa.Array, kind: str, valid: np.ndarray) -> _Encoded | None:
    spec = _FIXED[kind]
    try:
        if kind == "timestamp":
            if not pa.types.is_timestamp(array.type):
                return None
            array = array.cast(pa.timestamp("us", array.type.tz), safe=False).cast(pa.int64())
        elif kind == "date":
            if not pa.types.is_date32(array.type):
                return None
            array = array.cast(pa.int32())
        elif array.type != spec.arrow:
            array = array.cast(spec.arrow)
    except (pa.ArrowInvalid, pa.ArrowNotImplementedError):
        return None
    values = np.asarray(array.fill_null(False if kind == "bool" else 0).to_numpy(False))
    if kind == "timestamp":
        values = values - _PG_EPOCH_US
    elif kind == "date":
        values = values - _PG_EPOCH_DAYS
    wire = values.astype(spec.wire)
    width = wire.dtype.itemsize
    lengths = np.where(valid, width, -1).astype(np.int32)
    return _Encoded(name, lengths, valid, wire.view(np.uint8).reshape(-1, width), None)


def _text(name: str, array: pa.Array, kind: str, valid: np.ndarray) -> _Encoded | None:
    t = array.type
    if not (pa.types.is_string(t) or pa.types.is_large_string(t) or pa.types.is_string_view(t)):
        return None
    text = array.cast(pa.binary())
    if kind == "jsonb":  # jsonb's binary input: version 1, then the JSON text
        text = pc.binary_join_element_wise(pa.scalar(b"\x01"), text, pa.scalar(b""))
    sizes = pc.binary_length(text).fill_null(-1).to_numpy(zero_copy_only=False)
    return _Encoded(name, sizes.astype(np.int32), valid, None, text)
