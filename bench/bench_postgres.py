"""PostgreSQL load throughput: three ways to move the same events, measured in one run.

(a) COPY path: ``kafka-etl run`` into a fresh PostgreSQL database, in its own process (start-up
    included): each micro-batch is encoded in PostgreSQL's binary COPY format, streamed with
    psycopg 3 ``COPY`` straight into the table, with the checkpoint, in one transaction. Run
    ``--repeat`` times (each into a new table): every run and the median are printed.
(b) generic path: the same run with ``SqlSink(fast_path=False)``: chunked ``executemany`` of
    one compiled ``INSERT``, as on every other database (also its own process).
(c) naive loop: per message ``poll()``, ``json.loads`` and one ``INSERT`` (autocommit), on a
    slice of the messages.

    .venv/bin/python bench/bench_postgres.py [--messages 1000000] [--slice 50000] [--repeat 3]

Uses $KAFKA_BOOTSTRAP_SERVERS or starts the repo's local broker, and
$KAFKA_ETL_BENCH_POSTGRESQL_URL or ``scripts/local-db start postgresql``. Each run gets its own
database, dropped at the end.
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import subprocess
import sys
import tempfile
import time
import uuid
from pathlib import Path
from typing import Any

import psycopg
import sqlalchemy as sa
import yaml
from common import PARTITIONS, REPO, bootstrap, make_topic
from confluent_kafka import Consumer, TopicPartition
from sqlalchemy.engine import make_url

from connector.librdkafka import logged


def server_url() -> str:
    if env := os.environ.get("KAFKA_ETL_BENCH_POSTGRESQL_URL"):
        return env
    out = subprocess.run(
        [str(REPO / "scripts" / "local-db"), "start", "postgresql"],
        capture_output=True,
        text=True,
        check=True,
    )
    return out.stdout.strip().splitlines()[-1]


def event(i: int) -> bytes:
    """About 170 bytes of JSON, with one nested object (stored as JSONB)."""
    return json.dumps(
        {
            "event_id": f"{i * 2654435761 % 2**64:016x}-{i:08d}",
            "user_id": 100_000 + i % 50_000,
            "action": ("login", "view", "click", "purchase", "logout")[i % 5],
            "page": f"/products/{i % 9973}/details",
            "amount": round((i % 10_000) / 7, 2),
            "ok": i % 7 != 0,
            "device": {"os": ("android", "ios", "web")[i % 3], "v": i % 40},
        },
        separators=(",", ":"),
    ).encode()


class Database:
    """A fresh database on the server, dropped on exit."""

    def __init__(self, server: str) -> None:
        self.admin = sa.create_engine(server, isolation_level="AUTOCOMMIT")
        self.name = f"bench_{uuid.uuid4().hex[:8]}"
        with self.admin.connect() as conn:
            conn.execute(sa.text(f'CREATE DATABASE "{self.name}"'))
        self.url = make_url(server).set(database=self.name)

    def __enter__(self) -> Database:
        return self

    def __exit__(self, *exc: object) -> None:
        with self.admin.connect() as conn:
            conn.execute(sa.text(f'DROP DATABASE IF EXISTS "{self.name}" WITH (FORCE)'))
        self.admin.dispose()


def run_cli(
    servers: str, topic: str, target: str, workdir: Path, name: str, *, variant: str
) -> float:
    """Seconds for ``kafka-etl run`` (or a variant of its sink) in a child process."""
    config = workdir / f"{name}.yaml"
    config.write_text(
        yaml.safe_dump(
            {
                "kafka": {"bootstrap.servers": servers},
                "pipelines": {name: {"topic": topic, "target": target, "table": name}},
            }
        )
    )
    if variant == "copy":
        command = [str(REPO / ".venv" / "bin" / "kafka-etl"), "-c", str(config), "run", name]
    else:
        command = [sys.executable, __file__, "--variant-run", variant, str(config), name]
    started = time.perf_counter()
    done = subprocess.run(command, capture_output=True, text=True, check=False)
    elapsed = time.perf_counter() - started
    if done.returncode != 0:
        raise SystemExit(f"{variant} run failed: {done.stderr.strip()}")
    return elapsed


def variant_run(variant: str, config: str, name: str) -> None:
    """``kafka-etl run`` with the SQL sink's write path switched (child process of (b))."""
    from pipelines import runner
    from pipelines.config import load_project
    from sinks.factory import resolve_target
    from sinks.sql.sink import SqlSink

    def open_variant(target: str, spec: Any, *, base_dir: Any = None, **_: Any) -> SqlSink:
        assert variant == "generic"
        return SqlSink(resolve_target(target, base_dir), spec, fast_path=False)

    runner.open_sink = open_variant
    runner.run_pipeline(load_project(config), name)


