"""The upsert rules shared by every sink (sinks/changes.py) and the SQL guard built from them."""

from __future__ import annotations

import itertools
import random
from collections.abc import Sequence
from typing import Any

import pyarrow as pa
import pytest
import sqlalchemy as sa
from sqlalchemy.dialects import mysql, postgresql, sqlite

from connector.batch import Batch, OffsetRange
from kafka_etl.errors import RecordError
from sinks.base import TableSpec
from sinks.capabilities import capabilities
from sinks.changes import reduce_batch
from sinks.sql import statements

SPEC = TableSpec("p", "t", "t", mode="upsert", key=("id",), delete_on_tombstone=True)


def meta(rows: Sequence[tuple[str | None, int, int, int]]) -> dict[str, pa.Array]:
    """``(key, partition, offset, timestamp ms)`` per message."""
    return {
        "_topic": pa.array(["t"] * len(rows)),
        "_partition": pa.array([r[1] for r in rows], pa.int32()),
        "_offset": pa.array([r[2] for r in rows], pa.int64()),
        "_timestamp": pa.array([r[3] for r in rows], pa.int64()).cast(pa.timestamp("ms", "UTC")),
        "_key": pa.array([r[0] for r in rows], pa.string()),
    }


def make_batch(
    rows: Sequence[tuple[Any, str | None, int, int, int]],
    tombstones: Sequence[tuple[str | None, int, int, int]] = (),
) -> Batch:
    values = {"id": pa.array([r[0] for r in rows], pa.int64())}
    table = pa.table({**values, **meta([r[1:] for r in rows])})
    dead = pa.table(meta(list(tombstones))) if tombstones else None
    return Batch(topic="t", rows=table, ranges={0: OffsetRange(0, 0, 0)}, tombstones=dead)


def winners(batch: Batch, spec: TableSpec = SPEC) -> list[tuple[int, int, int]]:
    changes = reduce_batch(batch, batch.rows, spec)
    up = changes.upserts
    return sorted(
        zip(
            up.column("id").to_pylist(),
            up.column("_partition").to_pylist(),
            up.column("_offset").to_pylist(),
            strict=True,
        )
    )


def test_the_highest_offset_of_a_partition_wins_whatever_the_timestamps() -> None:
    b = make_batch([(1, "1", 0, 5, 900), (1, "1", 0, 7, 100), (1, "1", 0, 6, 999)])
    assert winners(b) == [(1, 0, 7)]


def test_across_partitions_the_latest_timestamp_wins() -> None:
    b = make_batch([(1, "a", 0, 9, 100), (1, "b", 1, 2, 300), (1, "c", 2, 50, 200)])
    assert winners(b) == [(1, 1, 2)]


def test_a_later_tombstone_for_the_kafka_key_cancels_earlier_rows_only() -> None:
    rows = [(1, "k1", 0, 1, 1), (1, "k1", 0, 3, 3), (2, "k2", 0, 2, 2)]
    b = make_batch(rows, tombstones=[("k1", 0, 2, 2), ("k2", 0, 4, 4), (None, 0, 5, 5)])
    changes = reduce_batch(b, b.rows, SPEC)
    assert winners(b) == [(1, 0, 3)]  # update, tombstone, update: the last update
    assert sorted(changes.deletes.column("_key").to_pylist()) == ["k1", "k2"]
    assert changes.skipped == 1  # no Kafka key: nothing to match


def test_without_delete_on_tombstone_every_tombstone_is_skipped() -> None:
    spec = TableSpec("p", "t", "t", mode="upsert", key=("id",))
    b = make_batch([(1, "k1", 0, 1, 1)], tombstones=[("k1", 0, 2, 2)])
    changes = reduce_batch(b, b.rows, spec)
    assert (changes.upserts.num_rows, changes.deletes.num_rows, changes.skipped) == (1, 0, 1)


def test_a_row_without_its_key_is_a_record_error_naming_the_message() -> None:
    b = make_batch([(1, "k", 0, 1, 1), (None, "k", 0, 2, 2)])
    with pytest.raises(RecordError, match=r"t/0@2: key column 'id' is null"):
        reduce_batch(b, b.rows, SPEC)
    missing = TableSpec("p", "t", "t", mode="upsert", key=("nope",))
    with pytest.raises(RecordError, match="key column 'nope' is missing"):
        reduce_batch(b, b.rows, missing)


