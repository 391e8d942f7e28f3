"""``envelope: debezium``: Debezium change events (JSON converter with and without schemas, Avro
through the registry) decoded to replica rows, deletes, skipped tombstones and rejects."""

from __future__ import annotations

import datetime as dt
from decimal import Decimal
from pathlib import Path
from typing import Any

import pyarrow as pa
import pytest
from confluent_kafka.schema_registry import Schema, SchemaRegistryClient

from connector.formats import build_debezium_decoder
from connector.formats.connect import base64_decode
from connector.formats.debezium import TruncateError
from kafka_etl.errors import ConfigError, RecordError
from pipelines.config import load_project
from tests.formats import debezium_events as ev
from tests.formats.support import avro_bytes, framed, raw_batch, unique

UTC = dt.UTC


def _decoder(**kw: Any) -> Any:
    return build_debezium_decoder("json", "json", **kw)


def _changes(schemas: bool) -> tuple[list[bytes | None], list[bytes | None]]:
    """r 1, c 2, u 1, d 2 (+ its tombstone), c 3: every op of a table's life."""
    values: list[bytes | None] = [
        ev.json_value(ev.payload("r", None, ev.row(1), lsn=10), schemas),
        ev.json_value(ev.payload("c", None, ev.row(2), lsn=11), schemas),
        ev.json_value(ev.payload("u", ev.row(1), ev.row(1, name="renamed"), lsn=12), schemas),
        ev.json_value(ev.payload("d", ev.row(2), None, lsn=13), schemas),
        None,
        ev.json_value(ev.payload("c", None, ev.row(3), lsn=14), schemas),
    ]
    keys = [ev.json_key(i, schemas) for i in (1, 2, 1, 2, 2, 3)]
    return values, keys


def _expected(r: dict[str, Any]) -> dict[str, Any]:
    """What the replica row holds for a source row (JSON converter with schemas)."""
    out = dict(r)
    out["ratio"] = str(r["ratio"])
    out["created"] = r["created"]
    return out


@pytest.mark.parametrize("schemas", [True, False], ids=["schemas", "no-schemas"])
def test_each_op_becomes_a_row_a_delete_or_a_skipped_tombstone(schemas: bool) -> None:
    values, keys = _changes(schemas)
    batch, rejects = _decoder().decode_tolerant(raw_batch(values, keys))
    assert rejects == []
    rows = batch.rows.to_pylist()
    assert [(r["_offset"], r["_op"], r["_key"], r["id"]) for r in rows] == [
        (100, "r", '{"id":1}', 1),
        (101, "c", '{"id":2}', 2),
        (102, "u", '{"id":1}', 1),
        (105, "c", '{"id":3}', 3),
    ]
    assert rows[2]["name"] == "renamed"
    assert [r["_source_lsn"] for r in rows] == [10, 11, 12, 14]
    assert rows[0]["_source_ts"] == dt.datetime(2024, 5, 1, 10, 40, tzinfo=UTC)
    assert batch.tombstones is not None
    assert batch.tombstones.to_pylist()[0]["_key"] == '{"id":2}'
    assert batch.tombstones.column("_offset").to_pylist() == [103]
    assert batch.tombstones_skipped == 1
    assert "_source_file" not in batch.rows.column_names  # PostgreSQL has no binlog


def test_logical_types_become_real_columns_with_the_converter_schema() -> None:
    values, keys = _changes(True)
    batch = _decoder().decode(raw_batch(values, keys))
    schema = batch.rows.schema
    expected_types = {
        "id": pa.int32(),
        "born": pa.date32(),
        "updated": pa.timestamp("us"),
        "seen": pa.timestamp("ns"),
        "created": pa.timestamp("us", tz="UTC"),
        "alarm": pa.time64("us"),
        "balance": pa.decimal128(10, 2),
        "ratio": pa.string(),
        "meta": pa.string(),
        "uid": pa.string(),
        "status": pa.string(),
        "location": pa.binary(),
        "avatar": pa.binary(),
    }
    assert {n: schema.field(n).type for n in expected_types} == expected_types
    got = batch.rows.to_pylist()[0]
    want = _expected(ev.row(1))
    assert {k: got[k] for k in want} == want


def test_without_schemas_values_stay_as_json_gives_them_and_columns_type_them() -> None:
    values, keys = _changes(False)
    batch = _decoder().decode(raw_batch(values, keys))
    assert batch.rows.schema.field("born").type == pa.int64()  # days, as sent
    assert batch.rows.schema.field("balance").type == pa.string()  # base64, as sent
    typed = _decoder(explicit=pa.schema([("id", pa.int16()), ("email", pa.string())]))
    batch = typed.decode(raw_batch(values, keys))
    assert batch.rows.schema.field("id").type == pa.int16()


