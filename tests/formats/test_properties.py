"""Property tests for every decoder: any bytes in -> each message a row, a tombstone or a
Reject, never an exception escaping; and what is accepted is what the reference parser says.

References: fastavro (reading the whole payload, nothing left over) for Avro, protobuf's own
parser for Protobuf, Python's UTF-8 codec for ``string``. The decoders may be stricter than a
reference (e.g. an over-long varint it tolerates), never looser or different.
"""

from __future__ import annotations

import io
import json
import math
import os
from collections.abc import Sequence
from typing import Any

import fastavro
import pytest
from confluent_kafka.schema_registry import Schema, SchemaRegistryClient
from confluent_kafka.schema_registry.protobuf import ProtobufSerializer
from confluent_kafka.serialization import MessageField, SerializationContext
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from connector.batch import Batch
from connector.formats import Reject, build_decoder
from connector.formats.base import FrameDecoder
from connector.reader import RawBatch
from tests.formats.support import (
    avro_bytes,
    framed,
    protobuf_classes,
    protobuf_expected,
    protobuf_order,
    raw_batch,
    unique,
)

PROPERTIES = settings(
    # More for a deeper search: KAFKA_ETL_HYPOTHESIS_EXAMPLES=5000 pytest tests/formats
    max_examples=int(os.environ.get("KAFKA_ETL_HYPOTHESIS_EXAMPLES", "150")),
    deadline=None,
    suppress_health_check=[HealthCheck.too_slow, HealthCheck.data_too_large],
)

AVRO: dict[str, Any] = {
    "type": "record",
    "name": "P",
    "fields": [
        {"name": "l", "type": "long"},
        {"name": "i", "type": "int"},
        {"name": "b", "type": "boolean"},
        {"name": "d", "type": "double"},
        {"name": "f", "type": "float"},
        {"name": "s", "type": "string"},
        {"name": "y", "type": "bytes"},
        {"name": "e", "type": {"type": "enum", "name": "E", "symbols": ["A", "B", "C"]}},
        {"name": "x", "type": {"type": "fixed", "name": "X", "size": 2}},
        {"name": "n", "type": ["null", "long"]},
        {"name": "u", "type": ["null", "string", "long"]},
        {
            "name": "a",
            "type": {
                "type": "array",
                "items": {
                    "type": "record",
                    "name": "R",
                    "fields": [
                        {"name": "q", "type": "int"},
                        {"name": "t", "type": {"type": "array", "items": "string"}},
                    ],
                },
            },
        },
        {"name": "m", "type": {"type": "map", "values": "int"}},
        {
            "name": "dec",
            "type": {"type": "bytes", "logicalType": "decimal", "precision": 10, "scale": 2},
        },
    ],
}
AVRO_PARSED = fastavro.parse_schema(AVRO)
AVRO_NAMES = [f["name"] for f in AVRO["fields"]]

texts = st.text(max_size=6)
longs = st.integers(-(2**63), 2**63 - 1)
ints = st.integers(-(2**31), 2**31 - 1)
avro_records = st.fixed_dictionaries(
    {
        "l": longs,
        "i": ints,
        "b": st.booleans(),
        "d": st.floats(),
        "f": st.floats(width=32),
        "s": texts,
        "y": st.binary(max_size=6),
        "e": st.sampled_from(["A", "B", "C"]),
        "x": st.binary(min_size=2, max_size=2),
        "n": st.none() | longs,
        "u": st.none() | texts | longs,
        "a": st.lists(
            st.fixed_dictionaries({"q": ints, "t": st.lists(texts, max_size=3)}), max_size=3
        ),
        "m": st.dictionaries(texts, ints, max_size=3),
        "dec": st.decimals(min_value=-(10**8) + 1, max_value=10**8 - 1, places=2, allow_nan=False),
    }
)


