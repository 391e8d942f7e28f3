"""Avro against a real Schema Registry: types from the writer schema, values, bad messages."""

from __future__ import annotations

import datetime as dt
import decimal
import json
import uuid
from pathlib import Path
from typing import Any

import pyarrow as pa
import pytest
from confluent_kafka.schema_registry import Schema, SchemaRegistryClient
from confluent_kafka.schema_registry.avro import AvroSerializer
from confluent_kafka.serialization import MessageField, SerializationContext

from connector.formats import build_decoder
from connector.formats.registry import SchemaRegistryUnavailableError
from kafka_etl.errors import RecordError, TerminalError, TransientError
from tests.formats.support import avro_bytes, framed, raw_batch, unique

UTC = dt.UTC

ORDER: dict[str, Any] = {
    "type": "record",
    "name": "Order",
    "namespace": "shop",
    "fields": [
        {"name": "id", "type": "long"},
        {"name": "qty", "type": "int"},
        {"name": "price", "type": "double"},
        {"name": "ratio", "type": "float"},
        {"name": "paid", "type": "boolean"},
        {"name": "customer", "type": "string"},
        {"name": "blob", "type": "bytes"},
        {"name": "note", "type": ["null", "string"], "default": None},
        {"name": "status", "type": {"type": "enum", "name": "Status", "symbols": ["NEW", "PAID"]}},
        {"name": "code", "type": {"type": "fixed", "name": "Code", "size": 3}},
        {
            "name": "address",
            "type": {
                "type": "record",
                "name": "Address",
                "fields": [{"name": "city", "type": "string"}, {"name": "zip", "type": "int"}],
            },
        },
        {"name": "home", "type": ["null", "Address"], "default": None},
        {
            "name": "items",
            "type": {
                "type": "array",
                "items": {
                    "type": "record",
                    "name": "Item",
                    "fields": [
                        {"name": "sku", "type": "string"},
                        {"name": "tags", "type": {"type": "array", "items": "string"}},
                    ],
                },
            },
        },
        {"name": "attrs", "type": {"type": "map", "values": ["null", "long"]}},
        {"name": "choice", "type": ["null", "string", "long"], "default": None},
        {"name": "ts_ms", "type": {"type": "long", "logicalType": "timestamp-millis"}},
        {"name": "ts_us", "type": {"type": "long", "logicalType": "timestamp-micros"}},
        {"name": "local_us", "type": {"type": "long", "logicalType": "local-timestamp-micros"}},
        {"name": "day", "type": {"type": "int", "logicalType": "date"}},
        {"name": "t_ms", "type": {"type": "int", "logicalType": "time-millis"}},
        {"name": "t_us", "type": {"type": "long", "logicalType": "time-micros"}},
        {
            "name": "amount",
            "type": {"type": "bytes", "logicalType": "decimal", "precision": 12, "scale": 2},
        },
        {
            "name": "big",
            "type": {
                "type": "fixed",
                "name": "Big",
                "size": 20,
                "logicalType": "decimal",
                "precision": 45,
                "scale": 5,
            },
        },
        {"name": "uid", "type": {"type": "string", "logicalType": "uuid"}},
    ],
}

EXPECTED_TYPES = {
    "id": pa.int64(),
    "qty": pa.int32(),
    "price": pa.float64(),
    "ratio": pa.float32(),
    "paid": pa.bool_(),
    "customer": pa.string(),
    "blob": pa.binary(),
    "note": pa.string(),
    "status": pa.string(),
    "code": pa.binary(),
    "address": pa.struct([("city", pa.string()), ("zip", pa.int32())]),
    "home": pa.struct([("city", pa.string()), ("zip", pa.int32())]),
    "items": pa.list_(pa.struct([("sku", pa.string()), ("tags", pa.list_(pa.string()))])),
    "attrs": pa.map_(pa.string(), pa.int64()),
    "choice": pa.struct([("string", pa.string()), ("long", pa.int64())]),
    "ts_ms": pa.timestamp("ms", tz="UTC"),
    "ts_us": pa.timestamp("us", tz="UTC"),
    "local_us": pa.timestamp("us"),
    "day": pa.date32(),
    "t_ms": pa.time64("us"),
    "t_us": pa.time64("us"),
    "amount": pa.decimal128(12, 2),
    "big": pa.decimal256(45, 5),
    "uid": pa.string(),
}


