"""Protobuf fields to Arrow columns: scalars, repeated fields, maps and embedded messages.

Each reader turns one field's occurrences (see ``protobuf_wire``) for all messages into one
Arrow array. Absent fields read as null when the field tracks presence (messages, ``optional``,
oneof members, proto2) and as the default value otherwise (proto3 scalars), as generated code
would return. The wire format's rules are followed: unknown fields and fields with an unexpected
wire type are skipped, the last value of a scalar wins, repeated scalars may be packed or not,
several occurrences of an embedded message merge (their bytes are parsed as one), and a key
repeated within one map keeps its last value.
"""

from __future__ import annotations

import numpy as np
import pyarrow as pa
from google.protobuf.descriptor import Descriptor, FieldDescriptor

from connector.formats.protobuf_wire import I32, I64, LEN, VARINT, Tokens, tokenize, unpack
from connector.formats.vector import (
    PAD,
    Cursor,
    as_text,
    binary_array,
    gather,
    list_offsets,
    map_array,
)

F = FieldDescriptor


# protobuf 6.31 added ``is_repeated`` and ``is_required``, and 6.32 deprecates ``label``; protobuf 5
# (the floor, which grpcio-tools before 1.72 and many other packages still pin) has only ``label``.
def is_repeated(fd: FieldDescriptor) -> bool:
    value = getattr(fd, "is_repeated", None)
    return bool(fd.label == F.LABEL_REPEATED if value is None else value)


def is_required(fd: FieldDescriptor) -> bool:
    value = getattr(fd, "is_required", None)
    return bool(fd.label == F.LABEL_REQUIRED if value is None else value)


_WIRE = {
    F.TYPE_DOUBLE: I64,
    F.TYPE_FLOAT: I32,
    F.TYPE_INT64: VARINT,
    F.TYPE_UINT64: VARINT,
    F.TYPE_INT32: VARINT,
    F.TYPE_FIXED64: I64,
    F.TYPE_FIXED32: I32,
    F.TYPE_BOOL: VARINT,
    F.TYPE_STRING: LEN,
    F.TYPE_MESSAGE: LEN,
    F.TYPE_BYTES: LEN,
    F.TYPE_UINT32: VARINT,
    F.TYPE_ENUM: VARINT,
    F.TYPE_SFIXED32: I32,
    F.TYPE_SFIXED64: I64,
    F.TYPE_SINT32: VARINT,
    F.TYPE_SINT64: VARINT,
}
_ARROW = {
    F.TYPE_DOUBLE: pa.float64(),
    F.TYPE_FLOAT: pa.float32(),
    F.TYPE_INT64: pa.int64(),
    F.TYPE_UINT64: pa.uint64(),
    F.TYPE_INT32: pa.int32(),
    F.TYPE_FIXED64: pa.uint64(),
    F.TYPE_FIXED32: pa.uint32(),
    F.TYPE_BOOL: pa.bool_(),
    F.TYPE_STRING: pa.string(),
    F.TYPE_BYTES: pa.binary(),
    F.TYPE_UINT32: pa.uint32(),
    F.TYPE_ENUM: pa.string(),
    F.TYPE_SFIXED32: pa.int32(),
    F.TYPE_SFIXED64: pa.int64(),
    F.TYPE_SINT32: pa.int32(),
    F.TYPE_SINT64: pa.int64(),
}
_FIXED_DTYPE: dict[int, np.dtype] = {
    F.TYPE_DOUBLE: np.dtype("<f8"),
    F.TYPE_FLOAT: np.dtype("<f4"),
    F.TYPE_FIXED64: np.dtype("<u8"),
    F.TYPE_FIXED32: np.dtype("<u4"),
    F.TYPE_SFIXED32: np.dtype("<i4"),
    F.TYPE_SFIXED64: np.dtype("<i8"),
}


class Reader:
    type: pa.DataType

    def read(self, cur: Cursor, tokens: Tokens, n: int) -> pa.Array:
        """The field's array for ``n`` messages from its occurrences ``tokens`` (sorted by row,
        then wire order), failing rows in ``cur``."""
        raise NotImplementedError

    def each(self, cur: Cursor, tokens: Tokens) -> pa.Array:
        """One value per occurrence (the items of a repeated field)."""
        raise NotImplementedError


