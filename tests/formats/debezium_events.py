"""Debezium change events as Debezium 2.x writes them, for tests and the CDC benchmark.

A PostgreSQL table ``inventory.customers`` (connector ``postgresql``, topic prefix ``dbserver1``)
with a column of every logical type Debezium uses, in three encodings: the JSON converter with
``schemas.enable=true`` (``{"schema": ..., "payload": ...}``, the schema as Debezium's
``JsonConverter`` writes it, field defaults of several types included), with
``schemas.enable=false`` (the bare payload), and the Avro converter (the writer schema with
``connect.name``/``connect.parameters`` as Confluent's ``AvroData`` writes it). A MySQL source
block (binlog file, position, GTID) is available too.
"""

from __future__ import annotations

import base64
import datetime as dt
import json
from decimal import Decimal
from typing import Any

SERVER = "dbserver1"
UTC = dt.UTC


def _col(
    name: str, kind: str, optional: bool = True, logical: str | None = None, **extra: Any
) -> dict[str, Any]:
    field: dict[str, Any] = {"type": kind, "optional": optional}
    if logical:
        field["name"] = logical
        field["version"] = 1
    field.update(extra)
    field["field"] = name
    return field


def value_columns(extra: bool = False, drop: tuple[str, ...] = ()) -> list[dict[str, Any]]:
    """The Connect schema of the row (``...customers.Value``); ``extra`` adds ``phone``, a column
    added to the source table later; ``drop`` leaves out columns dropped from it."""
    columns = [
        _col("id", "int32", optional=False, default=0),
        _col("name", "string", optional=False),
        _col("email", "string"),
        _col("active", "boolean", default=True),
        _col("born", "int32", logical="io.debezium.time.Date"),
        _col("updated", "int64", logical="io.debezium.time.MicroTimestamp"),
        _col("seen", "int64", logical="io.debezium.time.NanoTimestamp"),
        _col("created", "string", logical="io.debezium.time.ZonedTimestamp"),
        _col("alarm", "int64", logical="io.debezium.time.MicroTime"),
        _col(
            "balance",
            "bytes",
            logical="org.apache.kafka.connect.data.Decimal",
            parameters={"scale": "2", "connect.decimal.precision": "10"},
        ),
        {
            "type": "struct",
            "fields": [
                {"type": "int32", "optional": False, "field": "scale"},
                {"type": "bytes", "optional": False, "field": "value"},
            ],
            "optional": True,
            "name": "io.debezium.data.VariableScaleDecimal",
            "version": 1,
            "doc": "Variable scaled decimal",
            "field": "ratio",
        },
        _col("meta", "string", logical="io.debezium.data.Json"),
        _col("uid", "string", logical="io.debezium.data.Uuid"),
        _col(
            "status",
            "string",
            logical="io.debezium.data.Enum",
            parameters={"allowed": "new,paid"},
            default="new",
        ),
        {
            "type": "struct",
            "fields": [
                {"type": "bytes", "optional": False, "field": "wkb"},
                {"type": "int32", "optional": True, "field": "srid"},
            ],
            "optional": True,
            "name": "io.debezium.data.geometry.Geometry",
            "version": 1,
            "doc": "Geometry",
            "field": "location",
        },
        _col("avatar", "bytes"),
    ]
    if extra:
        columns.append(_col("phone", "string"))
    return [c for c in columns if c["field"] not in drop]


PG_SOURCE = [
    _col("version", "string", optional=False),
    _col("connector", "string", optional=False),
    _col("name", "string", optional=False),
    _col("ts_ms", "int64", optional=False),
    _col(
        "snapshot",
        "string",
        logical="io.debezium.data.Enum",
        parameters={"allowed": "true,last,false,incremental"},
        default="false",
    ),
    _col("db", "string", optional=False),
    _col("sequence", "string"),
    _col("ts_us", "int64"),
    _col("ts_ns", "int64"),
    _col("schema", "string", optional=False),
    _col("table", "string", optional=False),
    _col("txId", "int64"),
    _col("lsn", "int64"),
    _col("xmin", "int64"),
]
MYSQL_SOURCE = [
    _col("version", "string", optional=False),
    _col("connector", "string", optional=False),
    _col("name", "string", optional=False),
    _col("ts_ms", "int64", optional=False),
    _col("snapshot", "string", logical="io.debezium.data.Enum", default="false"),
    _col("db", "string", optional=False),
    _col("table", "string"),
    _col("server_id", "int64", optional=False),
    _col("gtid", "string"),
    _col("file", "string", optional=False),
    _col("pos", "int64", optional=False),
    _col("row", "int32", optional=False),
]