def mutated(valid: st.SearchStrategy[bytes]) -> st.SearchStrategy[bytes]:
    """Valid encodings, cut short, extended, or with one byte changed."""

    def mutate(data: bytes, how: int, where: int, byte: int) -> bytes:
        at = where % (len(data) + 1)
        if how == 0:
            return data[:at]
        if how == 1:
            return data + bytes([byte])
        if how == 2 and data:
            at = where % len(data)
            return data[:at] + bytes([byte]) + data[at + 1 :]
        return data

    return st.builds(mutate, valid, st.integers(0, 3), st.integers(0, 10_000), st.integers(0, 255))


avro_payloads = st.one_of(
    st.binary(max_size=48),
    st.builds(lambda r: avro_bytes(AVRO, r), avro_records),
    mutated(st.builds(lambda r: avro_bytes(AVRO, r), avro_records)),
)


def check_accounting(
    raw: RawBatch, batch: Batch, rejects: list[Reject]
) -> dict[int, dict[str, Any]]:
    """Every offset is exactly one row, tombstone or reject; returns the rows by offset."""
    row_offsets = batch.rows.column("_offset").to_pylist() if batch.rows.num_rows else []
    tomb = batch.tombstones.column("_offset").to_pylist() if batch.tombstones is not None else []
    rejected = [r.offset for r in rejects]
    everything = sorted(row_offsets + tomb + rejected)
    assert everything == raw.offsets.tolist()
    assert row_offsets == sorted(row_offsets), "rows keep message order"
    for reject in rejects:
        assert reject.error and reject.message
        assert reject.value == raw.values[reject.offset - 100]
    return dict(zip(row_offsets, batch.rows.to_pylist(), strict=True)) if row_offsets else {}


def same(a: Any, b: Any) -> bool:
    if isinstance(a, float) and isinstance(b, float):
        return (math.isnan(a) and math.isnan(b)) or a == b
    if isinstance(a, dict) and isinstance(b, dict):
        return a.keys() == b.keys() and all(same(a[k], b[k]) for k in a)
    if isinstance(a, list | tuple) and isinstance(b, list | tuple):
        return len(a) == len(b) and all(same(x, y) for x, y in zip(a, b, strict=True))
    return bool(a == b) and type(a) is type(b)


def fastavro_reference(payload: bytes) -> dict[str, Any] | None:
    """fastavro's reading, as our row would hold it, or None if it fails or leaves bytes."""
    stream = io.BytesIO(payload)
    try:
        record: dict[str, Any] = fastavro.schemaless_reader(stream, AVRO_PARSED, None)  # type: ignore[assignment]
    except Exception:
        return None
    if stream.tell() != len(payload):
        return None
    u = record["u"]
    record["u"] = (
        None
        if u is None
        else {
            "string": u if isinstance(u, str) else None,
            "long": u if isinstance(u, int) else None,
        }
    )
    record["m"] = list(record["m"].items())
    return record


def assert_like_fastavro(
    values: Sequence[bytes | None], rows: dict[int, dict[str, Any]], skip: int
) -> None:
    for offset, row in rows.items():
        value = values[offset - 100]
        assert value is not None
        expected = fastavro_reference(value[skip:])
        assert expected is not None, f"accepted what fastavro rejects: {value.hex()}"
        got = {k: row[k] for k in AVRO_NAMES}
        got["m"] = [tuple(p) for p in got["m"]]
        expected["m"] = [tuple(p) for p in expected["m"]]
        assert same(got, expected), (value.hex(), got, expected)


@PROPERTIES
@given(st.lists(st.none() | avro_payloads, max_size=12))
def test_plain_avro(tmp_path_factory: pytest.TempPathFactory, values: list[bytes | None]) -> None:
    path = tmp_path_factory.getbasetemp() / "property.avsc"
    path.write_text(json.dumps(AVRO), encoding="utf-8")
    raw = raw_batch(values)
    batch, rejects = build_decoder("avro", avro_schema_file=path).decode_tolerant(raw)
    assert_like_fastavro(values, check_accounting(raw, batch, rejects), 0)