def order(i: int) -> dict[str, Any]:
    return {
        "id": i * 1_000_003 - 7,
        "qty": -i,
        "price": i / 7,
        "ratio": 0.5,
        "paid": i % 2 == 0,
        "customer": f"cüstomer {i}",
        "blob": bytes([i % 256]) * (i % 4),
        "note": None if i % 3 else f"n{i}",
        "status": "PAID" if i % 2 else "NEW",
        "code": b"abc",
        "address": {"city": "Zürich", "zip": 8000 + i},
        "home": None if i % 2 else {"city": "Bern", "zip": 3000},
        "items": [{"sku": f"s{j}", "tags": ["x"] * j} for j in range(i % 3)],
        "attrs": {f"k{j}": (None if j == 1 else j) for j in range(i % 3)},
        "choice": [None, "text", 42][i % 3],
        "ts_ms": dt.datetime(2024, 5, 1, 12, 0, 0, 123000, tzinfo=UTC),
        "ts_us": dt.datetime(1969, 12, 31, 23, 59, 59, 999999, tzinfo=UTC),
        "local_us": dt.datetime(2024, 5, 1, 12, 0, 0, 1, tzinfo=UTC).replace(tzinfo=None),
        "day": dt.date(2024, 2, 29),
        "t_ms": dt.time(23, 59, 59, 999000),
        "t_us": dt.time(0, 0, 0, 1),
        "amount": decimal.Decimal(i * 37 - 500) / 100,
        "big": decimal.Decimal("-1234567890123456789012345678901234567.89012")
        if i % 2
        else decimal.Decimal(i),
        "uid": str(uuid.UUID(int=i)),
    }


def as_decoded(record: dict[str, Any]) -> dict[str, Any]:
    """What the Arrow row holds for ``record`` (maps as pairs, unions as structs)."""
    row = dict(record)
    row["attrs"] = list(record["attrs"].items())
    choice = record["choice"]
    row["choice"] = (
        None
        if choice is None
        else {
            "string": choice if isinstance(choice, str) else None,
            "long": choice if isinstance(choice, int) else None,
        }
    )
    return row


def serializer(client: SchemaRegistryClient, schema: dict[str, Any]) -> AvroSerializer:
    return AvroSerializer(client, json.dumps(schema))


def ctx(topic: str) -> SerializationContext:
    return SerializationContext(topic, MessageField.VALUE)


def test_columns_and_types_come_from_the_writer_schema(
    schema_registry_url: str, registry_client: SchemaRegistryClient
) -> None:
    topic = unique("orders")
    ser = serializer(registry_client, ORDER)
    values = [ser(order(i), ctx(topic)) for i in range(30)]
    decoder = build_decoder("avro", schema_registry={"url": schema_registry_url})

    batch = decoder.decode(raw_batch(values))

    schema = batch.rows.schema
    for name, typ in EXPECTED_TYPES.items():
        assert schema.field(name).type == typ, name
    assert batch.rows.column_names[: len(ORDER["fields"])] == [f["name"] for f in ORDER["fields"]]
    rows = batch.rows.select(list(EXPECTED_TYPES)).to_pylist()
    assert rows == [as_decoded(order(i)) for i in range(30)]
    assert batch.rows.column("_offset").to_pylist() == list(range(100, 130))


def test_several_writer_schemas_in_one_batch_are_joined_in_message_order(
    schema_registry_url: str, registry_client: SchemaRegistryClient
) -> None:
    subject = unique("evolving")
    v1 = {"type": "record", "name": "E", "fields": [{"name": "a", "type": "int"}]}
    v2 = {
        "type": "record",
        "name": "E",
        "fields": [
            {"name": "a", "type": "long"},
            {"name": "b", "type": ["null", "string"], "default": None},
        ],
    }
    id1 = registry_client.register_schema(subject, Schema(json.dumps(v1), "AVRO"))
    id2 = registry_client.register_schema(subject, Schema(json.dumps(v2), "AVRO"))
    values = [
        framed(id1, avro_bytes(v1, {"a": 1})),
        framed(id2, avro_bytes(v2, {"a": 2**40, "b": "x"})),
        framed(id1, avro_bytes(v1, {"a": 3})),
        framed(id2, avro_bytes(v2, {"a": 4, "b": None})),
    ]
    decoder = build_decoder("avro", schema_registry={"url": schema_registry_url})

    rows = decoder.decode(raw_batch(values)).rows

    assert rows.schema.field("a").type == pa.int64()
    assert rows.select(["a", "b", "_offset"]).to_pylist() == [
        {"a": 1, "b": None, "_offset": 100},
        {"a": 2**40, "b": "x", "_offset": 101},
        {"a": 3, "b": None, "_offset": 102},
        {"a": 4, "b": None, "_offset": 103},
    ]


