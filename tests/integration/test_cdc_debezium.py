"""Change data capture end to end: PostgreSQL -> Debezium (Kafka Connect) -> kafka-etl -> replica.

A real Debezium PostgreSQL connector (pgoutput, JsonConverter with schemas) captures three source
tables through a snapshot and more than 10,000 streamed changes: inserts, updates, deletes,
primary-key updates, columns added mid-stream, transactions over two tables, deleted keys
inserted again. One `topic_pattern` pipeline with `envelope: debezium` loads the topics with the
CLI into DuckDB and into a second PostgreSQL database; every replica table must equal its source
table row for row and value for value (source columns only):

  1. after one clean run;
  2. on a fresh replica, after runs SIGKILLed at moments chosen from observed progress, then a
     clean run;
  3. after `reset --to earliest` and a run on top of the finished replica (a full replay must
     not bring deleted rows back).

The capture runs once per module (one connector, one Connect worker per session); the load
cases are parametrised by replica.
"""

from __future__ import annotations

import contextlib
import json
import re
import time
import uuid
from collections import Counter
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from datetime import UTC, datetime
from decimal import Decimal
from pathlib import Path
from typing import Any

import pytest
import sqlalchemy as sa
import yaml
from confluent_kafka import Consumer, KafkaException, TopicPartition
from confluent_kafka.admin import AdminClient
from sqlalchemy.pool import NullPool

from tests.fixtures.cdc import connector, postgres_connector_config
from tests.fixtures.databases import fresh_database
from tests.helpers import cli, fetch, kill_loop

TABLES = ("customers", "orders", "order_lines")
KEYS = {"customers": ("id",), "orders": ("id",), "order_lines": ("order_id", "line_no")}
MARKER = 999_999_999  # a last row in every table: once each topic has it, Debezium is done
ROUNDS = 10

SCHEMA = """
CREATE TABLE customers (
  id bigint PRIMARY KEY, name text NOT NULL, email text, active boolean, score double precision
);
CREATE TABLE orders (
  id bigint PRIMARY KEY, customer_id bigint, amount numeric(14,4), placed_at timestamptz,
  attrs jsonb, doc json, ref uuid, note text
);
CREATE TABLE order_lines (
  order_id bigint, line_no int, sku text, qty int, price numeric(10,2),
  PRIMARY KEY (order_id, line_no)
)
"""

# Rows present before the connector starts: Debezium's snapshot ('r' events).
SEED = """
SELECT setseed(0.15);
INSERT INTO customers
SELECT g, 'customer ' || g, CASE WHEN g % 7 = 0 THEN NULL ELSE 'c' || g || '@example.com' END,
       CASE WHEN g % 11 = 0 THEN NULL ELSE g % 3 = 0 END, g * 1.25 - 100
  FROM generate_series(1, 300) g;
INSERT INTO orders
SELECT g, g % 300 + 1,
       CASE WHEN g % 13 = 0 THEN NULL WHEN g = 1 THEN 9999999999.9999 WHEN g = 2 THEN -0.0001
            ELSE round(((random() - 0.5) * 2e6)::numeric, 4) END,
       CASE WHEN g % 17 = 0 THEN NULL WHEN g = 3 THEN '1899-12-31 23:59:59.999999+05:30'
            ELSE timestamptz '2020-02-29 12:00:00+00' + g * interval '37 min 13.123457 s' END,
       jsonb_build_object('n', g, 'tags', jsonb_build_array('a', g % 5, null),
                          'nested', jsonb_build_object('ü', 'ß€ "q"', 'f', round(g / 3.0, 6))),
       CASE WHEN g % 19 = 0 THEN NULL ELSE ('[ ' || g || ',  "x" , {"k" : true} ]')::json END,
       CASE WHEN g % 23 = 0 THEN NULL ELSE md5(g::text)::uuid END,
       CASE g % 4 WHEN 0 THEN '' WHEN 1 THEN E'line\\nbreak ''quote'' "dq"' WHEN 2 THEN NULL
                  ELSE 'order ' || g END
  FROM generate_series(1, 1000) g;
INSERT INTO order_lines
SELECT o, l, 'sku-' || (o * 10 + l), o % 9 + l, round((o % 97 + l / 4.0)::numeric, 2)
  FROM generate_series(1, 500) o, generate_series(1, 2) l
"""