@PROPERTIES
@given(st.lists(avro_records, min_size=1, max_size=8))
def test_valid_avro_is_always_accepted(
    tmp_path_factory: pytest.TempPathFactory, records: list[dict[str, Any]]
) -> None:
    path = tmp_path_factory.getbasetemp() / "property.avsc"
    path.write_text(json.dumps(AVRO), encoding="utf-8")
    values: list[bytes | None] = [avro_bytes(AVRO, r) for r in records]
    batch, rejects = build_decoder("avro", avro_schema_file=path).decode_tolerant(raw_batch(values))
    assert rejects == []
    assert batch.rows.num_rows == len(records)


@pytest.fixture(scope="module")
def avro_id(registry_client: SchemaRegistryClient) -> int:
    return registry_client.register_schema(unique("property"), Schema(json.dumps(AVRO), "AVRO"))


def framings(schema_id: int, payloads: st.SearchStrategy[bytes]) -> st.SearchStrategy[bytes]:
    """Values with the right header, an unknown id, a wrong magic byte, or no header at all."""
    return st.one_of(
        st.builds(lambda p: framed(schema_id, p), payloads),
        st.builds(lambda p: framed(1_999_999_999, p), payloads),
        st.builds(
            lambda b, p: bytes([b]) + schema_id.to_bytes(4, "big") + p,
            st.integers(1, 255),
            payloads,
        ),
        st.binary(max_size=8),
    )


@pytest.fixture(scope="module")
def avro_decoder(schema_registry_url: str) -> FrameDecoder:
    return build_decoder("avro", "avro", schema_registry={"url": schema_registry_url})


@PROPERTIES
@given(data=st.data())
def test_registry_avro_values_and_keys(
    avro_id: int, avro_decoder: FrameDecoder, data: st.DataObject
) -> None:
    values = data.draw(st.lists(st.none() | framings(avro_id, avro_payloads), max_size=10))
    keys = data.draw(
        st.lists(
            st.none() | framings(avro_id, avro_payloads), min_size=len(values), max_size=len(values)
        )
    )
    raw = raw_batch(values, keys)
    batch, rejects = avro_decoder.decode_tolerant(raw)
    rows = check_accounting(raw, batch, rejects)
    assert_like_fastavro(values, rows, 5)
    for offset, row in rows.items():
        key = keys[offset - 100]
        if key is None:
            assert row["_key"] is None
        else:
            expected = fastavro_reference(key[5:])
            assert expected is not None and same(
                {**row["_key"], "m": [tuple(p) for p in row["_key"]["m"]]},
                {**expected, "m": [tuple(p) for p in expected["m"]]},
            )


PROTOBUF = protobuf_classes()["Order"]


@pytest.fixture(scope="module")
def protobuf_header(registry_client: SchemaRegistryClient) -> bytes:
    ser = ProtobufSerializer(PROTOBUF, registry_client, {"use.deprecated.format": False})
    value = ser(PROTOBUF(id=1), SerializationContext(unique("property-pb"), MessageField.VALUE))
    return value[:7]  # magic, schema id, message-index path [1]


protobuf_payloads = st.one_of(
    st.binary(max_size=48),
    st.builds(lambda i: protobuf_order(PROTOBUF, i).SerializeToString(), st.integers(0, 1000)),
    mutated(
        st.builds(lambda i: protobuf_order(PROTOBUF, i).SerializeToString(), st.integers(0, 1000))
    ),
)


@pytest.fixture(scope="module")
def protobuf_decoder(schema_registry_url: str) -> FrameDecoder:
    return build_decoder("protobuf", schema_registry={"url": schema_registry_url})