def test_a_later_schema_with_a_conflicting_type_sets_its_messages_aside(
    schema_registry_url: str, registry_client: SchemaRegistryClient
) -> None:
    first = {"type": "record", "name": "C", "fields": [{"name": "a", "type": "long"}]}
    second = {"type": "record", "name": "C", "fields": [{"name": "a", "type": "string"}]}
    id1 = registry_client.register_schema(unique("c1"), Schema(json.dumps(first), "AVRO"))
    id2 = registry_client.register_schema(unique("c2"), Schema(json.dumps(second), "AVRO"))
    values = [framed(id1, avro_bytes(first, {"a": 1})), framed(id2, avro_bytes(second, {"a": "x"}))]
    decoder = build_decoder("avro", schema_registry={"url": schema_registry_url})

    batch, rejects = decoder.decode_tolerant(raw_batch(values))

    assert batch.rows.column("a").to_pylist() == [1]
    assert [(r.offset, r.error) for r in rejects] == [(101, "type_conflict")]
    assert "field 'a' is string, earlier messages had int64" in rejects[0].message


def bad_messages(good_id: int, schema: dict[str, Any]) -> list[tuple[str, bytes, str]]:
    body = avro_bytes(schema, {"name": "ok", "n": 1, "e": "B", "u": None})
    return [
        ("empty", b"", "wire_format"),
        ("too short", b"\x00\x00\x01", "wire_format"),
        ("wrong magic byte", b"\x01" + framed(good_id, body)[1:], "wire_format"),
        ("json instead of avro", b'{"name": "ok"}', "wire_format"),
        ("unknown schema id", framed(987_654_321, body), "unknown_schema"),
        ("truncated", framed(good_id, body[:-2]), "malformed"),
        ("header only", framed(good_id, b""), "malformed"),
        ("trailing bytes", framed(good_id, body + b"\x00"), "malformed"),
        ("string past the end", framed(good_id, b"\x7f" + body[1:]), "malformed"),
        ("negative length", framed(good_id, b"\x03abc" + body[4:]), "malformed"),
        ("invalid utf-8", framed(good_id, b"\x04\xff\xfe" + body[3:]), "malformed"),
        ("enum index out of range", framed(good_id, body[:-2] + b"\x08\x00"), "malformed"),
        ("union branch out of range", framed(good_id, body[:-1] + b"\x06"), "malformed"),
    ]


def test_each_bad_message_is_set_aside_with_its_coordinates_and_reason(
    schema_registry_url: str, registry_client: SchemaRegistryClient
) -> None:
    schema = {
        "type": "record",
        "name": "B",
        "fields": [
            {"name": "name", "type": "string"},
            {"name": "n", "type": "long"},
            {"name": "e", "type": {"type": "enum", "name": "EB", "symbols": ["A", "B"]}},
            {"name": "u", "type": ["null", "long"]},
        ],
    }
    good_id = registry_client.register_schema(unique("bad"), Schema(json.dumps(schema), "AVRO"))
    good = framed(good_id, avro_bytes(schema, {"name": "fine", "n": 7, "e": "A", "u": 5}))
    cases = bad_messages(good_id, schema)
    values = [good]
    for _, value, _ in cases:
        values += [value, good]
    decoder = build_decoder("avro", schema_registry={"url": schema_registry_url})

    batch, rejects = decoder.decode_tolerant(raw_batch(values, keys=[b"k"] * len(values)))

    assert batch.rows.num_rows == len(cases) + 1
    assert set(batch.rows.column("name").to_pylist()) == {"fine"}
    assert [r.offset for r in rejects] == [101 + 2 * i for i in range(len(cases))]
    for reject, (label, value, error) in zip(rejects, cases, strict=True):
        assert (reject.error, reject.value, reject.key) == (error, value, b"k"), label
        assert reject.message, label
    with pytest.raises(RecordError, match=r"^t/0@101: .*Confluent wire format"):
        decoder.decode(raw_batch(values))