def test_a_mysql_source_gives_binlog_file_position_and_gtid() -> None:
    source = ev.mysql_source(
        4711, 1_714_560_000_000, gtid="3E11FA47-71CA-11E1-9E33-C80AA9429562:23"
    )
    value = ev.json_value(ev.payload("c", None, ev.row(7), source=source), mysql=True)
    batch = _decoder().decode(raw_batch([value], [ev.json_key(7)]))
    row = batch.rows.to_pylist()[0]
    assert (row["_source_file"], row["_source_pos"], row["_source_gtid"]) == (
        "mysql-bin.000003",
        4711,
        "3E11FA47-71CA-11E1-9E33-C80AA9429562:23",
    )
    assert "_source_lsn" not in row


def test_key_fields_make_the_identity_from_after_and_before() -> None:
    values, keys = _changes(True)
    keys[3] = None  # a delete without a record key still finds its row through before
    batch = _decoder(key=("id",)).decode(raw_batch(values, keys))
    assert batch.rows.column("_key").to_pylist() == ['{"id":1}', '{"id":2}', '{"id":1}', '{"id":3}']
    assert batch.tombstones is not None
    assert batch.tombstones.column("_key").to_pylist() == ['{"id":2}']


def test_bad_events_are_rejects_with_one_line_reasons() -> None:
    good = ev.json_value(ev.payload("c", None, ev.row(1)))
    no_after = ev.json_value(ev.payload("c", None, None))
    message = ev.json_value({**ev.payload("c", None, None), "op": "m"})
    unknown = ev.json_value({**ev.payload("c", None, ev.row(2)), "op": "x"})
    values = [good, b'{"not": "an event"}', no_after, message, unknown, b"{oops"]
    keys = [
        ev.json_key(1),
        ev.json_key(1),
        ev.json_key(2),
        ev.json_key(3),
        ev.json_key(2),
        ev.json_key(4),
    ]
    batch, rejects = _decoder().decode_tolerant(raw_batch(values, keys))
    assert batch.rows.column("_offset").to_pylist() == [100]
    reasons = {r.offset: r.message for r in rejects}
    assert reasons[101] == "not a Debezium change event: no 'op' field"
    assert reasons[102] == "op 'c' has no 'after' image"
    assert reasons[103] == "op 'm' (a logical decoding message) is no change to a row"
    assert reasons[104] == "unknown Debezium op 'x' (expected c, r, u, d or t)"
    assert reasons[105].startswith("not a valid JSON object")
    with pytest.raises(RecordError, match=r"^t/0@101: "):
        _decoder().decode(raw_batch(values, keys))


def test_a_tombstone_with_a_key_that_does_not_decode_is_still_only_skipped() -> None:
    batch, rejects = _decoder().decode_tolerant(raw_batch([None], [b"not json"]))
    assert (batch.row_count, batch.tombstone_count, batch.tombstones_skipped, rejects) == (
        0,
        0,
        1,
        [],
    )


def test_no_record_key_is_a_reject_unless_key_names_fields() -> None:
    value = ev.json_value(ev.payload("c", None, ev.row(1)))
    batch, rejects = _decoder().decode_tolerant(raw_batch([value], [None]))
    assert batch.row_count == 0
    assert rejects[0].message.startswith("no record key: the source table has no primary key")
    assert _decoder(key=("id",)).decode(raw_batch([value], [None])).row_count == 1


def test_truncate_stops_the_run_even_with_dead_letters() -> None:
    truncate = ev.json_value({**ev.payload("c", None, None), "op": "t"})
    values = [ev.json_value(ev.payload("c", None, ev.row(1))), truncate]
    with pytest.raises(TruncateError) as error:
        _decoder(pipeline="customers").decode_tolerant(raw_batch(values, [ev.json_key(1), None]))
    assert str(error.value).startswith("t/0@101: op 't' (the source table was truncated)")
    assert "kafka-etl reset customers --partition 0 --to-offset 102" in str(error.value)


def test_an_added_column_arrives_as_a_new_field() -> None:
    values = [
        ev.json_value(ev.payload("c", None, ev.row(1))),
        ev.json_value(ev.payload("c", None, {**ev.row(2), "phone": "+49 30 1234"}), extra=True),
    ]
    batch = _decoder().decode(raw_batch(values, [ev.json_key(1), ev.json_key(2)]))
    assert batch.rows.column("phone").to_pylist() == [None, "+49 30 1234"]