def naive_loop(servers: str, topic: str, count: int, url: sa.URL) -> float:
    """What a first script does: one poll, one json.loads and one INSERT per message."""
    dsn = url.set(drivername="postgresql").render_as_string(hide_password=False)
    with psycopg.connect(dsn, autocommit=True) as conn:
        conn.execute(
            "CREATE TABLE naive (event_id TEXT, user_id BIGINT, action TEXT, page TEXT,"
            ' amount DOUBLE PRECISION, ok BOOLEAN, device JSONB, "partition" INTEGER,'
            ' "offset" BIGINT)'
        )
        consumer = Consumer(
            logged(
                {
                    "bootstrap.servers": servers,
                    "group.id": f"naive-{uuid.uuid4().hex}",
                    "enable.auto.commit": False,
                }
            )
        )
        consumer.assign([TopicPartition(topic, p, 0) for p in range(PARTITIONS)])
        done = 0
        started = time.perf_counter()
        while done < count:
            m = consumer.poll(1.0)
            if m is None or m.error() is not None:
                continue
            v = json.loads(m.value() or b"{}")
            conn.execute(
                "INSERT INTO naive VALUES (%s, %s, %s, %s, %s, %s, %s, %s, %s)",
                [
                    v["event_id"],
                    v["user_id"],
                    v["action"],
                    v["page"],
                    v["amount"],
                    v["ok"],
                    json.dumps(v["device"]),
                    m.partition(),
                    m.offset(),
                ],
            )
            done += 1
        elapsed = time.perf_counter() - started
        consumer.close()
    return count / elapsed


def count_rows(url: sa.URL, table: str) -> int:
    engine = sa.create_engine(url)
    try:
        with engine.connect() as conn:
            t = sa.table(table)
            return int(conn.execute(sa.select(sa.func.count()).select_from(t)).scalar_one())
    finally:
        engine.dispose()


def main() -> int:
    parser = argparse.ArgumentParser(description=(__doc__ or "").splitlines()[0])
    parser.add_argument("--messages", type=int, default=1_000_000)
    parser.add_argument("--slice", type=int, default=50_000)
    parser.add_argument("--repeat", type=int, default=3, help="runs of the COPY path")
    parser.add_argument("--variant-run", nargs=3, help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.variant_run:
        variant_run(*args.variant_run)
        return 0
    servers = bootstrap()
    server = server_url()
    size = len(event(12345))
    print(
        f"broker {servers}; producing {args.messages:,} events of ~{size} bytes over"
        f" {PARTITIONS} partitions ...",
        flush=True,
    )
    started = time.perf_counter()
    topic = make_topic(servers, args.messages, event, "bench-pg")
    print(f"produced in {time.perf_counter() - started:.1f}s", flush=True)
    labels = {"copy": "(a) COPY path, kafka-etl run", "generic": "(b) generic executemany path"}
    runs = [("copy", i) for i in range(args.repeat)] + [("generic", 0)]
    seconds: dict[str, list[float]] = {"copy": [], "generic": []}
    with tempfile.TemporaryDirectory(prefix="bench-pg-") as tmp, Database(server) as db:
        workdir = Path(tmp)
        target = db.url.render_as_string(hide_password=False)
        for variant, i in runs:
            table = f"{variant}_path_{i}"
            elapsed = run_cli(servers, topic, target, workdir, table, variant=variant)
            assert count_rows(db.url, table) == args.messages
            seconds[variant].append(elapsed)
            print(f"{labels[variant]} #{i + 1}: {elapsed:.1f}s", flush=True)
        naive = naive_loop(servers, topic, args.slice, db.url)
    rates = {v: args.messages / statistics.median(t) for v, t in seconds.items()}
    print()
    for variant, label in labels.items():
        each = ", ".join(f"{args.messages / t:,.0f}" for t in seconds[variant])
        print(
            f"{label:<34} {rates[variant]:>10,.0f} rows/s  median of [{each}]"
            f" ({args.messages:,} rows, process start included)"
        )
    print(f"{'(c) naive loop, 1 INSERT per row':<34} {naive:>10,.0f} rows/s  ({args.slice:,} rows)")
    a = rates["copy"]
    print(f"a/c = {a / naive:.1f}x (target >= 10x)   a/b = {a / rates['generic']:.1f}x")
    print(f"a = {a:,.0f} rows/s end to end, median (target >= 100,000)")
    return 0


if __name__ == "__main__":
    sys.exit(main())
