"""Avro and Protobuf round trips: 100,000 messages with nested records, arrays and logical types
through the real broker and the real schema registry into a warehouse, via run_pipeline.

Parametrised over DuckDB and PostgreSQL (nested values land as structs in DuckDB, JSONB in
PostgreSQL). The row and offset checks are sink-agnostic; the full value comparison reads the
table back through DuckDB's own driver and is done where the sink is DuckDB.
"""

from __future__ import annotations

import datetime as dt
import decimal
import json
import uuid
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest
from confluent_kafka.schema_registry import SchemaRegistryClient
from confluent_kafka.schema_registry.avro import AvroSerializer
from confluent_kafka.schema_registry.protobuf import ProtobufSerializer
from confluent_kafka.serialization import MessageField, SerializationContext

from pipelines.runner import run_pipeline
from tests.fixtures.databases import sinks
from tests.fixtures.kafka import TopicFactory, produce_json
from tests.formats.support import protobuf_classes, protobuf_expected, protobuf_order
from tests.helpers import high_watermarks, project_for, table_offsets, write_pipelines

N = 100_000
PARTITIONS = 3
UTC = dt.UTC

ORDER_AVRO: dict[str, Any] = {
    "type": "record",
    "name": "Order",
    "namespace": "shop",
    "fields": [
        {"name": "id", "type": "long"},
        {
            "name": "customer",
            "type": {
                "type": "record",
                "name": "Customer",
                "fields": [
                    {"name": "name", "type": "string"},
                    {"name": "email", "type": ["null", "string"], "default": None},
                    {
                        "name": "address",
                        "type": {
                            "type": "record",
                            "name": "Address",
                            "fields": [
                                {"name": "city", "type": "string"},
                                {"name": "zip", "type": "int"},
                            ],
                        },
                    },
                ],
            },
        },
        {
            "name": "items",
            "type": {
                "type": "array",
                "items": {
                    "type": "record",
                    "name": "Item",
                    "fields": [
                        {"name": "sku", "type": "string"},
                        {"name": "qty", "type": "int"},
                        {
                            "name": "price",
                            "type": {
                                "type": "bytes",
                                "logicalType": "decimal",
                                "precision": 10,
                                "scale": 2,
                            },
                        },
                    ],
                },
            },
        },
        {"name": "tags", "type": {"type": "array", "items": "string"}},
        {"name": "attrs", "type": {"type": "map", "values": "long"}},
        {"name": "status", "type": {"type": "enum", "name": "Status", "symbols": ["NEW", "PAID"]}},
        {"name": "placed", "type": {"type": "long", "logicalType": "timestamp-millis"}},
        {"name": "updated", "type": {"type": "long", "logicalType": "timestamp-micros"}},
        {"name": "due", "type": {"type": "int", "logicalType": "date"}},
        {
            "name": "total",
            "type": {"type": "bytes", "logicalType": "decimal", "precision": 12, "scale": 2},
        },
        {"name": "ref", "type": {"type": "string", "logicalType": "uuid"}},
        {"name": "note", "type": ["null", "string"], "default": None},
    ],
}


def avro_order(i: int) -> dict[str, Any]:
    base = dt.datetime(2024, 1, 1, tzinfo=UTC)
    return {
        "id": i,
        "customer": {
            "name": f"customer {i % 997}",
            "email": None if i % 4 else f"c{i}@example.com",
            "address": {"city": ["Bern", "Zürich", "Genève"][i % 3], "zip": 1000 + i % 9000},
        },
        "items": [
            {"sku": f"sku-{i % 50}-{j}", "qty": j + 1, "price": decimal.Decimal(i % 10_000) / 100}
            for j in range(i % 4)
        ],
        "tags": ["a", "b", "c"][: i % 3],
        "attrs": {f"k{j}": i * j for j in range(i % 3)},
        "status": "PAID" if i % 2 else "NEW",
        "placed": base + dt.timedelta(milliseconds=i * 1001),
        "updated": base + dt.timedelta(microseconds=i * 1_000_003),
        "due": dt.date(2024, 1, 1) + dt.timedelta(days=i % 400),
        "total": decimal.Decimal(i * 37 % 10_000_000) / 100,
        "ref": str(uuid.UUID(int=i * 7919)),
        "note": None if i % 5 else f"note {i}",
    }


