"""Debezium change events per second into DuckDB and PostgreSQL, beside the same changes as plain
JSON, measured in one run.

The changes: ``--messages`` events over ``--keys`` rows of an 8-column table (int, text, a
Connect Decimal, a MicroTimestamp, a ZonedTimestamp, an Enum, a boolean): a key's first event
creates it, later ones update it, every sixth deletes it (and the next one creates it again).
Each variant is its own topic of the same changes:

  debezium+schema  the JSON converter with schemas.enable=true (the schema in every message),
                   as Debezium writes it; each delete followed by its tombstone
  debezium         the JSON converter with schemas.enable=false (the bare envelope)
  plain json       the after image as a JSON object, deletes as tombstones
                   (``mode: upsert, key: [id], delete_on_tombstone: true``)

Each is loaded by ``kafka-etl run --json`` (a fresh table each time, in a child process of this
checkout's code); the figure is the events read (tombstones included) divided by the run's own
seconds (``seconds`` of its summary: planning, reading, decoding and writing; not the
interpreter's start).

    .venv/bin/python bench/bench_cdc.py [--messages 200000] [--keys 20000]

Uses $KAFKA_BOOTSTRAP_SERVERS or starts the repo's local broker, and
$KAFKA_ETL_BENCH_POSTGRESQL_URL or ``scripts/local-db start postgresql``.
"""

from __future__ import annotations

import argparse
import base64
import json
import subprocess
import sys
import tempfile
import time
import uuid
from decimal import Decimal
from pathlib import Path
from typing import Any

import yaml
from bench_postgres import Database, server_url
from common import PARTITIONS, REPO, bootstrap
from confluent_kafka import Producer
from confluent_kafka.admin import AdminClient, NewTopic

from connector.librdkafka import logged

_T0 = 1_714_560_000_000_000  # microseconds


def _col(name: str, kind: str, logical: str | None = None, **extra: Any) -> dict[str, Any]:
    out: dict[str, Any] = {"type": kind, "optional": name != "id"}
    if logical:
        out |= {"name": logical, "version": 1}
    return {**out, **extra, "field": name}


COLUMNS = [
    _col("id", "int32", default=0),
    _col("name", "string"),
    _col("email", "string"),
    _col(
        "balance",
        "bytes",
        "org.apache.kafka.connect.data.Decimal",
        parameters={"scale": "2", "connect.decimal.precision": "12"},
    ),
    _col("updated", "int64", "io.debezium.time.MicroTimestamp"),
    _col("created", "string", "io.debezium.time.ZonedTimestamp"),
    _col("status", "string", "io.debezium.data.Enum", parameters={"allowed": "new,paid,shipped"}),
    _col("active", "boolean", default=True),
]
SOURCE = [
    _col(n, k)
    for n, k in [
        ("version", "string"),
        ("connector", "string"),
        ("name", "string"),
        ("ts_ms", "int64"),
        ("db", "string"),
        ("schema", "string"),
        ("table", "string"),
        ("txId", "int64"),
        ("lsn", "int64"),
    ]
] + [_col("snapshot", "string", "io.debezium.data.Enum", default="false")]
ROW = {"type": "struct", "fields": COLUMNS, "optional": True, "name": "bench.public.orders.Value"}
SCHEMA = {
    "type": "struct",
    "fields": [
        {**ROW, "field": "before"},
        {**ROW, "field": "after"},
        {"type": "struct", "fields": SOURCE, "optional": False, "field": "source"},
        _col("op", "string"),
        _col("ts_ms", "int64"),
    ],
    "optional": False,
    "name": "bench.public.orders.Envelope",
    "version": 2,
}
KEY_SCHEMA = {"type": "struct", "fields": [COLUMNS[0]], "optional": False, "name": "bench.Key"}


def changes(count: int, keys: int) -> list[tuple[str, int, int]]:
    """(op, key, version) of every change, in commit order."""
    out = []
    seen: dict[int, int] = {}
    for i in range(count):
        key = (i * 7919) % keys
        version = seen.get(key, -1) + 1
        if version == 0:
            op = "c"
        elif version % 6 == 5:
            op = "d"
        else:
            op = "u"
        seen[key] = -1 if op == "d" else version
        out.append((op, key, version))
    return out


def _row(key: int, version: int) -> dict[str, Any]:
    """The row as Python values."""
    return {
        "id": key,
        "name": f"order {key} v{version}",
        "email": f"buyer{key}@example.com",
        "balance": Decimal(key * 100 + version) / 100,
        "updated": _T0 + key * 1_000_003 + version,
        "created": _T0 + key * 1_000,
        "status": ("new", "paid", "shipped")[version % 3],
        "active": version % 2 == 0,
    }