def round_statements(r: int) -> list[list[str]]:
    """The streamed changes of round r, as transactions (lists of statements)."""
    base = 10_000 + r * 1_000
    txs = [
        [  # 300 new orders
            f"""INSERT INTO orders (id, customer_id, amount, placed_at, attrs, doc, ref, note)
            SELECT {base} + g, g % 300 + 1, round(((random() - 0.5) * 1e5)::numeric, 4),
                   timestamptz '2026-06-01 00:00:00-07' + (g * {r + 1}) * interval '1.000001 s',
                   jsonb_build_object('round', {r}, 'g', g, 'deep', jsonb_build_object('a', g)),
                   json_build_object('r', {r}, 'list', json_build_array(g, 'x')),
                   md5(({base} + g)::text)::uuid, 'round {r} #' || g
              FROM generate_series(1, 300) g"""
        ],
        [  # 250 order updates, some to NULL
            f"""UPDATE orders SET amount = CASE WHEN id % 5 = 0 THEN NULL ELSE -amount + {r} END,
                   attrs = coalesce(attrs, '{{}}') || jsonb_build_object('updated', {r}),
                   placed_at = placed_at + interval '1 day 0.5 s',
                   note = CASE WHEN id % 3 = 0 THEN NULL ELSE 'updated in {r}' END
             WHERE id IN (SELECT id FROM orders ORDER BY id OFFSET {r * 97} LIMIT 250)"""
        ],
        [  # 200 new lines for the new orders, then about a tenth of all lines updated
            f"""INSERT INTO order_lines
            SELECT {base} + g, 1, 'sku-r{r}-' || g, g % 5, round((g * 1.01)::numeric, 2)
              FROM generate_series(1, 200) g""",
            f"""UPDATE order_lines SET qty = qty + 1, price = round(price * 1.1, 2)
             WHERE (order_id + line_no) % 10 = {r}""",
        ],
        [  # deletes: new orders and, 10 a round, snapshot ones (some come back in round 7)
            f"DELETE FROM orders WHERE id IN (SELECT id FROM orders ORDER BY id DESC"
            f" OFFSET {r * 13} LIMIT 30)",
            f"DELETE FROM orders WHERE id BETWEEN {100 + r * 40} AND {109 + r * 40}",
            f"DELETE FROM order_lines WHERE (order_id, line_no) IN (SELECT order_id, line_no"
            f" FROM order_lines ORDER BY order_id, line_no OFFSET {r * 31} LIMIT 30)",
        ],
        [  # customers: 30 new, 20 updated, 5 deleted
            f"""INSERT INTO customers (id, name, email, active, score)
            SELECT {base} + g, 'new ' || g, NULL, g % 2 = 0, g / 8.0
              FROM generate_series(1, 30) g""",
            f"""UPDATE customers SET score = score * -2, email = 'u{r}.' || id || '@example.com'
             WHERE id IN (SELECT id FROM customers ORDER BY id OFFSET {r * 7} LIMIT 20)""",
            f"DELETE FROM customers WHERE id IN (SELECT id FROM customers ORDER BY id DESC"
            f" OFFSET {r} LIMIT 5)",
        ],
        [  # primary-key updates: Debezium emits a delete of the old key and a create of the new
            f"""UPDATE customers SET id = id + 100000
             WHERE id IN (SELECT id FROM customers WHERE id < 100000 ORDER BY id
                          OFFSET {r * 5} LIMIT 3)""",
            f"UPDATE order_lines SET line_no = line_no + 100"
            f" WHERE order_id = {r + 1} AND line_no < 100",
        ],
        [  # one transaction over two tables
            f"UPDATE customers SET score = {r} + 0.5, active = NOT coalesce(active, false)"
            f" WHERE id = {r + 20}",
            f"""INSERT INTO order_lines
            SELECT {r + 20}, 500 + g, 'tx-{r}', g, 1.00 FROM generate_series(1, 3) g""",
            f"UPDATE orders SET note = 'tx {r}' WHERE id = {r + 20}",
        ],
    ]
    if r == 4:  # columns added mid-stream; rows written later fill them
        txs.append(
            [
                "ALTER TABLE customers ADD COLUMN tier text",
                "ALTER TABLE orders ADD COLUMN discount numeric(6,2)",
            ]
        )
    if r >= 4:
        txs.append(
            [
                f"UPDATE customers SET tier = 'tier {r}' WHERE id % 9 = {r}",
                f"UPDATE orders SET discount = {r}.25 WHERE id % 11 = {r}",
            ]
        )
    if r == 7:  # keys deleted earlier come back with new values
        txs.append(
            [
                """INSERT INTO orders (id, customer_id, amount, note)
                SELECT g, 0, 1.5, 'back again' FROM generate_series(1, 1000) g
                 WHERE g NOT IN (SELECT id FROM orders) LIMIT 25"""
            ]
        )
    return txs