def test_base64_decodes_vectorised_like_the_standard_library() -> None:
    import base64

    blobs = [b"", b"a", b"ab", b"abc", bytes(range(256)), None, b"\x00\xff" * 7]
    texts = pa.array([None if b is None else base64.b64encode(b).decode() for b in blobs])
    decoded, bad = base64_decode(texts)
    assert decoded.to_pylist() == blobs
    assert not bad.any()
    decoded, bad = base64_decode(pa.array(["AAA", "!!!!", "AQ=="]))
    assert bad.tolist() == [True, True, False]
    assert decoded.to_pylist() == [None, None, b"\x01"]


def test_avro_through_the_registry(
    registry_client: SchemaRegistryClient, schema_registry_url: str
) -> None:
    import json

    subject = unique("dbz")
    value_id = registry_client.register_schema(
        f"{subject}-value", Schema(json.dumps(ev.avro_value_schema()), "AVRO")
    )
    key_id = registry_client.register_schema(
        f"{subject}-key", Schema(json.dumps(ev.AVRO_KEY_SCHEMA), "AVRO")
    )
    records = [
        ev.avro_record("r", None, ev.row(1), lsn=20),
        ev.avro_record("u", ev.row(1), ev.row(1, email="new@example.com"), lsn=21),
        ev.avro_record("d", ev.row(1), None, lsn=22),
    ]
    values: list[bytes | None] = [
        framed(value_id, avro_bytes(ev.avro_value_schema(), r)) for r in records
    ]
    values.append(None)
    keys = [framed(key_id, avro_bytes(ev.AVRO_KEY_SCHEMA, {"id": 1}))] * 4
    decoder = build_debezium_decoder("avro", "avro", schema_registry={"url": schema_registry_url})
    batch, rejects = decoder.decode_tolerant(raw_batch(values, keys))
    assert rejects == []
    rows = batch.rows.to_pylist()
    want = _expected(ev.row(1, email="new@example.com"))
    assert {k: rows[1][k] for k in want} == want
    assert [(r["_op"], r["_key"], r["_source_lsn"]) for r in rows] == [
        ("r", '{"id":1}', 20),
        ("u", '{"id":1}', 21),
    ]
    assert batch.rows.schema.field("balance").type == pa.decimal128(10, 2)
    assert batch.rows.schema.field("updated").type == pa.timestamp("us")
    assert batch.tombstones is not None
    assert batch.tombstones.column("_key").to_pylist() == ['{"id":1}']
    assert batch.tombstones_skipped == 1


# -- configuration -------------------------------------------------------------------------------
def _project(tmp_path: Path, **fields: Any) -> Any:
    import yaml

    body = {
        "topic": "t",
        "target": "duckdb:///w.duckdb",
        "table": "c",
        "envelope": "debezium",
        **fields,
    }
    path = tmp_path / "p.yaml"
    path.write_text(
        yaml.safe_dump({"kafka": {"bootstrap.servers": "x:1"}, "pipelines": {"c": body}})
    )
    return load_project(path)


def test_the_envelope_implies_upsert_deletes_and_the_record_key(tmp_path: Path) -> None:
    p = _project(tmp_path).pipeline("c")
    assert (p.mode, p.delete_on_tombstone, p.key, p.key_format) == (
        "upsert",
        True,
        ("_key",),
        "json",
    )
    assert _project(tmp_path, key=["id"]).pipeline("c").key == ("id",)


@pytest.mark.parametrize(
    ("fields", "message"),
    [
        ({"mode": "append"}, "field 'mode': envelope 'debezium' keeps a replica"),
        ({"delete_on_tombstone": False}, "field 'delete_on_tombstone': envelope 'debezium'"),
        ({"format": "protobuf"}, "field 'format': envelope 'debezium' arrives as json or avro"),
        ({"key_format": "string"}, "field 'key_format': envelope 'debezium' decodes"),
        ({"envelope": "maxwell"}, "field 'envelope': Input should be 'none' or 'debezium'"),
    ],
)
def test_a_contradicting_setting_is_one_line(
    tmp_path: Path, fields: dict[str, Any], message: str
) -> None:
    with pytest.raises(ConfigError) as error:
        _project(tmp_path, **fields)
    assert str(error.value).startswith(f"{tmp_path / 'p.yaml'}: pipeline 'c', {message}")
    assert "\n" not in str(error.value)


def test_decimals_as_numbers_decimal_format_numeric() -> None:
    p = ev.payload("c", None, ev.row(1))
    assert p["after"] is not None
    p["after"]["balance"] = 11.01
    batch = _decoder().decode(raw_batch([ev.json_value(p)], [ev.json_key(1)]))
    assert batch.rows.column("balance").to_pylist() == [Decimal("11.01")]