class Scalar(Reader):
    def __init__(self, fd: FieldDescriptor, presence: bool) -> None:
        self.fd = fd
        self.kind = fd.type
        self.wire = _WIRE[self.kind]
        self.type = _ARROW[self.kind]
        self.presence = presence
        if self.kind == F.TYPE_ENUM:
            values = sorted(fd.enum_type.values, key=lambda v: v.number)
            self.numbers = np.array([v.number for v in values], np.int64)
            self.names = pa.array([v.name for v in values], pa.string())

    def values(self, cur: Cursor, tokens: Tokens) -> pa.Array:
        """One value per token (tokens of the expected wire type)."""
        kind, v = self.kind, tokens.value
        rows = tokens.row
        if self.wire == LEN:
            raw = binary_array(cur.data, v.astype(np.int64), tokens.length)
            if kind == F.TYPE_STRING:
                return as_text(cur, rows, raw, f"string field {self.fd.name!r}")
            return raw
        if self.wire in (I32, I64):
            dtype = _FIXED_DTYPE[kind]
            at = v.astype(np.int64)
            window = cur.data[at[:, None] + np.arange(dtype.itemsize)]
            return pa.array(np.ascontiguousarray(window).view(dtype).reshape(len(at)))
        if kind in (F.TYPE_INT64,):
            return pa.array(v.view(np.int64))
        if kind == F.TYPE_UINT64:
            return pa.array(v)
        if kind == F.TYPE_INT32:
            return pa.array((v & np.uint64(0xFFFFFFFF)).astype(np.uint32).view(np.int32))
        if kind == F.TYPE_UINT32:
            return pa.array((v & np.uint64(0xFFFFFFFF)).astype(np.uint32))
        if kind == F.TYPE_BOOL:
            return pa.array(v != 0)
        if kind == F.TYPE_SINT64:
            return pa.array(
                ((v >> np.uint64(1)) ^ (np.uint64(0) - (v & np.uint64(1)))).view(np.int64)
            )
        if kind == F.TYPE_SINT32:  # truncated to 32 bits first, as protobuf does
            u = (v & np.uint64(0xFFFFFFFF)).astype(np.uint32)
            return pa.array(
                ((u >> np.uint32(1)) ^ (np.uint32(0) - (u & np.uint32(1)))).view(np.int32)
            )
        return self._enum_names((v & np.uint64(0xFFFFFFFF)).astype(np.uint32).view(np.int32))

    def _enum_names(self, numbers: np.ndarray) -> pa.Array:
        index = np.clip(np.searchsorted(self.numbers, numbers), 0, max(len(self.numbers) - 1, 0))
        known = (
            self.numbers[index] == numbers if len(self.numbers) else np.zeros(len(numbers), bool)
        )
        names = self.names.take(pa.array(index)) if len(self.numbers) else pa.nulls(len(numbers))
        if known.all():
            return names
        out = names.to_pylist()
        for i in np.flatnonzero(~known).tolist():
            out[i] = str(int(numbers[i]))
        return pa.array(out, pa.string())

    def default(self, n: int) -> pa.Array:
        if self.presence:
            return pa.nulls(n, self.type)
        if self.kind == F.TYPE_ENUM:
            return self._enum_names(np.zeros(n, np.int32))
        if self.kind == F.TYPE_STRING:
            return pa.array([""], pa.string()).take(pa.array(np.zeros(n, np.int32)))
        if self.kind == F.TYPE_BYTES:
            return pa.array([b""], pa.binary()).take(pa.array(np.zeros(n, np.int32)))
        return pa.array(np.zeros(n, self.type.to_pandas_dtype())).cast(self.type)

    def read(self, cur: Cursor, tokens: Tokens, n: int) -> pa.Array:
        tokens = tokens.take(np.flatnonzero(tokens.wire == self.wire))
        if not len(tokens.row):
            return self.default(n)
        last = np.flatnonzero(np.append(tokens.row[1:] != tokens.row[:-1], True))
        tokens = tokens.take(last)  # the last occurrence wins
        values = self.values(cur, tokens)
        index = np.full(n, -1, np.int64)
        index[tokens.row] = np.arange(len(tokens.row))
        taken = values.take(pa.array(index, mask=index < 0))
        if self.presence:
            return taken
        return _fill(taken, self.default(n), index < 0)


class Repeated(Reader):
    """Repeated scalars (packed or not) and repeated messages."""

    def __init__(self, item: Reader) -> None:
        self.item = item
        self.type = pa.list_(item.type)

    def read(self, cur: Cursor, tokens: Tokens, n: int) -> pa.Array:
        if isinstance(self.item, Scalar):
            values, owner = self._scalars(cur, tokens)
        else:
            tokens = tokens.take(np.flatnonzero(tokens.wire == LEN))
            owner = tokens.row
            values = self.item.each(cur, tokens)
        counts = np.bincount(owner, minlength=n) if len(owner) else np.zeros(n, np.int64)
        return pa.ListArray.from_arrays(list_offsets(counts), values, type=pa.list_(values.type))

    def _scalars(self, cur: Cursor, tokens: Tokens) -> tuple[pa.Array, np.ndarray]:
        item = self.item
        assert isinstance(item, Scalar)
        plain = tokens.take(np.flatnonzero(tokens.wire == item.wire))
        packed = tokens.take(np.flatnonzero(tokens.wire == LEN)) if item.wire != LEN else None
        seq_plain = np.flatnonzero(tokens.wire == item.wire)
        if packed is None or not len(packed.row):
            return item.values(cur, plain), plain.row
        seq_packed = np.flatnonzero(tokens.wire == LEN)
        expanded, sub, which = unpack(cur, item.wire, item.fd.name, packed)
        # Elements in wire order: by token (plain tokens are one element each), then position.
        seq = np.concatenate([seq_plain, seq_packed[which]])
        sub_all = np.concatenate([np.zeros(len(seq_plain), np.int64), sub])
        rows = np.concatenate([plain.row, packed.row[which]])
        values = pa.concat_arrays([item.values(cur, plain), item.values(cur, expanded)])
        order = np.lexsort((sub_all, seq))
        return values.take(pa.array(order)), rows[order]