def avro_expected(i: int) -> dict[str, Any]:
    row = avro_order(i)
    row["attrs"] = sorted(row["attrs"].items())
    return row


Expected = Callable[[int], dict[str, Any]]


def avro_values(client: SchemaRegistryClient, topic: str) -> tuple[list[bytes], Expected]:
    ser = AvroSerializer(client, json.dumps(ORDER_AVRO))
    ctx = SerializationContext(topic, MessageField.VALUE)
    return [ser(avro_order(i), ctx) for i in range(N)], avro_expected


def protobuf_values(client: SchemaRegistryClient, topic: str) -> tuple[list[bytes], Expected]:
    order = protobuf_classes()["Order"]
    ser = ProtobufSerializer(order, client, {"use.deprecated.format": False})
    ctx = SerializationContext(topic, MessageField.VALUE)

    def expected(i: int) -> dict[str, Any]:
        row = protobuf_expected(protobuf_order(order, i))
        return {**row, "id": i}

    values = []
    for i in range(N):
        message = protobuf_order(order, i)
        message.id = i  # a unique id to order the read-back by
        values.append(ser(message, ctx))
    return values, expected


BUILDERS = {"avro": avro_values, "protobuf": protobuf_values}


@sinks("duckdb", "postgresql")
@pytest.mark.parametrize("fmt", ["avro", "protobuf"])
def test_100k_messages_round_trip_exactly_once(
    fmt: str,
    sink_url: str,
    tmp_path: Path,
    kafka_bootstrap: str,
    topic_factory: TopicFactory,
    schema_registry_url: str,
    registry_client: SchemaRegistryClient,
) -> None:
    topic = topic_factory(PARTITIONS)
    values, expected = BUILDERS[fmt](registry_client, topic)
    keys = [str(i).encode() for i in range(N)]
    produce_json(kafka_bootstrap, topic, values, keys)
    body = {
        "topic": topic,
        "target": sink_url,
        "table": "orders",
        "format": fmt,
        "schema_registry": {"url": schema_registry_url},
        "batch_max_rows": 25_000,
    }
    config = write_pipelines(tmp_path, kafka_bootstrap, {"orders": body})
    project = project_for(config)

    first = run_pipeline(project, "orders")
    again = run_pipeline(project, "orders")

    assert (first.rows, again.rows) == (N, 0)
    marks = high_watermarks(kafka_bootstrap, topic, PARTITIONS)
    everything = sorted((p, o) for p in range(PARTITIONS) for o in range(marks[p]))
    assert table_offsets(sink_url, tmp_path, "orders") == everything
    if sink_url.startswith("duckdb"):
        assert_duckdb_rows(sink_url, tmp_path, expected)


def assert_duckdb_rows(sink_url: str, base: Path, expected: Expected) -> None:
    import duckdb

    from sinks.factory import resolve_target

    url = resolve_target(sink_url, base)
    con = duckdb.connect(url.database or ":memory:", read_only=True)
    try:
        table = con.sql("SELECT * FROM orders ORDER BY id").to_arrow_table()
    finally:
        con.close()
    names = [n for n in table.column_names if not n.startswith("_")]
    keys = table.column("_key").to_pylist()
    rows = table.select(names).to_pylist()
    assert len(rows) == N
    for i, row in enumerate(rows):
        want = expected(i)
        row = {k: row[k] for k in want}
        if "attrs" in row:
            row["attrs"] = sorted((k, v) for k, v in row["attrs"])
        assert row == want, i
        assert keys[i] == str(i)
