"""Kafka Connect schemas and the logical types Debezium writes, as Arrow columns.

A ``ConnectField`` describes one field the way Kafka Connect does, whichever converter wrote it:
the JSON converter's ``schema`` (``schemas.enable=true``) or the Avro converter's writer schema
(``connect.name``/``connect.parameters`` on the Avro types). ``convert`` turns a column read with
the plain types (``json_type`` for the JSON reader, the Avro reader's own) into the real type:

    io.debezium.time.Date, connect Date              int32 days        -> date32
    io.debezium.time.Timestamp                        int64 ms          -> timestamp[ms]
    io.debezium.time.MicroTimestamp                   int64 us          -> timestamp[us]
    io.debezium.time.NanoTimestamp                    int64 ns          -> timestamp[ns]
    connect Timestamp                                 int64 ms          -> timestamp[ms, UTC]
    io.debezium.time.ZonedTimestamp                   ISO-8601 text     -> timestamp[us, UTC]
    io.debezium.time.Time / MicroTime / NanoTime      ms / us / ns      -> time64[us] / [us] / [ns]
    connect Time                                      int32 ms          -> time64[us]
    connect Decimal                                   bytes + scale     -> decimal128(p, s)
    io.debezium.data.VariableScaleDecimal             {scale, value}    -> string (exact digits)
    io.debezium.data.geometry.Geometry/Geography/Point {wkb, srid, ...} -> binary (the WKB)
    io.debezium.data.Json, Uuid, Enum, EnumSet, Xml, ZonedTime          -> string (as sent)
    bytes (the JSON converter writes base64)                            -> binary

Time-of-day and timestamps without a zone (``Timestamp``, ``MicroTimestamp``) are the source's
wall-clock values, so they stay without a time zone. Everything is vectorised; a value that does
not convert (bad base64, an unreadable timestamp) fails its message, never the batch.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field
from decimal import Decimal
from typing import Any

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc

from connector.formats.base import MALFORMED, Failure

DECIMAL = "org.apache.kafka.connect.data.Decimal"
VARIABLE_DECIMAL = "io.debezium.data.VariableScaleDecimal"
GEOMETRIES = frozenset(
    {
        "io.debezium.data.geometry.Geometry",
        "io.debezium.data.geometry.Geography",
        "io.debezium.data.geometry.Point",
    }
)
_DATES = frozenset({"io.debezium.time.Date", "org.apache.kafka.connect.data.Date"})
_EPOCH = {  # int64 since the epoch -> timestamp type
    "io.debezium.time.Timestamp": pa.timestamp("ms"),
    "io.debezium.time.MicroTimestamp": pa.timestamp("us"),
    "io.debezium.time.NanoTimestamp": pa.timestamp("ns"),
    "org.apache.kafka.connect.data.Timestamp": pa.timestamp("ms", tz="UTC"),
}
_TIMES = {  # since midnight -> (time type, factor to that unit)
    "io.debezium.time.Time": (pa.time64("us"), 1000),
    "org.apache.kafka.connect.data.Time": (pa.time64("us"), 1000),
    "io.debezium.time.MicroTime": (pa.time64("us"), 1),
    "io.debezium.time.NanoTime": (pa.time64("ns"), 1),
}
ZONED_TIMESTAMP = "io.debezium.time.ZonedTimestamp"
_PRIMITIVE_JSON = {
    "int8": pa.int8(),
    "int16": pa.int16(),
    "int32": pa.int32(),
    "int64": pa.int64(),
    "float32": pa.float32(),
    "float64": pa.float64(),
    "boolean": pa.bool_(),
    "string": pa.string(),
    "bytes": pa.string(),  # base64 text, decoded by ``convert``
}
# The JSON converter names Connect's FLOAT32/FLOAT64 "float"/"double" (its JsonSchema), as
# real Debezium events show (tests/fixtures/debezium/customers.jsonl, field `score`).
_JSON_CONVERTER_TYPES = {"float": "float32", "double": "float64"}
MAX_DEPTH = 32


class UnsupportedSchemaError(ValueError):
    """A Connect schema this reader cannot type (a map in JSON, nesting too deep)."""


@dataclass(frozen=True, slots=True)
class ConnectField:
    """One field of a Kafka Connect schema."""

    name: str
    type: str  # int8 ... float64, boolean, string, bytes, struct, array, map
    logical: str | None = None
    parameters: Mapping[str, str] = field(default_factory=dict)
    fields: tuple[ConnectField, ...] = ()
    items: ConnectField | None = None

    def child(self, name: str) -> ConnectField | None:
        return next((f for f in self.fields if f.name == name), None)

    @staticmethod
    def from_json(schema: Mapping[str, Any], name: str = "", depth: int = 0) -> ConnectField:
        """From the JSON converter's ``schema`` object."""
        if depth > MAX_DEPTH:
            msg = f"the schema nests more than {MAX_DEPTH} levels"
            raise UnsupportedSchemaError(msg)
        kind = str(schema.get("type") or "")
        kind = _JSON_CONVERTER_TYPES.get(kind, kind)
        params = schema.get("parameters") or {}
        fields = tuple(
            ConnectField.from_json(f, str(f.get("field") or ""), depth + 1)
            for f in schema.get("fields") or ()
        )
        items = schema.get("items")
        return ConnectField(
            name=name,
            type=kind,
            logical=schema.get("name"),
            parameters={str(k): str(v) for k, v in params.items() if v is not None},
            fields=fields,
            items=ConnectField.from_json(items, "", depth + 1) if items else None,
        )

    @staticmethod
    def from_avro(schema: Any, name: str = "", named: dict[str, Any] | None = None) -> ConnectField:
        """From an Avro writer schema written by Connect's Avro converter (parsed JSON)."""
        named = {} if named is None else named
        if isinstance(schema, list):  # [null, T]: optional T
            branches = [s for s in schema if s != "null"]
            return ConnectField.from_avro(branches[0] if len(branches) == 1 else {}, name, named)
        if isinstance(schema, str):
            if schema in named:
                return ConnectField.from_avro(named[schema], name, named)
            return ConnectField(name, _AVRO_PRIMITIVES.get(schema, schema))
        if not isinstance(schema, dict):
            return ConnectField(name, "")
        kind = schema.get("type")
        if isinstance(kind, dict | list):
            inner = ConnectField.from_avro(kind, name, named)
            logical = schema.get("connect.name")
            return inner if logical is None else _with_logical(inner, schema)
        if kind in ("record", "enum", "fixed") and "name" in schema:
            named[str(schema["name"])] = schema
            if "namespace" in schema:
                named[f"{schema['namespace']}.{schema['name']}"] = schema
        if kind == "record":
            fields = tuple(
                ConnectField.from_avro(f["type"], str(f["name"]), named) for f in schema["fields"]
            )
            return _with_logical(ConnectField(name, "struct", fields=fields), schema)
        if kind == "array":
            items = ConnectField.from_avro(schema["items"], "", named)
            return _with_logical(ConnectField(name, "array", items=items), schema)
        if kind == "map":
            return _with_logical(ConnectField(name, "map"), schema)
        base = str(schema.get("connect.type") or _AVRO_PRIMITIVES.get(str(kind), str(kind)))
        return _with_logical(ConnectField(name, base), schema)


