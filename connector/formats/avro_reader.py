"""Avro binary to Arrow, column by column, for every message of a batch at once.

Each reader (built from a writer schema by ``avro_schema.compile_schema``) knows its Arrow type
and consumes its value for a set of rows with numpy operations (see ``vector``). Rows are
checked as strictly as the encoding allows: a value running past the end of its message, an
out-of-range union branch or enum index, a decimal wider than its precision, invalid UTF-8 in a
string, or bytes left over after the record all fail that row, with a reason, and never the
batch.
"""

from __future__ import annotations

import numpy as np
import pyarrow as pa

from connector.formats.vector import (
    Cursor,
    as_text,
    binary_array,
    list_offsets,
    map_array,
    regroup,
    scatter,
)

MAX_ZERO_WIDTH_ITEMS = 1_000_000  # per array/map block whose items take no bytes (e.g. nulls)


class Reader:
    """Reads one Avro type for a set of rows; ``type`` is its Arrow type."""

    type: pa.DataType
    min_size = 1  # bytes every value takes at least (0 for null and empty records)

    def read(self, cur: Cursor, rows: np.ndarray) -> pa.Array:
        raise NotImplementedError


class Null(Reader):
    type = pa.null()
    min_size = 0

    def read(self, cur: Cursor, rows: np.ndarray) -> pa.Array:
        return pa.nulls(len(rows))


class Boolean(Reader):
    type = pa.bool_()

    def read(self, cur: Cursor, rows: np.ndarray) -> pa.Array:
        at = cur.fixed(rows, 1, "boolean")
        byte = cur.data[at]
        if (byte > 1).any():
            cur.fail(rows[byte > 1], "boolean byte is neither 0 nor 1")
        return pa.array(byte == 1)


class Int(Reader):
    """int/long; ``logical`` views the integers as a date/time type, after ``scale``."""

    def __init__(self, bits: int, logical: pa.DataType | None = None, scale: int = 1) -> None:
        self.bits = bits
        self.type = logical or (pa.int32() if bits == 32 else pa.int64())
        self.scale = scale

    def read(self, cur: Cursor, rows: np.ndarray) -> pa.Array:
        value = cur.zigzag(rows, "int" if self.bits == 32 else "long")
        if self.bits == 32:
            out = (value < -(2**31)) | (value >= 2**31)
            if out.any():
                cur.fail(rows[out], "int value does not fit 32 bits")
            if self.scale != 1:
                array = pa.array(value * self.scale)
            else:
                array = pa.array(value.astype(np.int32))
        else:
            array = pa.array(value)
        return array if array.type == self.type else array.view(self.type)


class Float(Reader):
    def __init__(self, bits: int) -> None:
        self.dtype = np.dtype("<f4" if bits == 32 else "<f8")
        self.type = pa.float32() if bits == 32 else pa.float64()

    def read(self, cur: Cursor, rows: np.ndarray) -> pa.Array:
        return pa.array(cur.little_endian(rows, self.dtype, str(self.type)))


