"""Avro writer schemas to readers, and the Arrow type of every Avro type:

    record -> struct            array -> list             map -> map<string, V>
    enum -> string              fixed, bytes -> binary    [null, T] -> nullable T
    other unions -> struct with one nullable field per branch (named after the branch type)
    timestamp-millis/micros/nanos -> timestamp[ms/us/ns, tz=UTC]   local-timestamp-* -> no tz
    date -> date32   time-millis, time-micros -> time64[us]
    decimal(p, s) -> decimal128(p, s) (decimal256 above 38 digits)   uuid -> string

Unknown logical types fall back to their underlying type, as the Avro specification says.
Recursive types have no Arrow counterpart and are refused.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

import pyarrow as pa
from fastavro import parse_schema
from fastavro.schema import SchemaParseException, UnknownType

from connector.formats.avro_reader import (
    Array,
    Boolean,
    Bytes,
    Decimal,
    Enum,
    Float,
    Int,
    Null,
    Reader,
    Record,
    Union,
    Uuid,
)

MAX_RECORD_DEPTH = 64  # records nested in records, at most
MAX_TYPE_DEPTH = 256  # types (records, arrays, maps, unions) nested in one another, at most


class UnsupportedSchemaError(ValueError):
    """A valid Avro schema that has no Arrow counterpart here (recursive or too deep)."""


_TIMESTAMPS = {
    "timestamp-millis": ("ms", "UTC"),
    "timestamp-micros": ("us", "UTC"),
    "timestamp-nanos": ("ns", "UTC"),
    "local-timestamp-millis": ("ms", None),
    "local-timestamp-micros": ("us", None),
    "local-timestamp-nanos": ("ns", None),
}


class _Compiler:
    def __init__(self, named: Mapping[str, Any]) -> None:
        self.named = named
        self.done: dict[str, Reader] = {}
        self.open: set[str] = set()

    def build(self, schema: Any) -> Reader:
        if isinstance(schema, list):
            return Union([(_branch_name(s), self.build(s)) for s in schema])
        if isinstance(schema, str):
            primitive = _primitive(schema)
            if primitive is not None:
                return primitive
            if schema in self.open:
                msg = f"recursive type {schema!r} has no Arrow counterpart"
                raise UnsupportedSchemaError(msg)
            if schema in self.done:
                return self.done[schema]
            return self.build(self.named[schema])
        kind = schema["type"]
        logical = schema.get("logicalType")
        if kind == "record" or kind == "error":
            return self._record(schema)
        if kind == "enum":
            return self._named(schema, Enum(list(schema["symbols"])))
        if kind == "fixed":
            size = int(schema["size"])
            if logical == "decimal":
                reader: Reader = Decimal(
                    int(schema["precision"]), int(schema.get("scale", 0)), size
                )
            elif logical == "uuid" and size == 16:
                reader = Uuid()
            else:
                reader = Bytes(size=size)
            return self._named(schema, reader)
        if kind == "array":
            return Array(self.build(schema["items"]))
        if kind == "map":
            return Array(self.build(schema["values"]), keys=True)
        if isinstance(kind, dict | list) or kind not in _PRIMITIVES:
            return self.build(kind)
        return _logical(kind, logical, schema) or self.build(kind)

    def _named(self, schema: dict[str, Any], reader: Reader) -> Reader:
        self.done[schema["name"]] = reader
        return reader

    def _record(self, schema: dict[str, Any]) -> Reader:
        name = schema["name"]
        if name in self.done:
            return self.done[name]
        record = Record(name)
        self.open.add(name)
        for field in schema["fields"]:
            record.fields.append((field["name"], self.build(field["type"])))
        self.open.discard(name)
        record.finish()
        self.done[name] = record
        return record


_PRIMITIVES = {"null", "boolean", "int", "long", "float", "double", "bytes", "string"}


def _primitive(name: str) -> Reader | None:
    return {
        "null": Null,
        "boolean": Boolean,
        "int": lambda: Int(32),
        "long": lambda: Int(64),
        "float": lambda: Float(32),
        "double": lambda: Float(64),
        "bytes": Bytes,
        "string": lambda: Bytes(text=True),
    }.get(name, lambda: None)()


def _logical(kind: str, logical: str | None, schema: dict[str, Any]) -> Reader | None:
    if logical is None:
        return None
    if logical in _TIMESTAMPS and kind == "long":
        unit, tz = _TIMESTAMPS[logical]
        return Int(64, pa.timestamp(unit, tz=tz))
    if logical == "date" and kind == "int":
        return Int(32, pa.date32())
    if logical == "time-millis" and kind == "int":
        return Int(32, pa.time64("us"), scale=1000)  # time32 would read back as time64
    if logical == "time-micros" and kind == "long":
        return Int(64, pa.time64("us"))
    if logical == "decimal" and kind == "bytes":
        return Decimal(int(schema["precision"]), int(schema.get("scale", 0)), None)
    return None  # uuid on string, unknown logical types: the underlying type


def _branch_name(schema: Any) -> str:
    if isinstance(schema, str):
        return schema.rsplit(".", 1)[-1]
    if isinstance(schema, dict):
        kind = schema["type"]
        if kind in ("record", "error", "enum", "fixed"):
            return str(schema["name"]).rsplit(".", 1)[-1]
        return _branch_name(kind) if isinstance(kind, str | dict) else "union"
    return "union"


def compile_schema(schema: Any, named: dict[str, Any] | None = None) -> Reader:
    """Validate ``schema`` (parsed JSON) and build its reader; ``named`` holds referenced types.

    Raises ``SchemaParseException``/``UnknownType`` for invalid schemas and
    ``UnsupportedSchemaError`` for recursive ones.
    """
    check_depth(schema)
    named_schemas: dict[str, Any] = dict(named or {})
    parsed = parse_schema(schema, named_schemas=named_schemas, _write_hint=False)
    return _Compiler(named_schemas).build(parsed)


def check_depth(schema: Any) -> None:
    """Refuse a schema (parsed JSON) nested deeper than the bounds, before anything recurses
    over it: walks it with an explicit stack."""
    stack: list[tuple[Any, int, int]] = [(schema, 0, 0)]
    while stack:
        node, records, types = stack.pop()
        if isinstance(node, list):
            types += 1
            children: list[Any] = node
        elif isinstance(node, dict):
            kind = node.get("type")
            if kind in ("record", "error"):
                records += 1
                if records > MAX_RECORD_DEPTH:
                    msg = (
                        f"record {node.get('name')!r} is nested more than {MAX_RECORD_DEPTH}"
                        " records deep"
                    )
                    raise UnsupportedSchemaError(msg)
            if kind in ("record", "error", "array", "map"):
                types += 1
            children = [v for v in node.values() if isinstance(v, dict | list)]
        else:
            continue
        if types > MAX_TYPE_DEPTH:
            msg = f"the schema nests types more than {MAX_TYPE_DEPTH} deep"
            raise UnsupportedSchemaError(msg)
        stack.extend((child, records, types) for child in children)


__all__ = [
    "SchemaParseException",
    "UnknownType",
    "UnsupportedSchemaError",
    "check_depth",
    "compile_schema",
]