class Message(Reader):
    """An embedded message: fields of all occurrences decoded together."""

    def __init__(self, desc: Descriptor) -> None:
        self.desc = desc
        self.fields: list[tuple[FieldDescriptor, Reader]] = []

    def finish(self) -> None:
        self.struct = pa.struct([pa.field(fd.name, r.type) for fd, r in self.fields])
        self.type = self.struct
        self.numbers = np.array([fd.number for fd, _ in self.fields], np.int64)

    def each(self, cur: Cursor, tokens: Tokens) -> pa.Array:
        """One value per occurrence (repeated fields); failures reported on their rows."""
        return self._parse(cur, tokens.row, tokens.value.astype(np.int64), tokens.length)

    def _parse(
        self, cur: Cursor, owner: np.ndarray, starts: np.ndarray, lengths: np.ndarray
    ) -> pa.Array:
        child = Cursor(cur.data, starts, starts + lengths)
        array = self.convert(child, np.arange(len(starts)), self.decode(child))
        for i, reason in child.failures().items():
            cur.fail(owner[i : i + 1], f"{self.desc.name}: {reason}")
        return array

    def decode(self, cur: Cursor) -> pa.StructArray:
        n = len(cur.pos)
        tokens = tokenize(cur)
        lo = np.searchsorted(tokens.field, self.numbers, "left")
        hi = np.searchsorted(tokens.field, self.numbers, "right")
        children = []
        for (fd, reader), a, b in zip(self.fields, lo.tolist(), hi.tolist(), strict=True):
            mine = tokens.slice(a, b)
            if is_required(fd):
                present = np.zeros(n, bool)
                present[mine.row] = True
                if not present.all():
                    cur.fail(np.flatnonzero(~present), f"required field {fd.name!r} is missing")
            children.append(reader.read(cur, mine, n))
        if not children:
            return pa.StructArray.from_buffers(self.struct, n, [None])
        return pa.StructArray.from_arrays(children, fields=list(self.struct))

    def read(self, cur: Cursor, tokens: Tokens, n: int) -> pa.Array:
        tokens = tokens.take(np.flatnonzero(tokens.wire == LEN))
        if len(tokens.row) and (tokens.row[1:] == tokens.row[:-1]).any():
            # Several occurrences of one embedded message merge: parse their bytes as one.
            rows, first = np.unique(tokens.row, return_index=True)
            offsets, payload = gather(cur.data, tokens.value.astype(np.int64), tokens.length)
            bounds = offsets[np.append(first, len(tokens.row))]
            data = np.frombuffer(payload + bytes(PAD), np.uint8)
            merged = Cursor(data, bounds[:-1], bounds[1:])
            values = self.convert(merged, np.arange(len(rows)), self.decode(merged))
            for i, reason in merged.failures().items():
                cur.fail(rows[i : i + 1], f"{self.desc.name}: {reason}")
        else:
            rows = tokens.row
            values = self._parse(cur, rows, tokens.value.astype(np.int64), tokens.length)
        index = np.full(n, -1, np.int64)
        index[rows] = np.arange(len(rows))
        return values.take(pa.array(index, mask=index < 0))

    def convert(self, cur: Cursor, rows: np.ndarray, struct: pa.StructArray) -> pa.Array:
        """The column for decoded occurrences (well-known types turn structs into scalars);
        ``rows`` are the occurrences' rows in ``cur``."""
        return struct


class Map(Repeated):
    def __init__(self, entry: Message) -> None:
        self.item = entry
        key, value = entry.fields[0][1], entry.fields[1][1]
        self.type = pa.map_(key.type, value.type)

    def read(self, cur: Cursor, tokens: Tokens, n: int) -> pa.Array:
        lists = super().read(cur, tokens, n)
        entries = lists.values
        counts = np.diff(np.asarray(lists.offsets))
        return map_array(counts, entries.field(0), entries.field(1), self.type)


def _fill(values: pa.Array, defaults: pa.Array, absent: np.ndarray) -> pa.Array:
    if not absent.any():
        return values
    return pa.compute.if_else(pa.array(absent), defaults, values)
