"""A topic of Debezium change events (JSON converter with schemas) kept as a replica in every
database: snapshot, inserts, updates, deletes with their tombstones, a primary-key change, a
column added to and one dropped from the source table; the final table row for row."""

from __future__ import annotations

import datetime as dt
from decimal import Decimal
from pathlib import Path

from pipelines.runner import run_pipeline
from tests.fixtures.databases import sinks
from tests.fixtures.kafka import Produce, TopicFactory
from tests.formats import debezium_events as ev
from tests.helpers import cli, fetch, project_for, write_pipelines


def _events() -> tuple[list[bytes | None], list[bytes | None]]:
    """(values, keys) of one source table's life, in commit order."""
    out: list[tuple[bytes | None, bytes]] = []
    lsn = iter(range(100, 10_000))

    def change(op: str, before: int | None, after: dict | None, key: int, **kw: object) -> None:
        p = ev.payload(op, ev.row(before) if before is not None else None, after, lsn=next(lsn))
        out.append((ev.json_value(p, **kw), ev.json_key(key)))  # type: ignore[arg-type]

    for i in (1, 2, 3):
        change("r", None, ev.row(i), i)
    change("c", None, ev.row(4), 4)
    change("u", 1, ev.row(1, name="renamed"), 1)
    change("d", 2, None, 2)
    out.append((None, ev.json_key(2)))  # Debezium's tombstone after the delete
    # The primary key of row 3 becomes 30: a delete of the old key, a create of the new one.
    change("d", 3, None, 3)
    out.append((None, ev.json_key(3)))
    change("c", None, ev.row(30), 30)
    # ALTER TABLE customers ADD COLUMN phone
    change("u", 4, {**ev.row(4), "phone": "+49 30 1234"}, 4, extra=True)
    # ALTER TABLE customers DROP COLUMN email
    change("c", None, ev.row(5), 5, extra=True, drop=("email",))
    change("u", 1, ev.row(1, name="renamed again"), 1, extra=True, drop=("email",))
    return [v for v, _ in out], [k for _, k in out]


def test_debezium_events_keep_a_replica(
    sink_url: str,
    tmp_path: Path,
    kafka_bootstrap: str,
    topic_factory: TopicFactory,
    produce: Produce,
) -> None:
    topic = topic_factory(2)
    values, keys = _events()
    produce(topic, values, keys)
    body = {"topic": topic, "target": sink_url, "table": "customers", "envelope": "debezium"}
    project = project_for(write_pipelines(tmp_path, kafka_bootstrap, {"customers": body}))

    result = run_pipeline(project, "customers")
    assert (result.tombstones, result.table_rows) == (2, 4)
    rows = fetch(
        sink_url,
        tmp_path,
        "SELECT id, name, email, phone, _op, _key, _source_lsn FROM customers ORDER BY id",
    )
    assert [tuple(r) for r in rows] == [
        (1, "renamed again", None, None, "u", '{"id":1}', 110),
        (4, "customer 4", "c4@example.com", "+49 30 1234", "u", '{"id":4}', 108),
        (5, "customer 5", None, None, "c", '{"id":5}', 109),
        (30, "customer 30", None, None, "c", '{"id":30}', 107),
    ]
    assert run_pipeline(project, "customers").rows == 0

    if sink_url.startswith(("duckdb", "postgresql")):  # types the other two store as text
        typed = fetch(
            sink_url, tmp_path, "SELECT born, balance, ratio FROM customers WHERE id = 30"
        )
        assert tuple(typed[0]) == (dt.date(1980, 1, 31), Decimal("130.30"), "-0.000001")


def test_bad_events_go_to_the_dead_letter_table(
    sink_url: str,
    tmp_path: Path,
    kafka_bootstrap: str,
    topic_factory: TopicFactory,
    produce: Produce,
) -> None:
    topic = topic_factory(1)
    good = ev.json_value(ev.payload("c", None, ev.row(1)))
    message = ev.json_value({**ev.payload("c", None, None), "op": "m"})
    produce(topic, [good, message, b'{"op": "c"}'], [ev.json_key(1)] * 3)
    body = {
        "topic": topic,
        "target": sink_url,
        "table": "customers",
        "envelope": "debezium",
        "on_error": "dlq",
    }
    project = project_for(write_pipelines(tmp_path, kafka_bootstrap, {"customers": body}))
    result = run_pipeline(project, "customers")
    assert (result.rows, result.dead_lettered) == (1, 2)
    dead = fetch(
        sink_url, tmp_path, "SELECT _offset, error_class FROM customers__dlq ORDER BY _offset"
    )
    assert [tuple(r) for r in dead] == [(1, "unsupported_op"), (2, "not_debezium")]


@sinks("duckdb")
def test_a_truncate_stops_the_run_in_one_line(
    sink_url: str,
    tmp_path: Path,
    kafka_bootstrap: str,
    topic_factory: TopicFactory,
    produce: Produce,
) -> None:
    topic = topic_factory(1)
    truncate = ev.json_value({**ev.payload("c", None, None), "op": "t"})
    produce(
        topic, [ev.json_value(ev.payload("c", None, ev.row(1))), truncate], [ev.json_key(1), None]
    )
    body = {
        "topic": topic,
        "target": sink_url,
        "table": "c",
        "envelope": "debezium",
        "on_error": "dlq",
    }
    config = write_pipelines(tmp_path, kafka_bootstrap, {"cust": body})
    done = cli(config, "run", "cust")
    assert done.returncode == 1
    assert done.stderr.strip().splitlines() == [
        f"kafka-etl: error: {topic}/0@1: op 't' (the source table was truncated): kafka-etl does"
        " not truncate a replica; truncate the table, then move past this event with"
        " `kafka-etl reset cust --partition 0 --to-offset 2`, or skip truncates at the source"
        " (Debezium's skipped.operations=t)"
    ]