_AVRO_PRIMITIVES = {
    "int": "int32",
    "long": "int64",
    "float": "float32",
    "double": "float64",
    "boolean": "boolean",
    "string": "string",
    "bytes": "bytes",
    "enum": "string",
    "fixed": "bytes",
}


def _with_logical(f: ConnectField, schema: Mapping[str, Any]) -> ConnectField:
    params = schema.get("connect.parameters") or {}
    if schema.get("logicalType") == "decimal" and "scale" not in params:
        params = {**params, "scale": str(schema.get("scale", 0))}
    return ConnectField(
        f.name,
        f.type,
        schema.get("connect.name", f.logical),
        {str(k): str(v) for k, v in params.items()},
        f.fields,
        f.items,
    )


def json_type(f: ConnectField, numeric_decimals: bool = False) -> pa.DataType:
    """The type the JSON reader reads ``f`` with (``convert`` then makes it the real type).
    ``numeric_decimals``: Decimals are JSON numbers (the converter's ``decimal.format=NUMERIC``)
    rather than base64 text."""
    if f.logical == DECIMAL and numeric_decimals:
        return decimal_type(f)
    if f.type in _PRIMITIVE_JSON:
        return _PRIMITIVE_JSON[f.type]
    if f.type == "struct":
        return pa.struct([pa.field(c.name, json_type(c, numeric_decimals)) for c in f.fields])
    if f.type == "array" and f.items is not None:
        return pa.list_(json_type(f.items, numeric_decimals))
    msg = f"field {f.name!r}: a Connect {f.type or 'untyped'} field cannot be read from JSON here"
    raise UnsupportedSchemaError(msg)


