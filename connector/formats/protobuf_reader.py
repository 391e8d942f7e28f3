"""Protobuf binary to Arrow, column by column, for every message of a batch at once.

``compile_message`` turns a message descriptor into a tree of readers, each knowing its Arrow type:

    message -> struct (top level: one column per field)     repeated T -> list<T>
    map<K, V> -> map<K, V>          enum -> string (the value's name; unknown numbers as digits)
    int32/sint32/sfixed32 -> int32  int64/sint64/sfixed64 -> int64   uint32/fixed32 -> uint32
    uint64/fixed64 -> uint64        float -> float32   double -> float64   bool -> bool
    string -> string                bytes -> binary
    google.protobuf.Timestamp -> timestamp[us, tz=UTC]      google.protobuf.Duration -> interval
    google.protobuf.*Value wrappers -> the wrapped type, null when absent
    google.protobuf.Struct/Value/ListValue -> JSON text

Absent fields read as null when the field tracks presence (messages, ``optional``, oneof members,
proto2) and as the default value otherwise (proto3 scalars), as generated code would return.

Decoding follows the wire format's rules: fields in any order, unknown fields and fields with an
unexpected wire type skipped, the last value of a scalar wins, repeated scalars packed or not,
and several occurrences of an embedded message merged (their bytes are parsed as one). A message
whose bytes do not parse (truncated, malformed varint, invalid field key, groups, invalid UTF-8 in
a string) fails on its own, with a reason.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import numpy as np
import pyarrow as pa
from google.protobuf.descriptor import Descriptor, FieldDescriptor

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
VARINT, I64, LEN, I32 = 0, 1, 2, 5
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
_WRAPPERS = {
    f"google.protobuf.{name}Value"
    for name in ("Double", "Float", "Int64", "UInt64", "Int32", "UInt32", "Bool", "String", "Bytes")
}
_JSON_TYPES = {"google.protobuf.Struct", "google.protobuf.Value", "google.protobuf.ListValue"}


class UnsupportedMessageError(ValueError):
    """A message type with no Arrow counterpart here (recursive messages)."""


@dataclass(slots=True)
class Tokens:
    """The fields of a set of messages in wire order: one entry per field occurrence."""

    row: np.ndarray  # which message
    field: np.ndarray  # field number
    wire: np.ndarray  # wire type
    value: np.ndarray  # varint value, or the start of a LEN/I32/I64 payload (uint64)
    length: np.ndarray  # payload length (LEN), 4 or 8 (fixed), 0 (varint)

    def slice(self, a: int, b: int) -> Tokens:
        return Tokens(self.row[a:b], self.field[a:b], self.wire[a:b], self.value[a:b],
                      self.length[a:b])  # fmt: skip

    def take(self, index: np.ndarray) -> Tokens:
        return Tokens(
            self.row[index],
            self.field[index],
            self.wire[index],
            self.value[index],
            self.length[index],
        )


def tokenize(cur: Cursor) -> Tokens:
    """Split every row of ``cur`` into field occurrences (rows that fail stop early)."""
    rows = np.arange(len(cur.pos))
    active = rows[cur.pos < cur.end]
    parts: list[tuple[np.ndarray, ...]] = []
    while active.size:
        key = cur.varint(active, "field key")
        field = (key >> np.uint64(3)).astype(np.int64)
        wire = (key & np.uint64(7)).astype(np.int8)
        bad = (field == 0) | (field >= 2**29)
        if bad.any():
            cur.fail(active[bad], "invalid field number 0 or above 2^29-1")
        groups = (wire == 3) | (wire == 4)
        if groups.any():
            cur.fail(active[groups], "groups (wire types 3/4) are not supported")
        invalid = wire > 5
        if invalid.any():
            cur.fail(active[invalid], "invalid wire type 6 or 7")
        value = np.zeros(len(active), np.uint64)
        length = np.zeros(len(active), np.int64)
        for wt, size in ((I64, 8), (I32, 4)):
            m = np.flatnonzero(wire == wt)
            if m.size:
                value[m] = cur.fixed(active[m], size, "fixed-width value").astype(np.uint64)
                length[m] = size
        m = np.flatnonzero(wire == VARINT)
        if m.size:
            value[m] = cur.varint(active[m], "varint value")
        m = np.flatnonzero(wire == LEN)
        if m.size:
            n = cur.varint(active[m], "length").astype(np.int64)
            n = np.where(n < 0, -1, n)  # above 2^63: certainly past the end
            value[m] = cur.span(active[m], n, "length-delimited field").astype(np.uint64)
            length[m] = np.maximum(n, 0)
        ok = cur.code[active] == 0
        parts.append((active[ok], field[ok], wire[ok], value[ok], length[ok]))
        active = active[ok]
        active = active[cur.pos[active] < cur.end[active]]
    if not parts:
        empty = np.empty(0, np.int64)
        return Tokens(empty, empty, empty.astype(np.int8), empty.astype(np.uint64), empty)
    row, field, wire, value, length = (np.concatenate(c) for c in zip(*parts, strict=True))
    # By field, then message, then wire order (the concatenation is round by round).
    order = np.lexsort((np.arange(len(row)), row, field))
    return Tokens(row[order], field[order], wire[order], value[order], length[order])


class Reader:
    type: pa.DataType

    def read(self, cur: Cursor, tokens: Tokens, n: int) -> pa.Array:
        """The field's array for ``n`` messages from its occurrences ``tokens`` (sorted by row,
        then wire order), failing rows in ``cur``."""
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
            if isinstance(self.item, JsonText):
                values = self.item.each(cur, tokens)
            else:
                assert isinstance(self.item, Message)
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
        expanded, sub, which = _unpack(cur, item, packed)
        # Elements in wire order: by token (plain tokens are one element each), then position.
        seq = np.concatenate([seq_plain, seq_packed[which]])
        sub_all = np.concatenate([np.zeros(len(seq_plain), np.int64), sub])
        rows = np.concatenate([plain.row, packed.row[which]])
        values = pa.concat_arrays([item.values(cur, plain), item.values(cur, expanded)])
        order = np.lexsort((sub_all, seq))
        return values.take(pa.array(order)), rows[order]


def _unpack(cur: Cursor, item: Scalar, packed: Tokens) -> tuple[Tokens, np.ndarray, np.ndarray]:
    """Elements of packed repeated fields as pseudo tokens: ``(tokens, index in its pack,
    which pack)``."""
    starts = packed.value.astype(np.int64)
    if item.wire in (I32, I64):
        size = 4 if item.wire == I32 else 8
        bad = packed.length % size != 0
        if bad.any():
            cur.fail(packed.row[bad], f"packed field {item.fd.name!r} length is not whole values")
        counts = np.where(bad, 0, packed.length // size)
        which = np.repeat(np.arange(len(counts)), counts)
        first = np.cumsum(counts) - counts
        sub = np.arange(int(counts.sum())) - np.repeat(first, counts)
        value = (starts[which] + sub * size).astype(np.uint64)
        length = np.full(len(which), size, np.int64)
    else:
        sub_cur = Cursor(cur.data, starts, starts + packed.length)
        active = np.flatnonzero(sub_cur.pos < sub_cur.end)
        values, owners, subs = [], [], []
        k = 0
        while active.size:
            values.append(sub_cur.varint(active, f"packed field {item.fd.name!r}"))
            owners.append(active)
            subs.append(np.full(len(active), k))
            active = active[
                (sub_cur.code[active] == 0) & (sub_cur.pos[active] < sub_cur.end[active])
            ]
            k += 1
        for i, reason in sub_cur.failures().items():
            cur.fail(packed.row[i : i + 1], reason)
        which = np.concatenate(owners) if owners else np.empty(0, np.int64)
        sub = np.concatenate(subs) if subs else np.empty(0, np.int64)
        value = np.concatenate(values) if values else np.empty(0, np.uint64)
        length = np.zeros(len(which), np.int64)
    rows = packed.row[which]
    return Tokens(rows, np.zeros(len(rows), np.int64), np.full(len(rows), item.wire, np.int8),
                  value, length), sub, which  # fmt: skip


class Message(Reader):
    """An embedded message: fields of all occurrences decoded together."""

    def __init__(self, desc: Descriptor) -> None:
        self.desc = desc
        self.fields: list[tuple[FieldDescriptor, Reader]] = []
        self.required: list[FieldDescriptor] = []

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
            if fd.is_required:
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


class Timestamp(Message):
    """seconds + nanos -> microseconds (sub-microsecond digits dropped, toward zero); values
    outside what the type allows fail the message."""

    arrow = pa.timestamp("us", tz="UTC")
    seconds_range = (-62_135_596_800, 253_402_300_799)  # 0001-01-01 .. 9999-12-31
    nanos_range = (0, 999_999_999)

    def finish(self) -> None:
        super().finish()
        self.type = self.arrow

    def convert(self, cur: Cursor, rows: np.ndarray, struct: pa.StructArray) -> pa.Array:
        seconds = np.asarray(struct.field(0).fill_null(0), np.int64)
        nanos = np.asarray(struct.field(1).fill_null(0), np.int64)
        bad = (seconds < self.seconds_range[0]) | (seconds > self.seconds_range[1])
        bad |= (nanos < self.nanos_range[0]) | (nanos > self.nanos_range[1])
        if bad.any():
            cur.fail(rows[bad], f"{self.desc.name} out of range")
            seconds, nanos = np.where(bad, 0, seconds), np.where(bad, 0, nanos)
        micros = seconds * 1_000_000 + np.sign(nanos) * (np.abs(nanos) // 1000)
        return pa.array(micros, self.arrow, mask=np.asarray(struct.is_null()))


class Duration(Timestamp):
    """seconds + nanos -> an interval of nanoseconds (what DuckDB and PostgreSQL store as
    INTERVAL); durations beyond +-292 years do not fit and fail the message."""

    arrow = pa.month_day_nano_interval()
    seconds_range = (-(2**63) // 10**9 + 1, 2**63 // 10**9 - 1)
    nanos_range = (-999_999_999, 999_999_999)

    def convert(self, cur: Cursor, rows: np.ndarray, struct: pa.StructArray) -> pa.Array:
        seconds = np.asarray(struct.field(0).fill_null(0), np.int64)
        nanos = np.asarray(struct.field(1).fill_null(0), np.int64)
        bad = (seconds < self.seconds_range[0]) | (seconds > self.seconds_range[1])
        bad |= (nanos < self.nanos_range[0]) | (nanos > self.nanos_range[1])
        if bad.any():
            cur.fail(rows[bad], f"{self.desc.name} out of range")
            seconds, nanos = np.where(bad, 0, seconds), np.where(bad, 0, nanos)
        packed = np.zeros(len(seconds), dtype=[("m", "<i4"), ("d", "<i4"), ("n", "<i8")])
        packed["n"] = seconds * 1_000_000_000 + nanos
        validity = pa.array(np.asarray(struct.is_valid())).buffers()[1]
        buffers = [validity, pa.py_buffer(packed.tobytes())]
        return pa.Array.from_buffers(self.arrow, len(seconds), buffers)


class Wrapper(Message):
    def finish(self) -> None:
        super().finish()
        self.type = self.fields[0][1].type

    def convert(self, cur: Cursor, rows: np.ndarray, struct: pa.StructArray) -> pa.Array:
        return struct.field(0)  # a present wrapper holds a value (its default if unset)


class JsonText(Reader):
    """google.protobuf.Struct/Value/ListValue as JSON text (decoded message by message)."""

    type = pa.string()

    def __init__(self, desc: Descriptor) -> None:
        from google.protobuf.message_factory import GetMessageClass

        self.cls = GetMessageClass(desc)

    def read(self, cur: Cursor, tokens: Tokens, n: int) -> pa.Array:
        tokens = tokens.take(np.flatnonzero(tokens.wire == LEN))
        merged: dict[int, Any] = {}
        for row, data in zip(tokens.row.tolist(), self._payloads(cur, tokens), strict=True):
            self._merge(cur, row, merged.setdefault(row, self.cls()), data)
        out: list[str | None] = [None] * n
        for row, msg in merged.items():
            out[row] = self._json(msg)
        return pa.array(out, pa.string())

    def each(self, cur: Cursor, tokens: Tokens) -> pa.Array:
        out = []
        for row, data in zip(tokens.row.tolist(), self._payloads(cur, tokens), strict=True):
            msg = self.cls()
            self._merge(cur, row, msg, data)
            out.append(self._json(msg))
        return pa.array(out, pa.string())

    @staticmethod
    def _payloads(cur: Cursor, tokens: Tokens) -> list[Any]:
        return binary_array(cur.data, tokens.value.astype(np.int64), tokens.length).to_pylist()

    def _merge(self, cur: Cursor, row: int, msg: Any, data: bytes) -> None:
        from google.protobuf.message import DecodeError

        try:
            msg.MergeFromString(data)
        except DecodeError as exc:
            cur.fail(np.array([row]), f"{self.cls.DESCRIPTOR.name}: {exc}")

    @staticmethod
    def _json(msg: Any) -> str:
        from google.protobuf import json_format

        return str(json_format.MessageToJson(msg, indent=None))


class _Compiler:
    def __init__(self) -> None:
        self.open: set[str] = set()

    def message(self, desc: Descriptor) -> Message:
        name = desc.full_name
        if name in self.open:
            msg = f"recursive message {name!r} has no Arrow counterpart"
            raise UnsupportedMessageError(msg)
        cls: type[Message] = Message
        if name == "google.protobuf.Timestamp":
            cls = Timestamp
        elif name == "google.protobuf.Duration":
            cls = Duration
        elif name in _WRAPPERS:
            cls = Wrapper
        reader = cls(desc)
        self.open.add(name)
        for fd in desc.fields:
            reader.fields.append((fd, self.field(fd)))
        self.open.discard(name)
        reader.finish()
        return reader

    def field(self, fd: FieldDescriptor) -> Reader:
        if fd.type == F.TYPE_GROUP:
            msg = f"field {fd.full_name!r} is a group (proto2 groups are not supported)"
            raise UnsupportedMessageError(msg)
        if fd.type == F.TYPE_MESSAGE:
            desc = fd.message_type
            if desc.GetOptions().map_entry:
                return Map(self.message(desc))
            item: Reader = JsonText(desc) if desc.full_name in _JSON_TYPES else self.message(desc)
        else:
            item = Scalar(fd, presence=fd.has_presence and not fd.is_repeated)
        return Repeated(item) if fd.is_repeated else item


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


def compile_message(desc: Descriptor) -> Message:
    """The reader of a top-level message type; ``UnsupportedMessageError`` if recursive."""
    return _Compiler().message(desc)


def read_messages(reader: Message, cur: Cursor) -> pa.Table:
    """Decode one message per cursor row into a table with one column per field."""
    array = reader.decode(cur)
    return pa.Table.from_batches([pa.RecordBatch.from_struct_array(array)])


def _fill(values: pa.Array, defaults: pa.Array, absent: np.ndarray) -> pa.Array:
    if not absent.any():
        return values
    return pa.compute.if_else(pa.array(absent), defaults, values)
