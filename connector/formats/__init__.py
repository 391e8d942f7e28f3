"""Message formats: JSON, Avro, Protobuf, JSON Schema (Confluent wire format), string, bytes.

``build_decoder`` assembles the ``Decoder`` for a pipeline: a value format, a key format for the
``_key`` column and, when asked, the ``_headers`` column. Columns come from the data:

    json          fields of the JSON objects (types inferred, or fixed by ``explicit``)
    avro          fields of the writer schema's record (schema registry, or a plain .avsc file)
    protobuf      fields of the writer's message type (schema registry)
    json_schema   fields of the JSON objects, types from the writer's JSON Schema
    string        one ``value`` column, UTF-8 text
    bytes         one ``value`` column, binary

``_key`` is decoded with the key format: ``string`` (the default) and ``json`` give text,
``bytes`` gives binary, and the registry formats give the key's own type (a struct for a record
key, a scalar for e.g. an Avro ``"string"`` key).
"""

from __future__ import annotations

from collections.abc import Mapping
from pathlib import Path
from typing import Any

# numpy imports ``numpy.ma`` lazily, on first use, and pyarrow uses it (``pa.array(..., mask=)``).
# Batches are decoded on several threads at once (``decode_threads``), and two threads making
# that first use together send numpy's lazy import into endless recursion: import it now.
import numpy.ma  # noqa: F401
import pyarrow as pa

from connector.formats.base import (
    Decoded,
    Decoder,
    Failure,
    FrameDecoder,
    Reject,
    ValueFormat,
)
from connector.formats.registry import SchemaRegistry, SchemaRegistryUnavailableError
from connector.names import FORMATS, REGISTRY_FORMATS, Format
from kafka_etl.errors import ConfigError
from kafka_etl.extras import require


def value_format(
    name: Format,
    *,
    registry: SchemaRegistry | None = None,
    avro_schema_file: str | Path | None = None,
    explicit: pa.Schema | None = None,
) -> ValueFormat:
    """The bulk decoder of one format (for values or keys)."""
    if name == "json":
        from connector.formats.json import JsonFormat

        return JsonFormat(explicit)
    if name == "string":
        from connector.formats.text import StringFormat

        return StringFormat()
    if name == "bytes":
        from connector.formats.text import BytesFormat

        return BytesFormat()
    if name == "avro" and avro_schema_file is not None:
        from connector.formats.avro import PlainAvroFormat

        return PlainAvroFormat(avro_schema_file)
    if registry is None:
        msg = f"format {name!r} needs a schema registry ('schema_registry: {{url: ...}}')"
        raise ConfigError(msg)
    if name == "avro":
        from connector.formats.avro import avro_registry_format

        return avro_registry_format(registry)
    if name == "protobuf":
        require("google.protobuf", "protobuf", "format 'protobuf'")
        from connector.formats.protobuf import protobuf_registry_format

        return protobuf_registry_format(registry)
    if name == "json_schema":
        from connector.formats.json_schema import json_schema_registry_format

        return json_schema_registry_format(registry)
    msg = f"unknown format {name!r} (one of {', '.join(FORMATS)})"
    raise ConfigError(msg)


def build_decoder(
    format: Format = "json",
    key_format: Format = "string",
    *,
    schema_registry: Mapping[str, Any] | SchemaRegistry | None = None,
    avro_schema_file: str | Path | None = None,
    explicit: pa.Schema | None = None,
    include_headers: bool = False,
) -> FrameDecoder:
    """The decoder for one pipeline. ``schema_registry`` is a confluent-kafka client config
    (``url``, ``basic.auth.user.info``, ...) or a ``SchemaRegistry``; ``avro_schema_file`` makes
    ``avro`` values plain Avro written with that schema; ``explicit`` fixes JSON column types."""
    registry = schema_registry
    if isinstance(registry, Mapping):
        registry = SchemaRegistry(registry)
    values = value_format(
        format, registry=registry, avro_schema_file=avro_schema_file, explicit=explicit
    )
    key_name: Format = "string" if key_format == "json" else key_format
    keys = value_format(key_name, registry=registry)
    return FrameDecoder(values, keys, include_headers=include_headers)


def build_debezium_decoder(
    format: Format = "json",
    key_format: Format = "json",
    *,
    schema_registry: Mapping[str, Any] | SchemaRegistry | None = None,
    explicit: pa.Schema | None = None,
    include_headers: bool = False,
    key: tuple[str, ...] | None = None,
    pipeline: str = "",
) -> Decoder:
    """The decoder of ``envelope: debezium``: values and keys as Kafka Connect's JSON converter
    (with or without schemas) or Avro converter (through ``schema_registry``) writes them;
    ``explicit`` types the ``after`` fields of schemaless JSON; ``key`` names the identity
    fields (None: the record key's). See ``connector.formats.debezium``."""
    from connector.formats.debezium import DebeziumDecoder

    registry = schema_registry
    if isinstance(registry, Mapping):
        registry = SchemaRegistry(registry)

    def connect_format(name: Format, explicit: pa.Schema | None = None) -> ValueFormat:
        if name == "json":
            from connector.formats.connect_json import ConnectJsonFormat

            return ConnectJsonFormat(explicit)
        if name == "avro":
            if registry is None:
                msg = "format 'avro' needs a schema registry ('schema_registry: {url: ...}')"
                raise ConfigError(msg)
            from connector.formats.avro import connect_avro_format

            return connect_avro_format(registry)
        msg = f"envelope 'debezium' reads json or avro, not {name!r}"
        raise ConfigError(msg)

    if explicit is not None:  # the row's fields are in 'before' and 'after'
        row = pa.struct(list(explicit))
        explicit = pa.schema([("before", row), ("after", row)])
    return DebeziumDecoder(
        connect_format(format, explicit),
        connect_format(key_format),
        key=key,
        include_headers=include_headers,
        pipeline=pipeline,
    )


__all__ = [
    "FORMATS",
    "REGISTRY_FORMATS",
    "Decoded",
    "Decoder",
    "Failure",
    "Format",
    "FrameDecoder",
    "Reject",
    "SchemaRegistry",
    "SchemaRegistryUnavailableError",
    "ValueFormat",
    "build_debezium_decoder",
    "build_decoder",
    "value_format",
]
