"""The demo behind `make demo`: sample events into Kafka, one exactly-once load, a summary.

Run with the local broker's address in KAFKA_BOOTSTRAP_SERVERS (the Makefile does this).
"""

from __future__ import annotations

import json
import os
import random
import sys
from pathlib import Path

import duckdb
from confluent_kafka import Producer
from confluent_kafka.admin import AdminClient, NewTopic
from rich.console import Console
from rich.table import Table

from connector.librdkafka import logged
from pipelines.config import load_project
from pipelines.runner import run_pipeline
from sinks.duckdb.sql import quote

HERE = Path(__file__).resolve().parent
CONFIG = HERE / "pipelines.yaml"
ACTIONS = ("login", "logout", "view_page", "add_to_cart", "purchase")
console = Console()


def produce_sample_events(bootstrap: str, topic: str, count: int) -> None:
    admin = AdminClient(logged({"bootstrap.servers": bootstrap}))
    if topic not in admin.list_topics(timeout=10).topics:
        admin.create_topics([NewTopic(topic, num_partitions=3, replication_factor=1)])[
            topic
        ].result(timeout=30)
    producer = Producer(logged({"bootstrap.servers": bootstrap, "linger.ms": 20}))
    rng = random.Random()
    for _ in range(count):
        user = rng.randint(1, 500)
        event = {"user_id": user, "action": rng.choice(ACTIONS), "page": f"/p/{rng.randint(1, 40)}"}
        while True:
            try:
                producer.produce(topic, json.dumps(event).encode(), key=str(user).encode())
                break
            except BufferError:
                producer.poll(0.1)
        producer.poll(0)
    producer.flush(30)
    console.print(f"produced {count:,} sample events to [bold]{topic}[/] on {bootstrap}")


def summarise(database: str, table: str) -> None:
    con = duckdb.connect(database, read_only=True)
    try:
        total, users, first, last = con.execute(
            "SELECT count(*), count(DISTINCT user_id), min(_timestamp), max(_timestamp)"
            f" FROM {quote(table)}"
        ).fetchall()[0]
        by_action = con.execute(
            f"SELECT action, count(*) FROM {quote(table)} GROUP BY 1 ORDER BY 2 DESC"
        ).fetchall()
    finally:
        con.close()
    summary = Table(title=f"{table} in {database}", title_justify="left")
    summary.add_column("action")
    summary.add_column("events", justify="right")
    for action, n in by_action:
        summary.add_row(action, f"{n:,}")
    summary.add_row("total", f"{total:,}", style="bold")
    console.print(summary)
    console.print(f"{users:,} distinct users, events from {first} to {last}")


def main() -> int:
    count = int(sys.argv[1]) if len(sys.argv) > 1 else 10_000
    project = load_project(CONFIG)
    pipeline = project.pipeline("user_events")
    produce_sample_events(str(project.kafka["bootstrap.servers"]), pipeline.topic, count)
    result = run_pipeline(project, "user_events")
    console.print(
        f"loaded {result.rows:,} rows into {result.table} in {result.seconds:.2f}s"
        f" ({result.rows_per_second:,.0f} rows/s), offsets "
        + ", ".join(str(r) for r in result.ranges.values())
    )
    database = str((HERE / "../.local/demo/warehouse.duckdb").resolve())
    summarise(database, pipeline.table)
    bootstrap = os.environ.get("KAFKA_BOOTSTRAP_SERVERS", "")
    console.print(
        f"next: KAFKA_BOOTSTRAP_SERVERS={bootstrap} .venv/bin/kafka-etl -c {CONFIG} status"
    )
    return 0


if __name__ == "__main__":
    sys.exit(main())
