"""Avro values: Confluent-framed with the writer schema from the registry, or plain Avro binary
with the writer schema from a file (topics without a registry).

The Arrow schema comes from the writer schema (see ``avro_schema`` for the mapping) and is
compiled once per schema id. Decoding is columnar: no Python object per message.
"""

from __future__ import annotations

import json
from collections.abc import Sequence
from pathlib import Path
from typing import Any

from connector.formats.avro_reader import Reader, Record, read_rows
from connector.formats.avro_schema import (
    SchemaParseException,
    UnknownType,
    UnsupportedSchemaError,
    check_depth,
    compile_schema,
)
from connector.formats.base import MALFORMED, Decoded, Failure
from connector.formats.confluent import ConfluentFormat, Frame, GroupDecoder, WrongSchemaType
from connector.formats.connect import ConnectField, Problems, convert_table
from connector.formats.registry import SchemaRegistry
from connector.formats.vector import Cursor, join
from kafka_etl.errors import ConfigError, TerminalError


class AvroGroup:
    """Decodes Avro payloads written with one schema."""

    def __init__(self, reader: Reader) -> None:
        self.reader = reader
        self.scalar = not isinstance(reader, Record)

    def decode(self, frame: Frame) -> Decoded:
        cursor = Cursor(frame.data, frame.pos, frame.end)
        table = read_rows(self.reader, cursor)
        failures = {i: Failure(MALFORMED, f"avro: {why}") for i, why in cursor.failures().items()}
        return Decoded.of(table, len(frame.pos), failures, self.scalar)


def _registry_schema(
    registry: SchemaRegistry, schema_id: int
) -> tuple[Any, dict[str, Any], str] | WrongSchemaType:
    """The parsed writer schema of ``schema_id``, the named types its references define, and
    where it came from (for errors); or why it is not an Avro schema."""
    schema = registry.schema(schema_id)
    kind = (schema.schema_type or "AVRO").upper()
    if kind != "AVRO":
        return WrongSchemaType(f"schema id {schema_id} is a {kind} schema, not Avro")
    named: dict[str, Any] = {}
    where = f"schema registry {registry.url}: Avro schema id {schema_id}"
    _resolve_references(registry, schema.references or [], named, set(), where)
    return _json(schema.schema_str, where), named, where


def avro_registry_format(registry: SchemaRegistry) -> ConfluentFormat:
    """Avro in the Confluent wire format, writer schemas from ``registry``."""

    def compile_id(schema_id: int) -> GroupDecoder:
        found = _registry_schema(registry, schema_id)
        if isinstance(found, WrongSchemaType):
            return found
        parsed, named, where = found
        return AvroGroup(_compile(parsed, named, where))

    return ConfluentFormat(compile_id)


class ConnectAvroGroup(AvroGroup):
    """Avro written by Kafka Connect's Avro converter: Debezium's logical types (named by
    ``connect.name``) become their real types (``connect.convert``)."""

    def __init__(self, reader: Reader, connect: ConnectField) -> None:
        super().__init__(reader)
        self.connect = connect

    def decode(self, frame: Frame) -> Decoded:
        decoded = super().decode(frame)
        if decoded.scalar or not decoded.table.num_rows:
            return decoded
        problems = Problems()
        table = convert_table(decoded.table, self.connect, problems)
        failures = dict(decoded.failures)
        for i, failure in problems.failures.items():
            failures.setdefault(int(decoded.rows[i]), failure)
        return Decoded(table, decoded.rows, failures, decoded.scalar)


def connect_avro_format(registry: SchemaRegistry) -> ConfluentFormat:
    """Avro in the Confluent wire format as Kafka Connect writes it (logical types converted)."""

    def compile_id(schema_id: int) -> GroupDecoder:
        found = _registry_schema(registry, schema_id)
        if isinstance(found, WrongSchemaType):
            return found
        parsed, named, where = found
        reader = _compile(parsed, named, where)
        return ConnectAvroGroup(reader, ConnectField.from_avro(parsed, named=dict(named)))

    return ConfluentFormat(compile_id)


class PlainAvroFormat:
    """Avro binary without framing, all messages written with the schema in ``path``."""

    def __init__(self, path: str | Path) -> None:
        try:
            schema = json.loads(Path(path).read_text(encoding="utf-8"))
        except OSError as exc:
            msg = f"avro_schema_file {path}: cannot read ({exc.strerror or exc})"
            raise ConfigError(msg) from None
        except json.JSONDecodeError as exc:
            msg = f"avro_schema_file {path}: not JSON ({exc})"
            raise ConfigError(msg) from None
        self.group = AvroGroup(_compile(schema, {}, f"avro_schema_file {path}"))

    def decode_values(self, values: Sequence[bytes]) -> Decoded:
        data, starts, ends = join(values)
        return self.group.decode(Frame(data, starts, ends, values))


_INVALID = (SchemaParseException, UnknownType, KeyError, TypeError, ValueError, AttributeError)


def _compile(schema: Any, named: dict[str, Any], where: str) -> Reader:
    try:
        return compile_schema(schema, named)
    except _INVALID as exc:
        kind = "is not supported" if isinstance(exc, UnsupportedSchemaError) else "is invalid"
        msg = f"{where} {kind}: {exc}"
        raise TerminalError(msg) from None
    except RecursionError:  # bounded by check_depth; a last guard against a crash
        msg = f"{where} is not supported: nested too deeply"
        raise TerminalError(msg) from None


def _json(text: str, where: str) -> Any:
    """A schema string from the registry as JSON; one line if it is not JSON."""
    try:
        return json.loads(text)
    except (json.JSONDecodeError, RecursionError) as exc:
        why = "nested too deeply" if isinstance(exc, RecursionError) else str(exc)
        msg = f"{where} is invalid: not JSON ({why})"
        raise TerminalError(msg) from None


def _resolve_references(
    registry: SchemaRegistry,
    references: list[Any],
    named: dict[str, Any],
    seen: set[str],
    where: str,
) -> None:
    """Named types from referenced schemas (depth first, so dependencies parse first)."""
    from fastavro import parse_schema

    for ref in references:
        key = f"{ref.subject}/{ref.version}"
        if key in seen:
            continue
        seen.add(key)
        registered = registry.version(ref.subject, ref.version)
        _resolve_references(registry, registered.schema.references or [], named, seen, where)
        here = f"{where}: reference {ref.subject!r} version {ref.version}"
        schema = _json(registered.schema.schema_str, here)
        try:
            check_depth(schema)
            parse_schema(schema, named_schemas=named)
        except _INVALID as exc:
            msg = f"{here} is invalid: {exc}"
            raise TerminalError(msg) from None
