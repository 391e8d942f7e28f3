"""Protobuf against a real Schema Registry: types from the descriptor, values as protobuf's own
parser sees them, message types chosen per message, .proto text schemas, bad messages."""

from __future__ import annotations

from typing import Any

import pyarrow as pa
import pytest
from confluent_kafka.schema_registry import Schema, SchemaRegistryClient
from confluent_kafka.schema_registry.protobuf import ProtobufSerializer
from confluent_kafka.serialization import MessageField, SerializationContext

from connector.formats import build_decoder
from kafka_etl.errors import RecordError
from tests.formats.support import (
    framed,
    protobuf_classes,
    protobuf_expected,
    protobuf_order,
    raw_batch,
    unique,
)

CLASSES = protobuf_classes()
ORDER = CLASSES["Order"]

EXPECTED_TYPES = {
    "id": pa.int64(),
    "customer": pa.string(),
    "placed": pa.timestamp("us", tz="UTC"),
    "total": pa.struct([("units", pa.int64()), ("currency", pa.string())]),
    "items": pa.list_(
        pa.struct([("sku", pa.string()), ("qty", pa.int32()), ("tags", pa.list_(pa.string()))])
    ),
    "status": pa.string(),
    "weights": pa.list_(pa.float64()),
    "counts": pa.list_(pa.int32()),
    "paid": pa.bool_(),
    "coupon": pa.string(),
    "ttl": pa.month_day_nano_interval(),
    "discount": pa.int64(),
    "extra": pa.string(),
    "attrs": pa.map_(pa.string(), pa.int64()),
    "ratio": pa.float32(),
    "big": pa.uint64(),
    "flags": pa.uint32(),
    "blob": pa.binary(),
}


def serialize(
    client: SchemaRegistryClient, cls: Any, topic: str, messages: list[Any]
) -> list[bytes]:
    ser = ProtobufSerializer(cls, client, {"use.deprecated.format": False})
    ctx = SerializationContext(topic, MessageField.VALUE)
    return [ser(m, ctx) for m in messages]


def rows_of(table: pa.Table) -> list[dict[str, Any]]:
    rows = table.select(list(EXPECTED_TYPES)).to_pylist()
    for row in rows:
        row["attrs"] = sorted(row["attrs"])
    return rows


def test_columns_types_and_values_follow_the_descriptor(
    schema_registry_url: str, registry_client: SchemaRegistryClient
) -> None:
    messages = [protobuf_order(ORDER, i) for i in range(60)]
    values = serialize(registry_client, ORDER, unique("orders"), messages)
    assert values[0][5:7] == b"\x02\x02"  # message-index path [1]: Order, the second message
    decoder = build_decoder("protobuf", schema_registry={"url": schema_registry_url})

    batch = decoder.decode(raw_batch(values))

    for name, typ in EXPECTED_TYPES.items():
        assert batch.rows.schema.field(name).type == typ, name
    assert rows_of(batch.rows) == [protobuf_expected(ORDER.FromString(v[7:])) for v in values]


def test_struct_fields_become_json_text_with_sorted_keys(
    schema_registry_url: str, registry_client: SchemaRegistryClient
) -> None:
    # protobuf keeps a Struct's fields in a map whose order changes from process to process;
    # the same message must still always load as the same text.
    fields = {k: i for i, k in enumerate(["zeta", "b", "omega", "a", "k", "mu", "c", "y"])}
    message = ORDER(id=1)
    message.extra.update({**fields, "nested": {"z": 1, "a": [True, None]}})
    values = serialize(registry_client, ORDER, unique("structs"), [message])
    decoder = build_decoder("protobuf", schema_registry={"url": schema_registry_url})

    text = decoder.decode(raw_batch(values)).rows.column("extra").to_pylist()[0]

    assert text == (
        '{"a": 3.0, "b": 1.0, "c": 6.0, "k": 4.0, "mu": 5.0, '
        '"nested": {"a": [true, null], "z": 1.0}, "omega": 2.0, "y": 7.0, "zeta": 0.0}'
    )


def test_messages_of_several_types_in_one_batch_keep_their_order(
    schema_registry_url: str, registry_client: SchemaRegistryClient
) -> None:
    topic = unique("mixed")
    line = CLASSES["Order.Line"]
    orders = serialize(registry_client, ORDER, topic, [ORDER(id=1), ORDER(id=3)])
    lines = serialize(registry_client, line, topic + "-l", [line(text="two"), line(text="four")])
    assert lines[0][5:8] == b"\x04\x02\x00"  # path [1, 0]: Order.Line, nested in Order
    decoder = build_decoder("protobuf", schema_registry={"url": schema_registry_url})

    rows = decoder.decode(raw_batch([orders[0], lines[0], orders[1], lines[1]])).rows

    assert rows.select(["id", "text", "_offset"]).to_pylist() == [
        {"id": 1, "text": None, "_offset": 100},
        {"id": None, "text": "two", "_offset": 101},
        {"id": 3, "text": None, "_offset": 102},
        {"id": None, "text": "four", "_offset": 103},
    ]


