"""JSON Schema (registry), string and bytes values, key formats and the _headers column."""

from __future__ import annotations

import json

import pyarrow as pa
import pytest
from confluent_kafka.schema_registry import SchemaRegistryClient
from confluent_kafka.schema_registry.json_schema import JSONSerializer
from confluent_kafka.serialization import MessageField, SerializationContext

from connector.formats import Format, build_decoder
from connector.formats.base import HEADERS_TYPE
from connector.reader import Headers
from kafka_etl.errors import RecordError
from tests.formats.support import framed, raw_batch, unique
from tests.helpers import JsonDecoder

EVENT_SCHEMA = {
    "$schema": "http://json-schema.org/draft-07/schema#",
    "type": "object",
    "properties": {
        "id": {"type": "integer"},
        "score": {"type": "number"},
        "ok": {"type": "boolean"},
        "name": {"type": ["string", "null"]},
        "place": {"$ref": "#/definitions/Place"},
        "tags": {"type": "array", "items": {"type": "string"}},
        "anything": {},
    },
    "definitions": {
        "Place": {
            "type": "object",
            "properties": {"city": {"type": "string"}, "zip": {"type": "integer"}},
        }
    },
}


def test_json_schema_pins_the_column_types(
    schema_registry_url: str, registry_client: SchemaRegistryClient
) -> None:
    ser = JSONSerializer(json.dumps(EVENT_SCHEMA), registry_client)
    ctx = SerializationContext(unique("events"), MessageField.VALUE)
    records = [
        {"id": 1, "score": 2, "ok": True, "name": None, "tags": [], "anything": 1},
        {"id": 2, "score": 0.5, "ok": False, "name": "x", "place": {"city": "Bern", "zip": 3000}},
    ]
    values = [ser(r, ctx) for r in records]
    decoder = build_decoder("json_schema", schema_registry={"url": schema_registry_url})

    rows = decoder.decode(raw_batch(values)).rows

    schema = rows.schema
    assert schema.field("id").type == pa.int64()
    assert schema.field("score").type == pa.float64()  # 2 in the first message, still a double
    assert schema.field("place").type == pa.struct([("city", pa.string()), ("zip", pa.int64())])
    assert schema.field("tags").type == pa.list_(pa.string())
    assert rows.select(["id", "score", "name", "place"]).to_pylist() == [
        {"id": 1, "score": 2.0, "name": None, "place": None},
        {"id": 2, "score": 0.5, "name": "x", "place": {"city": "Bern", "zip": 3000}},
    ]


def test_json_schema_bad_payloads_are_set_aside(
    schema_registry_url: str, registry_client: SchemaRegistryClient
) -> None:
    ser = JSONSerializer(json.dumps(EVENT_SCHEMA), registry_client)
    good = ser({"id": 1}, SerializationContext(unique("bad-events"), MessageField.VALUE))
    sid = int.from_bytes(good[1:5], "big")
    bad = [framed(sid, b'{"id": "not a number"}'), framed(sid, b"{"), framed(sid, b"")]
    decoder = build_decoder("json_schema", schema_registry={"url": schema_registry_url})

    batch, rejects = decoder.decode_tolerant(raw_batch([good, *bad, good]))

    assert batch.rows.column("_offset").to_pylist() == [100, 104]
    assert [(r.offset, r.error) for r in rejects] == [
        (101, "malformed"),
        (102, "malformed"),
        (103, "malformed"),
    ]


def test_string_values_and_invalid_utf8() -> None:
    decoder = build_decoder("string")
    batch, rejects = decoder.decode_tolerant(raw_batch([b"caf\xc3\xa9", b"", b"\xc3(", None]))
    assert batch.rows.column("value").to_pylist() == ["café", ""]
    assert batch.rows.schema.field("value").type == pa.string()
    assert [(r.offset, r.error, r.message) for r in rejects] == [
        (102, "invalid_utf8", "value is not valid UTF-8")
    ]
    assert batch.tombstones is not None and batch.tombstones.num_rows == 1


def test_bytes_values_take_anything() -> None:
    values = [b"\x00\xff", b"", b"text"]
    rows = build_decoder("bytes").decode(raw_batch(values)).rows
    assert rows.column("value").to_pylist() == values
    assert rows.schema.field("value").type == pa.binary()


@pytest.mark.parametrize(
    ("key_format", "key", "expected", "typ"),
    [
        ("string", b"k", "k", pa.string()),
        ("json", b'{"id": 1}', '{"id": 1}', pa.string()),
        ("bytes", b"\x00k", b"\x00k", pa.binary()),
    ],
)
def test_key_formats(key_format: Format, key: bytes, expected: object, typ: pa.DataType) -> None:
    rows = build_decoder("json", key_format).decode(raw_batch([b"{}", b"{}"], [key, None])).rows
    assert rows.column("_key").to_pylist() == [expected, None]
    assert rows.schema.field("_key").type == typ


def test_a_key_that_is_not_utf8_is_a_bad_key() -> None:
    batch, rejects = build_decoder("json").decode_tolerant(
        raw_batch([b'{"a": 1}', b'{"a": 2}'], [b"ok", b"\xff"])
    )
    assert batch.rows.column("a").to_pylist() == [1]
    assert [(r.offset, r.error, r.message) for r in rejects] == [
        (101, "bad_key", "key is not valid UTF-8")
    ]
    with pytest.raises(RecordError, match="t/0@101: key is not valid UTF-8"):
        JsonDecoder().decode(raw_batch([b'{"a": 1}', b'{"a": 2}'], [b"ok", b"\xff"]))


def test_headers_are_an_opt_in_list_of_key_value_pairs() -> None:
    headers: list[Headers] = [
        [("trace", b"1"), ("trace", b"2"), ("empty", None)],
        None,
        [("h", b"\xff")],
    ]
    values = [b'{"a": 1}', None, b'{"a": 3}']

    with_headers = build_decoder("json", include_headers=True).decode(
        raw_batch(values, headers=headers)
    )
    without = build_decoder("json").decode(raw_batch(values, headers=headers))

    assert with_headers.rows.schema.field("_headers").type == HEADERS_TYPE
    assert with_headers.rows.column("_headers").to_pylist() == [
        [
            {"key": "trace", "value": b"1"},
            {"key": "trace", "value": b"2"},
            {"key": "empty", "value": None},
        ],
        [{"key": "h", "value": b"\xff"}],
    ]
    assert with_headers.tombstones is not None
    assert with_headers.tombstones.column("_headers").to_pylist() == [[]]
    assert "_headers" not in without.rows.column_names


def test_a_value_field_named_headers_clashes_only_when_headers_are_on() -> None:
    values = [b'{"_headers": "mine"}']
    assert build_decoder("json").decode(raw_batch(values)).rows.column("_headers").to_pylist() == [
        "mine"
    ]
    _, rejects = build_decoder("json", include_headers=True).decode_tolerant(
        raw_batch(values, headers=[None])
    )
    assert [r.error for r in rejects] == ["metadata_clash"]