def _connect_row(r: dict[str, Any]) -> dict[str, Any]:
    unscaled = int(r["balance"] * 100)
    raw = unscaled.to_bytes(max(1, (unscaled.bit_length() + 8) // 8), "big", signed=True)
    created = time.strftime("%Y-%m-%dT%H:%M:%S", time.gmtime(r["created"] // 1_000_000))
    return {
        **r,
        "balance": base64.b64encode(raw).decode(),
        "created": f"{created}.{r['created'] % 1_000_000:06d}Z",
    }


def _plain_row(r: dict[str, Any]) -> dict[str, Any]:
    c = _connect_row(r)
    return {**r, "balance": float(r["balance"]), "created": c["created"], "updated": r["updated"]}


def messages(kind: str, plan: list[tuple[str, int, int]]) -> list[tuple[bytes | None, bytes]]:
    out: list[tuple[bytes | None, bytes]] = []
    schema_text = json.dumps(SCHEMA, separators=(",", ":"))
    for n, (op, key, version) in enumerate(plan):
        if kind == "plain":
            value = (
                None
                if op == "d"
                else json.dumps(_plain_row(_row(key, version)), separators=(",", ":")).encode()
            )
            out.append((value, json.dumps({"id": key}).encode()))
            continue
        before = _connect_row(_row(key, version - 1)) if op != "c" else None
        after = _connect_row(_row(key, version)) if op != "d" else None
        source = {
            "version": "2.7.3.Final",
            "connector": "postgresql",
            "name": "bench",
            "ts_ms": _T0 // 1000 + n,
            "db": "shop",
            "schema": "public",
            "table": "orders",
            "txId": 1000 + n,
            "lsn": 50_000_000 + n * 64,
            "snapshot": "false",
        }
        payload = {"before": before, "after": after, "source": source, "op": op, "ts_ms": 0}
        body = json.dumps(payload, separators=(",", ":"))
        key_doc: dict[str, Any] = {"id": key}
        if kind == "debezium+schema":
            body = f'{{"schema":{schema_text},"payload":{body}}}'
            key_doc = {"schema": KEY_SCHEMA, "payload": key_doc}
        key_bytes = json.dumps(key_doc, separators=(",", ":")).encode()
        out.append((body.encode(), key_bytes))
        if op == "d":
            out.append((None, key_bytes))
    return out


def make_topic(servers: str, data: list[tuple[bytes | None, bytes]], prefix: str) -> str:
    topic = f"{prefix}-{uuid.uuid4().hex[:8]}"
    admin = AdminClient(logged({"bootstrap.servers": servers}))
    admin.create_topics([NewTopic(topic, PARTITIONS, 1)])[topic].result(timeout=30)
    producer = Producer(
        logged(
            {
                "bootstrap.servers": servers,
                "linger.ms": 50,
                "batch.size": 1_000_000,
                "queue.buffering.max.messages": 2_000_000,
                "compression.type": "lz4",
            }
        )
    )
    for value, key in data:
        while True:
            try:
                producer.produce(topic, value, key=key)
                break
            except BufferError:
                producer.poll(0.05)
    producer.flush(120)
    return topic


def load(servers: str, topic: str, target: str, name: str, kind: str, workdir: Path) -> dict:
    body: dict[str, Any] = {"topic": topic, "target": target, "table": name}
    if kind == "plain":
        body |= {"mode": "upsert", "key": ["id"], "delete_on_tombstone": True}
    else:
        body |= {"envelope": "debezium"}
    config = workdir / f"{name}.yaml"
    config.write_text(
        yaml.safe_dump({"kafka": {"bootstrap.servers": servers}, "pipelines": {name: body}})
    )
    command = [sys.executable, "-m", "pipelines.cli", "-c", str(config), "run", name, "--json"]
    done = subprocess.run(command, capture_output=True, text=True, check=False, cwd=REPO)
    if done.returncode != 0:
        raise SystemExit(f"{kind} into {target.split(':')[0]} failed: {done.stderr.strip()}")
    summary: dict = json.loads(done.stdout)
    if isinstance(summary, list):
        summary = summary[0]
    return summary


def main() -> int:
    parser = argparse.ArgumentParser(description=(__doc__ or "").splitlines()[0])
    parser.add_argument("--messages", type=int, default=200_000, help="changes per variant")
    parser.add_argument("--keys", type=int, default=20_000)
    args = parser.parse_args()
    servers = bootstrap()
    server = server_url()
    plan = changes(args.messages, args.keys)
    kinds = ("debezium+schema", "debezium", "plain")
    topics: dict[str, tuple[str, int, int]] = {}
    for kind in kinds:
        data = messages(kind, plan)
        size = sum(len(v) for v, _ in data if v) // max(1, sum(1 for v, _ in data if v))
        topics[kind] = (
            make_topic(servers, data, f"bench-cdc-{kind.replace('+', '-')}"),
            len(data),
            size,
        )
        print(f"{kind:<16} {len(data):>9,} messages, ~{size:,} bytes per value", flush=True)
    results: list[tuple[str, str, float, int]] = []
    with tempfile.TemporaryDirectory(prefix="bench-cdc-") as tmp, Database(server) as db:
        workdir = Path(tmp)
        targets = {
            "duckdb": f"duckdb:///{workdir / 'cdc.duckdb'}",
            "postgresql": db.url.render_as_string(hide_password=False),
        }
        for sink, target in targets.items():
            for kind in kinds:
                topic, count, _ = topics[kind]
                name = f"{kind.replace('+', '_')}_{sink}"
                summary = load(
                    servers, topic, target, name.replace("debezium_schema", "dbz_s"), kind, workdir
                )
                read = sum(b - a for a, b in summary["ranges"].values())
                assert read == count, (read, count)
                rate = read / summary["seconds"]
                results.append((sink, kind, rate, int(summary["table_rows"] or 0)))
                print(
                    f"{sink:<10} {kind:<16} {rate:>10,.0f} events/s  ({read:,} events in"
                    f" {summary['seconds']:.1f}s, {summary['table_rows']:,} rows in the table)",
                    flush=True,
                )
    print()
    for sink in ("duckdb", "postgresql"):
        got = {kind: rate for s, kind, rate, _ in results if s == sink}
        rows = {kind: n for s, kind, _, n in results if s == sink}
        assert len(set(rows.values())) == 1, f"{sink}: the three replicas differ: {rows}"
        print(
            f"{sink:<10} debezium+schema {got['debezium+schema']:>9,.0f}  debezium"
            f" {got['debezium']:>9,.0f}  plain json {got['plain']:>9,.0f} events/s"
            f"  (schema / plain = {got['debezium+schema'] / got['plain']:.2f})"
        )
    return 0


if __name__ == "__main__":
    sys.exit(main())