def test_the_batch_reduction_equals_applying_messages_one_by_one() -> None:
    rng = random.Random(3)
    for _ in range(50):
        rows, dead = [], []
        for offset in range(1, rng.randrange(2, 41)):
            key = rng.randrange(5)
            if rng.random() < 0.3:
                dead.append((str(key), 0, offset, offset))
            else:
                rows.append((key, str(key), 0, offset, offset))
        state: dict[int, int] = {}
        for event in sorted(
            [("row", r[0], r[3]) for r in rows] + [("dead", int(d[0]), d[2]) for d in dead],
            key=lambda e: e[2],
        ):
            if event[0] == "row":
                state[event[1]] = event[2]
            else:
                state.pop(event[1], None)
        b = make_batch(rows, dead)
        survivors = {i: o for i, _, o in winners(b)}
        assert survivors == state


# -- the SQL guard ----------------------------------------------------------------------------

ORDER = statements.ORDER_COLUMNS


def guard(stored: dict[str, Any], incoming: dict[str, Any]) -> bool:
    same = stored["_topic"] == incoming["_topic"] and stored["_partition"] == incoming["_partition"]
    if same:
        return bool(stored["_offset"] <= incoming["_offset"])
    return bool(stored["_timestamp"] < incoming["_timestamp"])


def test_mysql_assignment_order_keeps_the_guard_true_through_its_own_assignments() -> None:
    """ON DUPLICATE KEY UPDATE sees columns already assigned: simulate it for every case."""
    table = sa.Table(
        "t",
        sa.MetaData(),
        sa.Column("id", sa.Integer, primary_key=True),
        sa.Column("v", sa.Text),
        *(sa.Column(n, sa.Text) for n in ORDER),
        sa.Column("_key", sa.Text),
    )
    binds: dict[str, Any] = {c.name: sa.bindparam(c.name) for c in table.columns}
    compiled = str(
        statements.upsert_values(table, binds, ("id",), capabilities("mysql")).compile(
            dialect=mysql.dialect()
        )
    )
    update = compiled.split("ON DUPLICATE KEY UPDATE ")[1]
    order = ["v", "_key", "_offset", "_partition", "_topic", "_timestamp"]
    positions = [update.index(f"{n} = CASE") for n in order]
    assert positions == sorted(positions), update

    values = [0, 1, 2]
    for topic_s, topic_i, part_s, part_i, off_s, off_i, ts_s, ts_i in itertools.product(
        ["a", "b"], ["a"], values, [1], values, [1], values, [1]
    ):
        stored = {"_topic": topic_s, "_partition": part_s, "_offset": off_s, "_timestamp": ts_s}
        incoming = {"_topic": topic_i, "_partition": part_i, "_offset": off_i, "_timestamp": ts_i}
        row = {**stored, "v": "old", "_key": "k0"}
        new = {**incoming, "v": "new", "_key": "k1"}
        expected = new if guard(stored, incoming) else row
        for column in order:  # MySQL: left to right, each seeing the previous assignments
            if guard(row, incoming):
                row = {**row, column: new[column]}
        assert row == expected, (stored, incoming)


@pytest.mark.parametrize("dialect", [postgresql.dialect(), sqlite.dialect()], ids=lambda d: d.name)
def test_on_conflict_updates_only_where_the_message_is_newer(dialect: Any) -> None:
    table = sa.Table(
        "t",
        sa.MetaData(),
        sa.Column("id", sa.Integer, primary_key=True),
        sa.Column("v", sa.Text),
        sa.Column("gone", sa.Text),
        *(sa.Column(n, sa.Text) for n in ORDER),
    )
    binds: dict[str, Any] = {n: sa.bindparam(n) for n in ("id", "v", *ORDER)}
    sql = str(
        statements.upsert_values(table, binds, ("id",), capabilities(dialect)).compile(
            dialect=dialect
        )
    )
    assert "ON CONFLICT (id) DO UPDATE SET" in sql
    assert "gone = NULL" in sql  # the message is the whole new row
    assert "WHERE t._topic = excluded._topic AND t._partition = excluded._partition" in sql