def envelope_schema(
    extra: bool = False, mysql: bool = False, drop: tuple[str, ...] = ()
) -> dict[str, Any]:
    row = {
        "type": "struct",
        "fields": value_columns(extra, drop),
        "optional": True,
        "name": f"{SERVER}.inventory.customers.Value",
    }
    source_name = "mysql" if mysql else "postgresql"
    return {
        "type": "struct",
        "fields": [
            {**row, "field": "before"},
            {**row, "field": "after"},
            {
                "type": "struct",
                "fields": MYSQL_SOURCE if mysql else PG_SOURCE,
                "optional": False,
                "name": f"io.debezium.connector.{source_name}.Source",
                "field": "source",
            },
            {
                "type": "struct",
                "fields": [
                    _col("id", "string", optional=False),
                    _col("total_order", "int64", optional=False),
                    _col("data_collection_order", "int64", optional=False),
                ],
                "optional": True,
                "name": "event.block",
                "version": 1,
                "field": "transaction",
            },
            _col("op", "string", optional=False),
            _col("ts_ms", "int64"),
            _col("ts_us", "int64"),
            _col("ts_ns", "int64"),
        ],
        "optional": False,
        "name": f"{SERVER}.inventory.customers.Envelope",
        "version": 2,
    }


KEY_SCHEMA = {
    "type": "struct",
    "fields": [_col("id", "int32", optional=False, default=0)],
    "optional": False,
    "name": f"{SERVER}.inventory.customers.Key",
}


# -- values -----------------------------------------------------------------------------------
def row(i: int, **changes: Any) -> dict[str, Any]:
    """A source row as Python values (what the replica should hold)."""
    base: dict[str, Any] = {
        "id": i,
        "name": f"customer {i}",
        "email": f"c{i}@example.com" if i % 3 else None,
        "active": i % 2 == 0,
        "born": dt.date(1980, 1, 1) + dt.timedelta(days=i),
        "updated": _wall(2024, 5, 1, 12, 0, 0, 123456) + dt.timedelta(seconds=i),
        "seen": _wall(2024, 5, 1, 12, 0, 0, 123457) + dt.timedelta(minutes=i),
        "created": dt.datetime(2024, 5, 1, 10, 0, 0, 500000, tzinfo=UTC) + dt.timedelta(hours=i),
        "alarm": dt.time(7, 30, i % 60, 250),
        "balance": Decimal(f"{-1 if i % 4 == 1 else 1}{i}.{i % 100:02d}"),
        "ratio": Decimal(i) / Decimal(8) if i % 5 else Decimal("-0.000001"),
        "meta": json.dumps({"tier": i % 3}),
        "uid": f"00000000-0000-4000-8000-{i:012d}",
        "status": "paid" if i % 2 else "new",
        "location": bytes.fromhex("0101000000000000000000f03f0000000000000040"),
        "avatar": bytes([i % 256, 0, 255]),
    }
    base.update(changes)
    return base