def test_proto_text_schemas_are_compiled(
    schema_registry_url: str, registry_client: SchemaRegistryClient
) -> None:
    text = (
        'syntax = "proto3";\npackage text;\nimport "google/protobuf/timestamp.proto";\n'
        "message Event {\n  int64 id = 1;\n  google.protobuf.Timestamp at = 2;\n"
        "  repeated string tags = 3;\n}\n"
    )
    sid = registry_client.register_schema(unique("text"), Schema(text, "PROTOBUF"))
    # id=5, at={seconds: 1, nanos: 10000000}, tags=["x"]
    payload = bytes.fromhex("0805120708011080ade2041a0178")
    decoder = build_decoder("protobuf", schema_registry={"url": schema_registry_url})

    rows = decoder.decode(raw_batch([framed(sid, b"\x00" + payload)])).rows

    assert rows.select(["id", "tags"]).to_pylist() == [{"id": 5, "tags": ["x"]}]
    assert str(rows.column("at")[0]) == "1970-01-01 00:00:01.010000+00:00"


def test_wire_format_rules_match_protobufs_own_parser(
    schema_registry_url: str, registry_client: SchemaRegistryClient
) -> None:
    [value] = serialize(registry_client, ORDER, unique("rules"), [ORDER(id=1)])
    head = value[:7]
    cases = [
        b"\x08\x01\x08\x02",  # a scalar twice: the last wins
        b"\x22\x02\x08\x07\x22\x05\x12\x03USD",  # an embedded message twice: merged
        b"\x3a\x10" + bytes(16) + b"\x39" + bytes(8),  # doubles packed, then one unpacked
        b"\xf8\x07\x01\x0a\x01x",  # unknown field 127, a known field with the wrong wire type
        b"\x30\x07",  # an enum number the schema does not name
    ]
    decoder = build_decoder("protobuf", schema_registry={"url": schema_registry_url})

    rows = decoder.decode(raw_batch([head + c for c in cases])).rows

    assert rows_of(rows) == [protobuf_expected(ORDER.FromString(c)) for c in cases]


def test_each_bad_message_is_set_aside_with_a_reason(
    schema_registry_url: str, registry_client: SchemaRegistryClient
) -> None:
    [good] = serialize(registry_client, ORDER, unique("bad"), [protobuf_order(ORDER, 3)])
    head, body = good[:7], good[7:]
    sid = int.from_bytes(good[1:5], "big")
    cases = [
        ("truncated", head + body[:-1], "malformed"),
        ("field number 0", head + b"\x00\x01", "malformed"),
        ("wire type 7", head + b"\x0f", "malformed"),
        ("group", head + b"\x0b\x0c", "malformed"),
        ("length past the end", head + b"\x12\x7fab", "malformed"),
        ("invalid utf-8", head + b"\x12\x02\xff\xfe", "malformed"),
        ("11-byte varint", head + b"\x08" + b"\xff" * 10 + b"\x01", "malformed"),
        ("timestamp out of range", head + b"\x1a\x07\x08\x80\x80\x80\x80\x80\x20", "malformed"),
        ("message index out of range", framed(sid, b"\x02\x0e" + body), "unknown_message"),
        ("malformed message index", framed(sid, b"\x02"), "wire_format"),
        ("no message index", framed(sid, b""), "wire_format"),
        ("unknown schema id", framed(2_000_000_000, b"\x00" + body), "unknown_schema"),
        ("avro magic", b"\x01" + good[1:], "wire_format"),
    ]
    values = [good]
    for _, value, _ in cases:
        values += [value, good]
    decoder = build_decoder("protobuf", schema_registry={"url": schema_registry_url})

    batch, rejects = decoder.decode_tolerant(raw_batch(values))

    assert batch.rows.num_rows == len(cases) + 1
    assert [r.offset for r in rejects] == [101 + 2 * i for i in range(len(cases))]
    for reject, (label, value, error) in zip(rejects, cases, strict=True):
        assert (reject.error, reject.value) == (error, value), (label, reject.message)
    with pytest.raises(RecordError, match=r"^t/0@101: protobuf: "):
        decoder.decode(raw_batch(values))


def test_protobuf_keys_become_structs(
    schema_registry_url: str, registry_client: SchemaRegistryClient
) -> None:
    money = CLASSES["Money"]
    keys = serialize(registry_client, money, unique("keys"), [money(units=1, currency="EUR")])
    decoder = build_decoder("string", "protobuf", schema_registry={"url": schema_registry_url})

    rows = decoder.decode(raw_batch([b"v"], keys)).rows

    assert rows.column("_key").to_pylist() == [{"units": 1, "currency": "EUR"}]