MARKERS = [
    f"INSERT INTO customers (id, name) VALUES ({MARKER}, 'marker')",
    f"INSERT INTO orders (id, note) VALUES ({MARKER}, 'marker')",
    f"INSERT INTO order_lines (order_id, line_no) VALUES ({MARKER}, 1)",
]


@dataclass(frozen=True)
class Capture:
    """What the connector produced: its topics, the source database, the ops it emitted."""

    source_url: str
    prefix: str
    topics: dict[str, str]  # table -> topic
    ops: Counter[str]  # Debezium op -> count; "tombstone" for null values


def _execute(engine: sa.Engine, transactions: list[list[str]]) -> None:
    for statements in transactions:
        with engine.begin() as conn:
            for statement in statements:
                conn.execute(sa.text(statement))


def _consume_until_markers(bootstrap: str, topics: dict[str, str], timeout: float) -> Counter[str]:
    """Read every topic from the start until each has its table's marker row; count ops."""
    consumer = Consumer(
        {
            "bootstrap.servers": bootstrap,
            "group.id": f"cdc-markers-{uuid.uuid4().hex}",
            "enable.auto.commit": False,
            "auto.offset.reset": "earliest",
            "topic.metadata.refresh.interval.ms": 1000,
        }
    )
    ops: Counter[str] = Counter()
    waiting = set(topics.values())
    deadline = time.monotonic() + timeout
    try:
        consumer.subscribe(list(topics.values()))
        while waiting:
            if time.monotonic() > deadline:
                raise AssertionError(
                    f"no marker row from Debezium within {timeout:.0f}s on {waiting}"
                )
            msg = consumer.poll(0.5)
            if msg is None or msg.error():
                continue
            if msg.value() is None:
                ops["tombstone"] += 1
                continue
            payload = json.loads(msg.value())["payload"]
            ops[payload["op"]] += 1
            key = json.loads(msg.key())["payload"]
            first_key = next(iter(key.values()))
            if payload["op"] == "c" and first_key == MARKER:
                waiting.discard(msg.topic())
    finally:
        consumer.close()
    return ops


@pytest.fixture(scope="module")
def capture(kafka_bootstrap: str, kafka_connect: str, cdc_postgresql_url: str) -> Iterator[Capture]:
    prefix = f"cdc{uuid.uuid4().hex[:10]}"
    topics = {t: f"{prefix}.public.{t}" for t in TABLES}
    with fresh_database(cdc_postgresql_url) as source_url:
        engine = sa.create_engine(source_url, poolclass=NullPool)
        try:
            _execute(engine, [[s for s in SCHEMA.split(";\n") if s.strip()]])
            _execute(engine, [[s for s in SEED.split(";\n") if s.strip()]])
            config = postgres_connector_config(
                source_url,
                topic_prefix=prefix,
                tables=[f"public.{t}" for t in TABLES],
            )
            with connector(kafka_connect, prefix, config):
                # The snapshot is the state when the slot was made; changes after it stream.
                _wait_for_slot(engine, config["slot.name"], timeout=120)
                for r in range(ROUNDS):
                    _execute(engine, round_statements(r))
                _execute(engine, [MARKERS])
                ops = _consume_until_markers(kafka_bootstrap, topics, timeout=180)
                yield Capture(source_url, prefix, topics, ops)
        finally:
            engine.dispose()
            _delete_topics(kafka_bootstrap, list(topics.values()))


