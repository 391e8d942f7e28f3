"""Message descriptors to readers, with Google's well-known types mapped to plain columns.

    message -> struct (top level: one column per field)     repeated T -> list<T>
    map<K, V> -> map<K, V>          enum -> string (the value's name; unknown numbers as digits)
    int32/sint32/sfixed32 -> int32  int64/sint64/sfixed64 -> int64   uint32/fixed32 -> uint32
    uint64/fixed64 -> uint64        float -> float32   double -> float64   bool -> bool
    string -> string                bytes -> binary
    google.protobuf.Timestamp -> timestamp[us, tz=UTC]   google.protobuf.Duration -> interval
    google.protobuf.*Value wrappers -> the wrapped type, null when absent
    google.protobuf.Struct/Value/ListValue -> JSON text

Recursive messages (other than Struct/Value) have no Arrow counterpart and are refused.
"""

from __future__ import annotations

from typing import Any

import numpy as np
import pyarrow as pa
from google.protobuf.descriptor import Descriptor, FieldDescriptor

from connector.formats.protobuf_reader import (
    F,
    Map,
    Message,
    Reader,
    Repeated,
    Scalar,
    is_repeated,
)
from connector.formats.protobuf_wire import LEN, Tokens
from connector.formats.vector import Cursor, binary_array

_WRAPPERS = {
    f"google.protobuf.{name}Value"
    for name in ("Double", "Float", "Int64", "UInt64", "Int32", "UInt32", "Bool", "String", "Bytes")
}
_JSON_TYPES = {"google.protobuf.Struct", "google.protobuf.Value", "google.protobuf.ListValue"}


MAX_DEPTH = 64  # messages nested in messages, at most


class UnsupportedMessageError(ValueError):
    """A message type with no Arrow counterpart here (recursive or too deeply nested)."""


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
    """google.protobuf.Struct/Value/ListValue as JSON text, keys sorted (decoded one by one)."""

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
        # A Struct is a map and protobuf iterates maps in no fixed order (upb's
        # order differs from process to process), so keys are sorted: the same
        # message always becomes the same text.
        from google.protobuf import json_format

        return str(json_format.MessageToJson(msg, indent=None, sort_keys=True))


class _Compiler:
    def __init__(self) -> None:
        self.open: set[str] = set()

    def message(self, desc: Descriptor) -> Message:
        name = desc.full_name
        if name in self.open:
            msg = f"recursive message {name!r} has no Arrow counterpart"
            raise UnsupportedMessageError(msg)
        if len(self.open) >= MAX_DEPTH:
            msg = f"message {name!r} is nested more than {MAX_DEPTH} messages deep"
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
            item = Scalar(fd, presence=fd.has_presence and not is_repeated(fd))
        return Repeated(item) if is_repeated(fd) else item


def compile_message(desc: Descriptor) -> Message:
    """The reader of a top-level message type; ``UnsupportedMessageError`` if recursive."""
    return _Compiler().message(desc)


def read_messages(reader: Message, cur: Cursor) -> pa.Table:
    """Decode one message per cursor row into a table with one column per field."""
    array = reader.decode(cur)
    return pa.Table.from_batches([pa.RecordBatch.from_struct_array(array)])