def decimal_type(f: ConnectField) -> pa.DataType:
    scale = int(f.parameters.get("scale", 0))
    precision = int(f.parameters.get("connect.decimal.precision", 38))
    precision = max(precision, scale, 1)
    return pa.decimal128(precision, scale) if precision <= 38 else pa.decimal256(precision, scale)


@dataclass
class Problems:
    """Messages whose value did not convert, by position in the table being converted."""

    failures: dict[int, Failure] = field(default_factory=dict)

    def add(self, rows: np.ndarray, bad: np.ndarray, reason: str) -> None:
        for i in rows[bad].tolist():
            self.failures.setdefault(int(i), Failure(MALFORMED, reason))


def convert_table(table: pa.Table, f: ConnectField, problems: Problems) -> pa.Table:
    """Every column of ``table`` whose field ``f`` (a struct) describes, converted."""
    rows = np.arange(table.num_rows, dtype=np.int64)
    columns = []
    for name in table.column_names:
        child = f.child(name)
        column = table.column(name).combine_chunks()
        columns.append(column if child is None else convert(column, child, rows, problems, name))
    return pa.Table.from_arrays(columns, names=table.column_names)


def convert(
    array: pa.Array, f: ConnectField, rows: np.ndarray, problems: Problems, path: str
) -> pa.Array:
    """``array`` (one element per entry of ``rows``, the message positions) as ``f``'s real
    Arrow type; elements that do not convert become null and their messages problems."""
    logical = f.logical
    if logical in _DATES:
        return array if pa.types.is_date(array.type) else array.cast(pa.int32()).view(pa.date32())
    if logical in _EPOCH:
        if pa.types.is_timestamp(array.type):
            return array
        return array.cast(pa.int64()).view(_EPOCH[logical])
    if logical in _TIMES:
        if pa.types.is_time(array.type):
            return array
        kind, factor = _TIMES[logical]
        ints = array.cast(pa.int64())
        return (pc.multiply(ints, factor) if factor != 1 else ints).view(kind)
    if logical == ZONED_TIMESTAMP and pa.types.is_string(array.type):
        return _zoned(array, rows, problems, path)
    if logical == DECIMAL:
        return _decimal(array, f, rows, problems, path)
    if logical == VARIABLE_DECIMAL and pa.types.is_struct(array.type):
        return _variable_decimal(array, rows, problems, path)
    if logical in GEOMETRIES and pa.types.is_struct(array.type):
        wkb = _field(array, "wkb")
        if wkb is None:
            return array
        return _bytes(wkb, rows, problems, f"{path}.wkb")
    if f.type == "bytes":
        return _bytes(array, rows, problems, path)
    if f.type == "struct" and pa.types.is_struct(array.type):
        children, names = [], []
        for i in range(array.type.num_fields):
            name = array.type.field(i).name
            child = array.field(i)
            if array.offset or len(child) != len(array):
                child = child.slice(array.offset, len(array))
            described = f.child(name)
            if described is not None:
                child = convert(child, described, rows, problems, f"{path}.{name}")
            children.append(child)
            names.append(name)
        mask = pc.is_null(array) if array.null_count else None
        return pa.StructArray.from_arrays(children, names=names, mask=mask)
    if f.type == "array" and f.items is not None and pa.types.is_list(array.type):
        lengths = pc.fill_null(pc.list_value_length(array), 0).to_numpy().astype(np.int64)
        values = pc.list_flatten(array)
        item_rows = np.repeat(rows, lengths)
        values = convert(values, f.items, item_rows, problems, f"{path}[]")
        offsets = np.zeros(len(array) + 1, np.int32)
        np.cumsum(lengths, out=offsets[1:])
        mask = pc.is_null(array) if array.null_count else None
        return pa.ListArray.from_arrays(pa.array(offsets), values, mask=mask)
    return array


def _field(array: pa.StructArray, name: str) -> pa.Array | None:
    for i in range(array.type.num_fields):
        if array.type.field(i).name == name:
            child = array.field(i)
            if array.offset or len(child) != len(array):
                child = child.slice(array.offset, len(array))
            if array.null_count:  # a null struct is a null value, whatever its child holds
                child = pc.if_else(pc.is_null(array), pa.scalar(None, child.type), child)
            return child
    return None