def _wait_for_slot(engine: sa.Engine, slot: str, timeout: float) -> None:
    """Until Debezium created its replication slot: a task reported RUNNING may not have yet,
    and rows changed before it would land in the snapshot ('r') instead of the stream."""
    query = sa.text("SELECT count(*) FROM pg_replication_slots WHERE slot_name = :slot")
    deadline = time.monotonic() + timeout
    while True:
        with engine.connect() as conn:
            if conn.execute(query, {"slot": slot}).scalar():
                return
        if time.monotonic() > deadline:
            pytest.fail(f"Debezium made no replication slot {slot!r} in {timeout:.0f}s")
        time.sleep(0.2)


def _delete_topics(bootstrap: str, topics: list[str]) -> None:
    """The connector's topics go with the test (the worker made them; the broker may be shared)."""
    admin = AdminClient({"bootstrap.servers": bootstrap})
    for future in admin.delete_topics(topics, operation_timeout=30).values():
        with contextlib.suppress(KafkaException):  # never created: the connector failed early
            future.result(timeout=60)


def test_debezium_emitted_every_kind_of_change(capture: Capture) -> None:
    ops = capture.ops
    # The snapshot: every seeded row (and, were the slot made late, rows of the first rounds).
    assert ops["r"] >= 300 + 1000 + 1000, ops
    streamed = ops["c"] + ops["u"] + ops["d"]
    assert streamed >= 10_000, ops
    assert ops["d"] > 0 and ops["u"] > 0 and ops["tombstone"] == ops["d"], ops


# ---------------------------------------------------------------------------------------------
# Replicas


@pytest.fixture(params=["duckdb", "postgresql"])
def replica_target(
    request: pytest.FixtureRequest, tmp_path: Path, cdc_postgresql_url: str
) -> Iterator[Callable[[], str]]:
    """A factory of fresh, empty replica targets of one kind (the kill case needs a second)."""
    with contextlib.ExitStack() as stack:

        def make() -> str:
            if request.param == "duckdb":
                return f"duckdb:///{tmp_path / f'replica-{uuid.uuid4().hex[:8]}.duckdb'}"
            return stack.enter_context(fresh_database(cdc_postgresql_url))

        yield make


def write_pipeline(directory: Path, bootstrap: str, name: str, prefix: str, target: str) -> Path:
    """One pipeline over every topic of the connector: a table per source table."""
    document = {
        "kafka": {"bootstrap.servers": bootstrap},
        "pipelines": {
            name: {
                "topic_pattern": rf"{re.escape(prefix)}\.public\..*",
                "format": "json",
                "envelope": "debezium",
                "target": target,
                "table": "{topic_tail}",
                # Small batches: a run is many transactions, so kills land between and inside them.
                "batch_max_rows": 1000,
            }
        },
    }
    path = directory / f"{name}.yaml"
    path.write_text(yaml.safe_dump(document, sort_keys=False), encoding="utf-8")
    return path


def _columns(source_url: str, table: str) -> list[tuple[str, str]]:
    engine = sa.create_engine(source_url, poolclass=NullPool)
    try:
        with engine.connect() as conn:
            rows = conn.execute(
                sa.text(
                    "SELECT column_name, data_type FROM information_schema.columns"
                    " WHERE table_schema = 'public' AND table_name = :t ORDER BY ordinal_position"
                ),
                {"t": table},
            )
            return [(str(n), str(t)) for n, t in rows]
    finally:
        engine.dispose()


def _normalise(data_type: str, value: Any) -> Any:
    """One comparable form per source type, whatever driver or column type returned it."""
    if value is None:
        return None
    if data_type == "numeric":
        return Decimal(str(value)).normalize()  # 1.50 == 1.5; never through a float
    if data_type == "timestamp with time zone":
        if isinstance(value, str):
            value = datetime.fromisoformat(value)
        assert isinstance(value, datetime), f"{value!r} is not a timestamp"
        assert value.tzinfo is not None, f"{value!r} lost its time zone"
        return value.astimezone(UTC)
    if data_type in ("json", "jsonb"):
        # psycopg hands jsonb over parsed, the replica may hold text: both become one parse
        # with exact numbers (1.0 == 1.000000, as PostgreSQL's numeric JSON numbers compare).
        text = value if isinstance(value, str) else json.dumps(value)
        return json.loads(text, parse_float=Decimal)
    if data_type == "uuid":
        return uuid.UUID(str(value))
    if data_type in ("bigint", "integer"):
        return int(value)
    if data_type == "double precision":
        return float(value)
    if data_type == "boolean":
        assert isinstance(value, bool), f"{value!r} is not a boolean"
        return value
    return str(value)