@PROPERTIES
@given(data=st.data())
def test_registry_protobuf(
    protobuf_header: bytes, protobuf_decoder: FrameDecoder, data: st.DataObject
) -> None:
    schema_id = int.from_bytes(protobuf_header[1:5], "big")
    paths = st.sampled_from([b"\x02\x02", b"\x00", b"\x02\x0e", b"\x04\x02\x00", b""]) | st.binary(
        max_size=3
    )
    framed_values = st.one_of(
        st.builds(lambda p: protobuf_header + p, protobuf_payloads),
        st.builds(lambda path, p: framed(schema_id, path + p), paths, protobuf_payloads),
        framings(schema_id, protobuf_payloads),
    )
    values = data.draw(st.lists(st.none() | framed_values, max_size=10))
    raw = raw_batch(values)
    batch, rejects = protobuf_decoder.decode_tolerant(raw)
    rows = check_accounting(raw, batch, rejects)
    for offset, row in rows.items():
        value = values[offset - 100]
        assert value is not None
        if not value.startswith(protobuf_header):
            continue  # another message type of the file (e.g. Item): covered by the unit tests
        try:
            expected = protobuf_expected(PROTOBUF.FromString(value[7:]))
        except Exception as exc:  # protobuf rejects it, or our reference conversion overflows
            raise AssertionError(f"accepted what protobuf rejects: {value.hex()}") from exc
        got = {k: row[k] for k in expected}
        got["attrs"] = sorted(got["attrs"])
        assert same(got, expected), (value.hex(), got, expected)


@pytest.fixture(scope="module")
def json_schema_id(registry_client: SchemaRegistryClient) -> int:
    document = {
        "$schema": "http://json-schema.org/draft-07/schema#",
        "type": "object",
        "properties": {"a": {"type": "integer"}, "s": {"type": "string"}},
    }
    return registry_client.register_schema(
        unique("property-js"), Schema(json.dumps(document), "JSON")
    )


json_values = st.one_of(
    st.binary(max_size=24),
    st.builds(
        lambda d: json.dumps(d).encode(),
        st.dictionaries(
            st.sampled_from(["a", "s", "z", "_key"]),
            st.none() | st.integers() | texts | st.floats(),
            max_size=3,
        ),
    ),
    st.sampled_from(
        [b"{}", b"[1]", b"1", b'"x"', b"{\n}", b'{"a": 1}{"a": 2}', b"\xff", b"", b"null"]
    ),
)


@PROPERTIES
@given(st.lists(st.none() | json_values, max_size=12))
def test_json(values: list[bytes | None]) -> None:
    raw = raw_batch(values)
    batch, rejects = build_decoder("json").decode_tolerant(raw)
    check_accounting(raw, batch, rejects)


@PROPERTIES
@given(data=st.data())
def test_registry_json_schema(
    json_schema_id: int, schema_registry_url: str, data: st.DataObject
) -> None:
    values = data.draw(st.lists(st.none() | framings(json_schema_id, json_values), max_size=10))
    raw = raw_batch(values)
    decoder = build_decoder("json_schema", schema_registry={"url": schema_registry_url})
    batch, rejects = decoder.decode_tolerant(raw)
    check_accounting(raw, batch, rejects)


@PROPERTIES
@given(
    st.lists(st.none() | st.binary(max_size=12), max_size=12),
    st.lists(st.none() | st.binary(max_size=6), max_size=12),
)
def test_string_and_bytes(values: list[bytes | None], keys: list[bytes | None]) -> None:
    keys = (keys + [None] * len(values))[: len(values)]
    raw = raw_batch(values, keys)
    batch, rejects = build_decoder("string").decode_tolerant(raw)
    rows = check_accounting(raw, batch, rejects)
    for offset, row in rows.items():
        value, key = values[offset - 100], keys[offset - 100]
        assert value is not None and row["value"] == value.decode("utf-8")
        assert row["_key"] == (None if key is None else key.decode("utf-8"))
    for reject in rejects:
        assert reject.error in ("invalid_utf8", "bad_key")

    batch, rejects = build_decoder("bytes", "bytes").decode_tolerant(raw)
    rows = check_accounting(raw, batch, rejects)
    assert rejects == []
    assert [r["value"] for r in rows.values()] == [v for v in values if v is not None]