def test_plain_avro_from_a_schema_file(tmp_path: Path) -> None:
    path = tmp_path / "order.avsc"
    path.write_text(json.dumps(ORDER), encoding="utf-8")
    decoder = build_decoder("avro", avro_schema_file=path)
    values = [avro_bytes(ORDER, order(i)) for i in range(5)]

    batch, rejects = decoder.decode_tolerant(raw_batch([*values, b"\x00"]))

    assert batch.rows.select(list(EXPECTED_TYPES)).to_pylist() == [
        as_decoded(order(i)) for i in range(5)
    ]
    assert [(r.offset, r.error) for r in rejects] == [(105, "malformed")]


def test_avro_keys_keep_their_own_type(
    schema_registry_url: str, registry_client: SchemaRegistryClient
) -> None:
    record_key = {"type": "record", "name": "K", "fields": [{"name": "id", "type": "long"}]}
    record_id = registry_client.register_schema(unique("k"), Schema(json.dumps(record_key), "AVRO"))
    string_id = registry_client.register_schema(unique("s"), Schema('"string"', "AVRO"))
    registry = {"url": schema_registry_url}
    values = [b"x", b"y", b"z"]

    keys: list[bytes | None] = [
        framed(record_id, avro_bytes(record_key, {"id": n})) for n in (1, 2)
    ]
    records = build_decoder("bytes", "avro", schema_registry=registry).decode(
        raw_batch(values, [*keys, None])
    )
    strings = build_decoder("bytes", "avro", schema_registry=registry).decode(
        raw_batch(values, [framed(string_id, avro_bytes("string", s)) for s in "abc"])
    )

    assert records.rows.column("_key").to_pylist() == [{"id": 1}, {"id": 2}, None]
    assert strings.rows.column("_key").to_pylist() == ["a", "b", "c"]


def test_a_value_field_named_like_a_metadata_column_is_a_per_message_error(
    schema_registry_url: str, registry_client: SchemaRegistryClient
) -> None:
    schema = {"type": "record", "name": "M", "fields": [{"name": "_offset", "type": "long"}]}
    sid = registry_client.register_schema(unique("m"), Schema(json.dumps(schema), "AVRO"))
    decoder = build_decoder("avro", schema_registry={"url": schema_registry_url})

    value = framed(sid, avro_bytes(schema, {"_offset": 1}))
    batch, rejects = decoder.decode_tolerant(raw_batch([value]))

    assert batch.rows.num_rows == 0
    assert [r.error for r in rejects] == ["metadata_clash"]


def test_an_unreachable_registry_is_transient_never_a_rejected_message() -> None:
    decoder = build_decoder(
        "avro", schema_registry={"url": "http://127.0.0.1:9", "max.retries": 0, "timeout": 2}
    )
    with pytest.raises(SchemaRegistryUnavailableError) as caught:
        decoder.decode_tolerant(raw_batch([framed(1, b"\x02")]))
    assert isinstance(caught.value, TransientError)
    assert "127.0.0.1:9" in str(caught.value)


def test_a_wrong_registry_url_is_a_configuration_error(schema_registry_url: str) -> None:
    wrong = schema_registry_url.removesuffix("/apis/ccompat/v7") + "/not-a-registry"
    decoder = build_decoder("avro", schema_registry={"url": wrong, "max.retries": 0})
    with pytest.raises(TerminalError, match="check the registry URL"):
        decoder.decode_tolerant(raw_batch([framed(1, b"\x02")]))


def test_a_schema_id_of_another_format_is_a_per_message_error(
    schema_registry_url: str, registry_client: SchemaRegistryClient
) -> None:
    document = {"$schema": "http://json-schema.org/draft-07/schema#", "type": "object"}
    sid = registry_client.register_schema(unique("j"), Schema(json.dumps(document), "JSON"))
    decoder = build_decoder("avro", schema_registry={"url": schema_registry_url})

    _, rejects = decoder.decode_tolerant(raw_batch([framed(sid, b"{}")]))

    assert [(r.error, r.message) for r in rejects] == [
        ("wire_format", f"schema id {sid} is a JSON schema, not Avro")
    ]


def test_a_recursive_schema_is_refused_with_a_clear_message(
    schema_registry_url: str, registry_client: SchemaRegistryClient
) -> None:
    node = {
        "type": "record",
        "name": "Node",
        "fields": [{"name": "next", "type": ["null", "Node"]}],
    }
    sid = registry_client.register_schema(unique("rec"), Schema(json.dumps(node), "AVRO"))
    decoder = build_decoder("avro", schema_registry={"url": schema_registry_url})
    with pytest.raises(TerminalError, match="recursive type 'Node'"):
        decoder.decode(raw_batch([framed(sid, b"\x00")]))