# -- bytes (base64 in JSON) ----------------------------------------------------------------------
_B64 = np.full(256, 255, np.uint8)
for _i, _c in enumerate(b"ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789+/"):
    _B64[_c] = _i
_B64[ord("=")] = 0
_PAD = ord("=")


def base64_decode(array: pa.Array) -> tuple[pa.Array, np.ndarray]:
    """Standard base64 text (as Java's encoder writes it, padded) to binary, vectorised; the
    second result marks the elements that are not base64 (they become null)."""
    array = array.cast(pa.large_string()) if not pa.types.is_large_string(array.type) else array
    n = len(array)
    offsets = np.frombuffer(array.buffers()[1], np.int64)[array.offset : array.offset + n + 1]
    data_buffer = array.buffers()[2]
    data = (
        np.frombuffer(data_buffer, np.uint8) if data_buffer is not None else np.empty(0, np.uint8)
    )
    valid = np.asarray(array.is_valid())
    lengths = np.where(valid, np.diff(offsets), 0)
    bad = valid & (lengths % 4 != 0)
    chars = data[offsets[0] : offsets[-1]]
    ok_lengths = np.where(bad, 0, lengths)
    if bad.any() or not valid.all():  # keep only the well-sized rows' characters
        keep = np.repeat(~bad & valid, np.diff(offsets))
        chars = chars[keep]
    values = _B64[chars]
    if (values == 255).any():
        row_of = np.repeat(np.arange(n), ok_lengths)
        for i in np.unique(row_of[values == 255]).tolist():
            bad[i] = True
        if bad.any():
            return _base64_rows(array, bad)
    padding = np.zeros(n, np.int64)
    ends = np.cumsum(ok_lengths)
    has = ok_lengths > 0
    last = chars[ends[has] - 1] == _PAD
    second = chars[ends[has] - 2] == _PAD
    padding[has] = last.astype(np.int64) + (last & second)
    quads = values.reshape(-1, 4).astype(np.uint32)
    triple = (quads[:, 0] << 18) | (quads[:, 1] << 12) | (quads[:, 2] << 6) | quads[:, 3]
    out = np.stack([(triple >> 16) & 255, (triple >> 8) & 255, triple & 255], axis=1)
    out = out.astype(np.uint8).reshape(-1)
    out_lengths = ok_lengths // 4 * 3 - padding
    if padding.any():
        drop = np.zeros(len(out), bool)
        stops = np.cumsum(ok_lengths // 4 * 3)
        for pad in (1, 2):
            drop[(stops - pad)[padding >= pad]] = True
        out = out[~drop]
    out_offsets = np.zeros(n + 1, np.int64)
    np.cumsum(out_lengths, out=out_offsets[1:])
    validity = pa.array(valid & ~bad).buffers()[1] if (~valid | bad).any() else None
    result = pa.Array.from_buffers(
        pa.large_binary(), n, [validity, pa.py_buffer(out_offsets), pa.py_buffer(out.tobytes())]
    )
    return result.cast(pa.binary()), bad


def _base64_rows(array: pa.Array, bad: np.ndarray) -> tuple[pa.Array, np.ndarray]:
    """The error path: rows decoded one by one (the bad ones null)."""
    import base64
    import binascii

    out: list[bytes | None] = []
    for i, text in enumerate(array.to_pylist()):
        if text is None or bad[i]:
            out.append(None)
            continue
        try:
            out.append(base64.b64decode(text, validate=True))
        except (binascii.Error, ValueError):
            bad[i] = True
            out.append(None)
    return pa.array(out, pa.binary()), bad


def _bytes(array: pa.Array, rows: np.ndarray, problems: Problems, path: str) -> pa.Array:
    if not (pa.types.is_string(array.type) or pa.types.is_large_string(array.type)):
        return array
    decoded, bad = base64_decode(array)
    if bad.any():
        problems.add(rows, bad, f"field {path!r}: not base64 (the JSON converter's bytes)")
    return decoded


# -- decimals -----------------------------------------------------------------------------------
def _unscaled(binary: pa.Array) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Big-endian two's complement integers (Connect's Decimal bytes) as 16-byte little-endian
    rows (decimal128's layout), the rows too long for that, and the null rows."""
    binary = binary.cast(pa.large_binary())
    n = len(binary)
    offsets = np.frombuffer(binary.buffers()[1], np.int64)[binary.offset : binary.offset + n + 1]
    buffer = binary.buffers()[2]
    data = np.frombuffer(buffer, np.uint8) if buffer is not None else np.empty(0, np.uint8)
    valid = np.asarray(binary.is_valid())
    lengths = np.where(valid, np.diff(offsets), 0)
    long = lengths > 16
    width = np.where(long, 0, lengths)
    out = np.zeros((n, 16), np.uint8)
    negative = np.zeros(n, bool)
    has = width > 0
    negative[has] = data[offsets[:-1][has]] >= 128
    out[negative] = 255
    for k in range(16):  # byte k from the end of each value, written little-endian
        take = width > k
        if not take.any():
            break
        out[take, k] = data[offsets[1:][take] - 1 - k]
    return out, long, ~valid


def _decimal(
    array: pa.Array, f: ConnectField, rows: np.ndarray, problems: Problems, path: str
) -> pa.Array:
    kind = decimal_type(f)
    if pa.types.is_decimal(array.type):
        return array if array.type == kind else array.cast(kind)
    binary = _bytes(array, rows, problems, path)
    if not pa.types.is_binary(binary.type):
        return array
    return _decimal_of(binary, kind, rows, problems, path)


def _decimal_of(
    binary: pa.Array, kind: pa.DataType, rows: np.ndarray, problems: Problems, path: str
) -> pa.Array:
    le, long, null = _unscaled(binary)
    if isinstance(kind, pa.Decimal256Type) or long.any():
        scale = kind.scale
        values = [
            None if v is None else Decimal(int.from_bytes(v, "big", signed=True)).scaleb(-scale)
            for v in binary.to_pylist()
        ]
        try:
            return pa.array(values, kind)
        except (pa.ArrowInvalid, OverflowError):
            problems.add(rows, long, f"field {path!r}: more digits than {kind} holds")
            return pa.nulls(len(binary), kind)
    validity = pa.array(~null).buffers()[1] if null.any() else None
    return pa.Array.from_buffers(
        pa.decimal128(38, kind.scale), len(binary), [validity, pa.py_buffer(le.tobytes())]
    ).cast(kind, safe=False)


def _variable_decimal(
    array: pa.StructArray, rows: np.ndarray, problems: Problems, path: str
) -> pa.Array:
    """``{scale, value}`` to the exact decimal text: the scale varies from value to value, so no
    one decimal type holds them all; each distinct scale is converted at once."""
    scale = _field(array, "scale")
    value = _field(array, "value")
    if scale is None or value is None:
        return array
    value = _bytes(value, rows, problems, f"{path}.value")
    n = len(array)
    out = pa.nulls(n, pa.string())
    scales = scale.cast(pa.int64()).to_numpy(zero_copy_only=False)
    present = np.asarray(pc.and_(pc.is_valid(scale), pc.is_valid(value)))
    for s in np.unique(scales[present]).tolist():
        where = np.flatnonzero(present & (scales == s))
        s = int(s)
        kind = pa.decimal128(38, s) if 0 <= s <= 38 else pa.decimal256(76, max(0, min(s, 76)))
        part = _decimal_of(value.take(pa.array(where)), kind, rows[where], problems, path)
        text = part.cast(pa.string())
        out = pc.replace_with_mask(out, _mask(where, n), text)
    return out


def _mask(where: np.ndarray, n: int) -> pa.Array:
    mask = np.zeros(n, bool)
    mask[where] = True
    return pa.array(mask)


# -- zoned timestamps -----------------------------------------------------------------------------
_UTC_US = pa.timestamp("us", tz="UTC")


def _zoned(array: pa.Array, rows: np.ndarray, problems: Problems, path: str) -> pa.Array:
    # Debezium writes up to nine fractional digits; microseconds keep six (and the range).
    text = pc.replace_substring_regex(array, r"(\.\d{6})\d+", r"\1")
    try:
        return text.cast(_UTC_US)
    except pa.ArrowInvalid:
        pass
    out: list[Any] = []
    bad = np.zeros(len(text), bool)
    for i, value in enumerate(text.to_pylist()):
        try:
            out.append(pa.scalar(value).cast(_UTC_US).as_py() if value is not None else None)
        except pa.ArrowInvalid:
            bad[i] = True
            out.append(None)
    problems.add(rows, bad, f"field {path!r}: not an ISO-8601 timestamp with a zone")
    return pa.array(out, _UTC_US)