def _rows(target: str, base_dir: Path, table: str, columns: list[tuple[str, str]]) -> dict:
    names = [n for n, _ in columns]
    t = sa.table(table, *(sa.column(n) for n in names))
    query = sa.select(*(t.c[n] for n in names))
    key_at = [names.index(k) for k in KEYS[table]]
    out: dict[tuple[Any, ...], tuple[Any, ...]] = {}
    for row in fetch(target, base_dir, query):
        values = tuple(_normalise(dt, v) for (_, dt), v in zip(columns, row, strict=True))
        key = tuple(values[i] for i in key_at)
        assert key not in out, f"{table}: key {key} twice"
        out[key] = values
    return out


def assert_replica_equals_source(source_url: str, target: str, base_dir: Path, when: str) -> None:
    for table in TABLES:
        columns = _columns(source_url, table)
        source = _rows(source_url, base_dir, table, columns)
        replica = _rows(target, base_dir, table, columns)
        missing = sorted(set(source) - set(replica))
        extra = sorted(set(replica) - set(source))
        differ = sorted(k for k in set(source) & set(replica) if source[k] != replica[k])
        if missing or extra or differ:
            names = [n for n, _ in columns]
            sample = [
                {n: (a, b) for n, a, b in zip(names, source[k], replica[k], strict=True) if a != b}
                for k in differ[:3]
            ]
            raise AssertionError(
                f"{when}: replica {table} differs from its source ({len(source)} rows):"
                f" {len(missing)} missing {missing[:5]}, {len(extra)} extra {extra[:5]},"
                f" {len(differ)} differ, e.g. {sample}"
            )


def _run(config: Path, name: str, *args: str) -> None:
    res = cli(config, *args, name, timeout=300)
    assert res.returncode == 0, f"kafka-etl {' '.join(args)} {name}: {res.stderr[-2000:]}"


@contextlib.contextmanager
def committed_position(
    bootstrap: str, group: str, topics: list[str]
) -> Iterator[Callable[[], int]]:
    """The sum of the group's committed offsets over the topics: a run's progress, readable
    while the run holds its DuckDB file (the runner commits the group after each batch)."""
    consumer = Consumer({"bootstrap.servers": bootstrap, "group.id": group})
    wanted = [TopicPartition(t, 0) for t in topics]
    last = [0]

    def position() -> int:
        with contextlib.suppress(KafkaException):
            found = consumer.committed(wanted, timeout=10)
            last[0] = sum(tp.offset for tp in found if tp.offset >= 0)
        return last[0]

    try:
        yield position
    finally:
        consumer.close()


def test_replica_equals_source(
    capture: Capture,
    replica_target: Callable[[], str],
    kafka_bootstrap: str,
    tmp_path: Path,
) -> None:
    source = capture.source_url
    # 1. One clean run.
    target = replica_target()
    config = write_pipeline(tmp_path, kafka_bootstrap, "cdc_once", capture.prefix, target)
    _run(config, "cdc_once", "run")
    assert_replica_equals_source(source, target, tmp_path, "after one run")

    # 3. A full replay on top of the finished replica: deleted rows must stay deleted.
    _run(config, "cdc_once", "reset", "--to", "earliest", "--yes")
    _run(config, "cdc_once", "run")
    assert_replica_equals_source(source, target, tmp_path, "after reset --to earliest and a run")

    # 2. Runs killed at random moments on a fresh replica, then a clean run.
    name = f"cdc_kill_{uuid.uuid4().hex[:6]}"
    killed_target = replica_target()
    config = write_pipeline(tmp_path, kafka_bootstrap, name, capture.prefix, killed_target)
    with committed_position(kafka_bootstrap, name, list(capture.topics.values())) as progress:
        tally = kill_loop(
            config,
            name,
            iterations=4,
            before_each=lambda _i: None,  # the backlog is the capture: many batches of 1,000
            check=lambda: None,  # a half-loaded replica is not the source; the end state is
            progress=progress,
            seed=15,
        )
    assert tally.killed >= 2, tally
    _run(config, name, "run")
    assert_replica_equals_source(source, killed_target, tmp_path, f"after SIGKILLs ({tally})")
