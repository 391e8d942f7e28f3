"""JSON Schema values in the Confluent wire format: JSON text after the 5-byte header.

The payloads of a batch are parsed together by ``pyarrow.json`` (see ``json``), with the column
types taken from the writer's JSON Schema where it pins them down:

    integer -> int64    number -> float64    boolean -> bool    string -> string
    object with properties -> struct          array with items -> list
    ["T", "null"], anyOf/oneOf [T, null] -> nullable T        local $ref -> resolved

Anything looser (several types, objects without properties, remote $refs) is left to
``pyarrow.json``'s inference. Payloads are not validated against the schema message by
message (producers validated them when serializing); a value whose type contradicts its column
fails that message.
"""

from __future__ import annotations

import json
from typing import Any

import pyarrow as pa

from connector.formats.base import Decoded
from connector.formats.confluent import (
    HEADER,
    ConfluentFormat,
    Frame,
    GroupDecoder,
    WrongSchemaType,
)
from connector.formats.json import JsonFormat
from connector.formats.registry import SchemaRegistry

_SCALARS = {"integer": pa.int64(), "number": pa.float64(), "boolean": pa.bool_()}
_MAX_DEPTH = 32


class JsonSchemaGroup:
    def __init__(self, explicit: pa.Schema | None) -> None:
        self.json = JsonFormat(explicit)

    def decode(self, frame: Frame) -> Decoded:
        return self.json.decode_values([v[HEADER:] for v in frame.values])


def json_schema_registry_format(registry: SchemaRegistry) -> ConfluentFormat:
    """JSON Schema in the Confluent wire format, writer schemas from ``registry``."""

    def compile_id(schema_id: int) -> GroupDecoder:
        schema = registry.schema(schema_id)
        kind = (schema.schema_type or "AVRO").upper()
        if kind != "JSON":
            return WrongSchemaType(f"schema id {schema_id} is a {kind} schema, not JSON Schema")
        try:
            document = json.loads(schema.schema_str)
        except (json.JSONDecodeError, RecursionError):  # not JSON, or nested past the stack
            document = None
        return JsonSchemaGroup(arrow_schema(document))

    return ConfluentFormat(compile_id)


def arrow_schema(document: Any) -> pa.Schema | None:
    """The Arrow columns a JSON Schema pins down, or None (pure inference)."""
    if not isinstance(document, dict):
        return None
    node = _unwrap(_resolve(document, document), document)
    if not isinstance(node, dict) or "object" not in _types(node):
        return None
    fields = []
    for name, sub in (node.get("properties") or {}).items():
        typ = _arrow(sub, document, 1)
        if typ is not None:
            fields.append(pa.field(name, typ))
    return pa.schema(fields) if fields else None


def _arrow(node: Any, root: dict[str, Any], depth: int) -> pa.DataType | None:
    node = _unwrap(_resolve(node, root), root)
    if not isinstance(node, dict) or depth > _MAX_DEPTH:
        return None
    types = _types(node)
    if len(types) != 1:
        return None
    (kind,) = types
    if kind in _SCALARS:
        return _SCALARS[kind]
    if kind == "string":
        return pa.string()
    if kind == "array":
        items = node.get("items")
        item = _arrow(items, root, depth + 1) if isinstance(items, dict) else None
        return pa.list_(item) if item is not None else None
    if kind == "object":
        properties = node.get("properties")
        if not isinstance(properties, dict) or not properties:
            return None
        fields = []
        for name, sub in properties.items():
            typ = _arrow(sub, root, depth + 1)
            if typ is None:
                return None  # a struct must be typed completely
            fields.append(pa.field(name, typ))
        return pa.struct(fields)
    return None


def _types(node: dict[str, Any]) -> set[str]:
    """The non-null JSON types a node allows."""
    declared = node.get("type")
    if isinstance(declared, str):
        return {declared} - {"null"}
    if isinstance(declared, list):
        return {t for t in declared if isinstance(t, str)} - {"null"}
    return set()


def _unwrap(node: Any, root: dict[str, Any]) -> Any:
    """``anyOf``/``oneOf`` of one type and null -> that type's node."""
    if not isinstance(node, dict) or "type" in node:
        return node
    for key in ("anyOf", "oneOf"):
        options = node.get(key)
        if isinstance(options, list):
            kept = [o for o in options if not (isinstance(o, dict) and o.get("type") == "null")]
            return _resolve(kept[0], root) if len(kept) == 1 else None
    return node


def _resolve(node: Any, root: dict[str, Any]) -> Any:
    for _ in range(_MAX_DEPTH):
        if not isinstance(node, dict) or "$ref" not in node:
            return node
        ref = node["$ref"]
        if not isinstance(ref, str) or not ref.startswith("#/"):
            return None
        target: Any = root
        for part in ref[2:].split("/"):
            if not isinstance(target, dict) or part not in target:
                return None
            target = target[part]
        node = target
    return None