class Bytes(Reader):
    """``bytes`` and ``string`` (length-prefixed), and ``fixed`` (``size`` given)."""

    def __init__(self, text: bool = False, size: int | None = None) -> None:
        self.text = text
        self.size = size
        self.type = pa.string() if text else pa.binary()
        self.min_size = 1 if size is None else size

    def spans(self, cur: Cursor, rows: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        if self.size is not None:
            return cur.fixed(rows, self.size, "fixed"), np.full(len(rows), self.size, np.int64)
        what = "string" if self.text else "bytes"
        lengths = cur.zigzag(rows, f"{what} length")
        return cur.span(rows, lengths, what), np.maximum(lengths, 0)

    def read(self, cur: Cursor, rows: np.ndarray) -> pa.Array:
        starts, lengths = self.spans(cur, rows)
        lengths = np.where(cur.code[rows] == 0, lengths, 0)
        raw = binary_array(cur.data, starts, lengths)
        return as_text(cur, rows, raw, "string") if self.text else raw


class Decimal(Reader):
    """Big-endian two's complement bytes (or fixed) -> decimal128/256."""

    def __init__(self, precision: int, scale: int, size: int | None) -> None:
        self.bytes = Bytes(size=size)
        self.width = 16 if precision <= 38 else 32
        factory = pa.decimal128 if precision <= 38 else pa.decimal256
        self.type = factory(precision, scale)
        self.widest = factory(38 if precision <= 38 else 76, scale)
        self.min_size = self.bytes.min_size

    def read(self, cur: Cursor, rows: np.ndarray) -> pa.Array:
        starts, lengths = self.bytes.spans(cur, rows)
        lengths = np.where(cur.code[rows] == 0, lengths, 0)
        w = self.width
        first = cur.data[np.clip(starts, 0, len(cur.data) - 1)]
        fill = np.where((lengths > 0) & (first >= 0x80), 0xFF, 0).astype(np.uint8)
        # Right-align each value in w bytes, sign-extended; longer values must be sign padding.
        k = np.arange(w)
        src = starts[:, None] + lengths[:, None] - w + k[None, :]
        inside = k[None, :] >= (w - lengths)[:, None]
        matrix = np.where(inside, cur.data[np.clip(src, 0, len(cur.data) - 1)], fill[:, None])
        too_long = lengths > w
        if too_long.any():
            for i in np.flatnonzero(too_long):
                head = cur.data[starts[i] : starts[i] + lengths[i] - w]
                if not (head == fill[i]).all() or (matrix[i, 0] ^ fill[i]) & 0x80:
                    cur.fail(rows[i : i + 1], f"decimal value does not fit {self.type}")
        little = np.ascontiguousarray(matrix[:, ::-1]).astype(np.uint8)
        buffers = [None, pa.py_buffer(little.tobytes())]
        widest = pa.Array.from_buffers(self.widest, len(rows), buffers)
        try:
            return widest.cast(self.type)
        except pa.ArrowInvalid:  # error path: find the values with more digits than allowed
            limit = 10 ** (self.type.precision - self.type.scale)
            values = widest.to_pylist()
            bad = np.array([v is not None and abs(v) >= limit for v in values])
            cur.fail(rows[bad], f"decimal value has more digits than {self.type} allows")
            return pa.array([None if b else v for v, b in zip(values, bad, strict=True)], self.type)


class Uuid(Reader):
    """``uuid`` on ``fixed(16)``: formatted as text (rare; on ``string`` it is a plain string)."""

    type = pa.string()
    min_size = 16

    def read(self, cur: Cursor, rows: np.ndarray) -> pa.Array:
        import uuid

        raw = Bytes(size=16).read(cur, rows)
        return pa.array([None if b is None else str(uuid.UUID(bytes=b)) for b in raw.to_pylist()])


class Enum(Reader):
    def __init__(self, symbols: list[str]) -> None:
        self.symbols = pa.array(symbols, pa.string())
        self.type = pa.string()

    def read(self, cur: Cursor, rows: np.ndarray) -> pa.Array:
        index = cur.zigzag(rows, "enum index")
        bad = (index < 0) | (index >= len(self.symbols))
        if bad.any():
            cur.fail(rows[bad], f"enum index out of range (the schema has {len(self.symbols)})")
            index = np.where(bad, 0, index)
        return self.symbols.take(pa.array(index))


class Record(Reader):
    def __init__(self, name: str) -> None:
        self.name = name
        self.fields: list[tuple[str, Reader]] = []

    def finish(self) -> None:
        self.type = pa.struct([pa.field(n, r.type) for n, r in self.fields])
        self.min_size = sum(r.min_size for _, r in self.fields)

    def read(self, cur: Cursor, rows: np.ndarray) -> pa.Array:
        children = [reader.read(cur, rows) for _, reader in self.fields]
        if not children:
            return pa.StructArray.from_buffers(self.type, len(rows), [None])
        return pa.StructArray.from_arrays(children, fields=list(self.type))


class Array(Reader):
    """Arrays and maps: blocks of items, read one item of every unfinished row per round."""

    def __init__(self, items: Reader, keys: bool = False) -> None:
        self.items = items
        self.keys = Bytes(text=True) if keys else None
        if keys:
            self.type = pa.map_(pa.string(), items.type)
        else:
            self.type = pa.list_(items.type)
        item_size = items.min_size + (1 if keys else 0)
        self.item_size = item_size

    def read(self, cur: Cursor, rows: np.ndarray) -> pa.Array:
        n = len(rows)
        counts = np.zeros(n, np.int64)
        left = np.zeros(n, np.int64)  # items left in the current block
        active = np.arange(n)
        key_pieces: list[pa.Array] = []
        pieces: list[pa.Array] = []
        owners: list[np.ndarray] = []
        while active.size:
            need = active[left[active] == 0]
            if need.size:
                self._next_block(cur, rows, need, left)
                active = active[(left[active] > 0) & (cur.code[rows[active]] == 0)]
                if not active.size:
                    break
            if self.keys is not None:
                key_pieces.append(self.keys.read(cur, rows[active]))
            pieces.append(self.items.read(cur, rows[active]))
            owners.append(active)
            counts[active] += 1
            left[active] -= 1
        values = regroup(pieces, owners, self.items.type)
        if self.keys is None:
            return pa.ListArray.from_arrays(list_offsets(counts), values)
        keys = regroup(key_pieces, owners, pa.string())
        return map_array(counts, keys, values, self.type)

    def _next_block(
        self, cur: Cursor, rows: np.ndarray, need: np.ndarray, left: np.ndarray
    ) -> None:
        ids = rows[need]
        count = cur.zigzag(ids, "block count")
        negative = count < 0
        if negative.any():  # a negative count is followed by the block's size in bytes
            cur.zigzag(ids[negative], "block size")
            count = np.abs(count)
        limit = cur.remaining(ids) // self.item_size if self.item_size else MAX_ZERO_WIDTH_ITEMS
        bad = count > limit
        if bad.any():
            cur.fail(ids[bad], "truncated: block count exceeds the bytes left in the message")
        count[bad | (cur.code[ids] != 0)] = 0
        left[need] = count


class Union(Reader):
    def __init__(self, branches: list[tuple[str, Reader]]) -> None:
        self.branches = branches
        self.nulls = [i for i, (_, r) in enumerate(branches) if isinstance(r, Null)]
        others = [(name, r) for name, r in branches if not isinstance(r, Null)]
        self.nullable_single = len(others) == 1
        if self.nullable_single:
            self.type = others[0][1].type
        else:
            self.type = pa.struct([pa.field(name, r.type) for name, r in others])
        self.min_size = 1

    def read(self, cur: Cursor, rows: np.ndarray) -> pa.Array:
        n = len(rows)
        branch = cur.zigzag(rows, "union branch")
        bad = (branch < 0) | (branch >= len(self.branches))
        if bad.any():
            cur.fail(rows[bad], f"union branch out of range (the schema has {len(self.branches)})")
            branch = np.where(bad, -1, branch)
        children: list[pa.Array] = []
        for i, (_, reader) in enumerate(self.branches):
            if isinstance(reader, Null):
                continue
            where = np.flatnonzero(branch == i)
            child = reader.read(cur, rows[where]) if where.size else pa.array([], reader.type)
            children.append(scatter(child, where, n))
        if self.nullable_single:
            return children[0] if children else pa.nulls(n, self.type)
        missing = np.isin(branch, self.nulls) | (branch < 0)
        if not children:
            return pa.nulls(n, self.type)
        return pa.StructArray.from_arrays(children, fields=list(self.type), mask=pa.array(missing))


def read_rows(reader: Reader, cur: Cursor) -> pa.Table:
    """Read one value per cursor row; fail rows with bytes left over. One column per record
    field, or a single ``value`` column for a non-record schema."""
    rows = np.arange(len(cur.pos))
    array = reader.read(cur, rows)
    leftover = cur.ok(rows)[cur.remaining(cur.ok(rows)) > 0]
    if leftover.size:
        cur.fail(leftover, "bytes left over after the value: written with another schema?")
    if isinstance(reader, Record):
        return pa.Table.from_batches([pa.RecordBatch.from_struct_array(array)])
    return pa.table({"value": array})