def _unscaled(value: Decimal, scale: int) -> bytes:
    n = int(value.scaleb(scale))
    length = max(1, (n.bit_length() + 8) // 8)
    return n.to_bytes(length, "big", signed=True)


def _b64(data: bytes) -> str:
    return base64.b64encode(data).decode()


def _epoch_us(value: dt.datetime) -> int:
    return (value - _wall(1970, 1, 1)) // dt.timedelta(microseconds=1)


def _wall(*parts: int) -> dt.datetime:
    """A wall-clock time without a zone (a TIMESTAMP column: Debezium's MicroTimestamp)."""
    return dt.datetime(*parts, tzinfo=UTC).replace(tzinfo=None)


def json_payload_row(r: dict[str, Any] | None) -> dict[str, Any] | None:
    """A row as the JSON converter writes it (Debezium's default modes)."""
    if r is None:
        return None
    out = dict(r)
    out["born"] = (r["born"] - dt.date(1970, 1, 1)).days if r["born"] else None
    out["updated"] = _epoch_us(r["updated"])
    out["seen"] = _epoch_us(r["seen"]) * 1000 + 0
    out["created"] = r["created"].astimezone(UTC).strftime("%Y-%m-%dT%H:%M:%S.%fZ")
    t = r["alarm"]
    out["alarm"] = ((t.hour * 60 + t.minute) * 60 + t.second) * 1_000_000 + t.microsecond
    out["balance"] = _b64(_unscaled(r["balance"], 2))
    exponent = r["ratio"].as_tuple().exponent
    scale = -exponent if isinstance(exponent, int) and exponent < 0 else 0
    out["ratio"] = {"scale": scale, "value": _b64(_unscaled(r["ratio"], scale))}
    out["location"] = {"wkb": _b64(r["location"]), "srid": None}
    out["avatar"] = _b64(r["avatar"])
    return out


def pg_source(lsn: int, ts_ms: int) -> dict[str, Any]:
    return {
        "version": "2.7.3.Final",
        "connector": "postgresql",
        "name": SERVER,
        "ts_ms": ts_ms,
        "snapshot": "false",
        "db": "inventory",
        "sequence": json.dumps([str(lsn - 8), str(lsn)]),
        "ts_us": ts_ms * 1000,
        "ts_ns": ts_ms * 1_000_000,
        "schema": "inventory",
        "table": "customers",
        "txId": 700 + lsn % 97,
        "lsn": lsn,
        "xmin": None,
    }


def mysql_source(pos: int, ts_ms: int, gtid: str | None = None) -> dict[str, Any]:
    return {
        "version": "2.7.3.Final",
        "connector": "mysql",
        "name": SERVER,
        "ts_ms": ts_ms,
        "snapshot": "false",
        "db": "inventory",
        "table": "customers",
        "server_id": 223344,
        "gtid": gtid,
        "file": "mysql-bin.000003",
        "pos": pos,
        "row": 0,
    }


def payload(
    op: str,
    before: dict[str, Any] | None,
    after: dict[str, Any] | None,
    lsn: int = 1000,
    ts_ms: int = 1_714_560_000_000,
    source: dict[str, Any] | None = None,
) -> dict[str, Any]:
    return {
        "before": json_payload_row(before),
        "after": json_payload_row(after),
        "source": source or pg_source(lsn, ts_ms),
        "transaction": None,
        "op": op,
        "ts_ms": ts_ms + 5,
        "ts_us": (ts_ms + 5) * 1000,
        "ts_ns": (ts_ms + 5) * 1_000_000,
    }


def json_value(
    p: dict[str, Any],
    schemas: bool = True,
    extra: bool = False,
    mysql: bool = False,
    drop: tuple[str, ...] = (),
) -> bytes:
    """The JSON converter's bytes for a payload (compact, as Jackson writes them); ``drop``
    leaves columns out of the schema and the row images."""
    for image in ("before", "after"):
        if p.get(image) is not None and drop:
            p = {**p, image: {k: v for k, v in p[image].items() if k not in drop}}
    doc = {"schema": envelope_schema(extra, mysql, drop), "payload": p} if schemas else p
    return json.dumps(doc, separators=(",", ":")).encode()


def json_key(i: int, schemas: bool = True) -> bytes:
    doc: dict[str, Any] = {"id": i}
    if schemas:
        doc = {"schema": KEY_SCHEMA, "payload": doc}
    return json.dumps(doc, separators=(",", ":")).encode()


# -- Avro ---------------------------------------------------------------------------------------
def _avro_logical(kind: str, name: str, **params: str) -> dict[str, Any]:
    out: dict[str, Any] = {"type": kind, "connect.version": 1, "connect.name": name}
    if params:
        out["connect.parameters"] = params
    return out


def avro_value_schema(extra: bool = False) -> dict[str, Any]:
    """The writer schema Confluent's AvroConverter registers for the envelope."""
    opt = lambda t: ["null", t]  # noqa: E731
    columns: list[dict[str, Any]] = [
        {"name": "id", "type": {"type": "int", "connect.default": 0}, "default": 0},
        {"name": "name", "type": "string"},
        {"name": "email", "type": opt("string"), "default": None},
        {"name": "active", "type": opt("boolean"), "default": None},
        {
            "name": "born",
            "type": opt(_avro_logical("int", "io.debezium.time.Date")),
            "default": None,
        },
        {
            "name": "updated",
            "type": opt(_avro_logical("long", "io.debezium.time.MicroTimestamp")),
            "default": None,
        },
        {
            "name": "seen",
            "type": opt(_avro_logical("long", "io.debezium.time.NanoTimestamp")),
            "default": None,
        },
        {
            "name": "created",
            "type": opt(_avro_logical("string", "io.debezium.time.ZonedTimestamp")),
            "default": None,
        },
        {
            "name": "alarm",
            "type": opt(_avro_logical("long", "io.debezium.time.MicroTime")),
            "default": None,
        },
        {
            "name": "balance",
            "type": opt(
                {
                    "type": "bytes",
                    "scale": 2,
                    "precision": 10,
                    "connect.version": 1,
                    "connect.parameters": {"scale": "2", "connect.decimal.precision": "10"},
                    "connect.name": "org.apache.kafka.connect.data.Decimal",
                    "logicalType": "decimal",
                }
            ),
            "default": None,
        },
        {
            "name": "ratio",
            "type": opt(
                {
                    "type": "record",
                    "name": "VariableScaleDecimal",
                    "namespace": "io.debezium.data",
                    "fields": [
                        {"name": "scale", "type": "int"},
                        {"name": "value", "type": "bytes"},
                    ],
                    "connect.doc": "Variable scaled decimal",
                    "connect.version": 1,
                    "connect.name": "io.debezium.data.VariableScaleDecimal",
                }
            ),
            "default": None,
        },
        {
            "name": "meta",
            "type": opt(_avro_logical("string", "io.debezium.data.Json")),
            "default": None,
        },
        {
            "name": "uid",
            "type": opt(_avro_logical("string", "io.debezium.data.Uuid")),
            "default": None,
        },
        {
            "name": "status",
            "type": opt(_avro_logical("string", "io.debezium.data.Enum", allowed="new,paid")),
            "default": None,
        },
        {
            "name": "location",
            "type": opt(
                {
                    "type": "record",
                    "name": "Geometry",
                    "namespace": "io.debezium.data.geometry",
                    "fields": [
                        {"name": "wkb", "type": "bytes"},
                        {"name": "srid", "type": opt("int"), "default": None},
                    ],
                    "connect.doc": "Geometry",
                    "connect.version": 1,
                    "connect.name": "io.debezium.data.geometry.Geometry",
                }
            ),
            "default": None,
        },
        {"name": "avatar", "type": opt("bytes"), "default": None},
    ]
    if extra:
        columns.append({"name": "phone", "type": opt("string"), "default": None})
    value = {
        "type": "record",
        "name": "Value",
        "namespace": f"{SERVER}.inventory.customers",
        "fields": columns,
        "connect.name": f"{SERVER}.inventory.customers.Value",
    }
    source = {
        "type": "record",
        "name": "Source",
        "namespace": "io.debezium.connector.postgresql",
        "fields": [
            {"name": "version", "type": "string"},
            {"name": "connector", "type": "string"},
            {"name": "name", "type": "string"},
            {"name": "ts_ms", "type": "long"},
            {  # a default of the first branch, as AvroData writes it
                "name": "snapshot",
                "type": [
                    {
                        **_avro_logical("string", "io.debezium.data.Enum"),
                        "connect.default": "false",
                    },
                    "null",
                ],
                "default": "false",
            },
            {"name": "db", "type": "string"},
            {"name": "schema", "type": "string"},
            {"name": "table", "type": "string"},
            {"name": "txId", "type": opt("long"), "default": None},
            {"name": "lsn", "type": opt("long"), "default": None},
        ],
        "connect.name": "io.debezium.connector.postgresql.Source",
    }
    return {
        "type": "record",
        "name": "Envelope",
        "namespace": f"{SERVER}.inventory.customers",
        "fields": [
            {"name": "before", "type": opt(value), "default": None},
            {"name": "after", "type": opt(f"{SERVER}.inventory.customers.Value"), "default": None},
            {"name": "source", "type": source},
            {"name": "op", "type": "string"},
            {"name": "ts_ms", "type": opt("long"), "default": None},
        ],
        "connect.version": 2,
        "connect.name": f"{SERVER}.inventory.customers.Envelope",
    }


AVRO_KEY_SCHEMA = {
    "type": "record",
    "name": "Key",
    "namespace": f"{SERVER}.inventory.customers",
    "fields": [{"name": "id", "type": {"type": "int", "connect.default": 0}, "default": 0}],
    "connect.name": f"{SERVER}.inventory.customers.Key",
}


def avro_row(r: dict[str, Any] | None) -> dict[str, Any] | None:
    if r is None:
        return None
    j = json_payload_row(r)
    assert j is not None
    out = dict(j)
    out["balance"] = r["balance"]
    out["ratio"] = {"scale": j["ratio"]["scale"], "value": base64.b64decode(j["ratio"]["value"])}
    out["location"] = {"wkb": r["location"], "srid": None}
    out["avatar"] = r["avatar"]
    return out


def avro_record(
    op: str,
    before: dict[str, Any] | None,
    after: dict[str, Any] | None,
    lsn: int = 1000,
    ts_ms: int = 1_714_560_000_000,
) -> dict[str, Any]:
    return {
        "before": avro_row(before),
        "after": avro_row(after),
        "source": {
            "version": "2.7.3.Final",
            "connector": "postgresql",
            "name": SERVER,
            "ts_ms": ts_ms,
            "snapshot": "false",
            "db": "inventory",
            "schema": "inventory",
            "table": "customers",
            "txId": 700,
            "lsn": lsn,
        },
        "op": op,
        "ts_ms": ts_ms + 5,
    }
