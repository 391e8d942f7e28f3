"""Sink-level guarantees on every real database, with hand-made batches (no broker needed):
the newest-message guard, order within a batch, replay and reset, schema evolution, and two
writers racing for the same checkpoint."""

from __future__ import annotations

import json
import threading
import time
import uuid
from collections.abc import Iterator, Sequence
from contextlib import contextmanager
from pathlib import Path
from typing import Any

import numpy as np
import pytest
import sqlalchemy as sa

from connector.batch import Batch, OffsetRange
from connector.reader import RawBatch
from kafka_etl.errors import CheckpointConflictError, SchemaConflictError, SinkUnavailableError
from sinks.base import Sink, TableSpec
from sinks.factory import open_sink, resolve_target
from tests.fixtures.databases import sinks
from tests.helpers import JsonDecoder

TOPIC = "orders"
T0 = 1_750_000_000_000  # ms


def batch(
    messages: Sequence[tuple[str | None, dict[str, Any] | None, int, int, int]],
) -> Batch:
    """Messages ``(key, value, partition, offset, timestamp ms)``; each partition's range runs
    from its first to its last offset + 1."""
    ranges: dict[int, OffsetRange] = {}
    for _, _, p, o, _ in messages:
        first = min(o, ranges[p].first) if p in ranges else o
        last = max(o + 1, ranges[p].next) if p in ranges else o + 1
        ranges[p] = OffsetRange(p, first, last)
    raw = RawBatch(
        topic=TOPIC,
        values=[None if v is None else json.dumps(v).encode() for _, v, _, _, _ in messages],
        keys=[None if k is None else k.encode() for k, _, _, _, _ in messages],
        partitions=np.array([m[2] for m in messages], np.int32),
        offsets=np.array([m[3] for m in messages], np.int64),
        timestamps=np.array([m[4] for m in messages], np.int64),
        ranges=ranges,
        nbytes=0,
    )
    return JsonDecoder().decode(raw)


@contextmanager
def sink(url: str, tmp_path: Path, **spec: Any) -> Iterator[Sink]:
    opened = open_sink(url, TableSpec(pipeline="p", topic=TOPIC, **spec), base_dir=tmp_path)
    try:
        yield opened
    finally:
        opened.close()


def rows(url: str, query: str) -> list[tuple[Any, ...]]:
    target = resolve_target(url, None)
    if target.get_backend_name() == "duckdb":
        import duckdb

        # Same configuration as the sink's own connection: DuckDB shares one instance per file.
        con = duckdb.connect(target.database or "")
        try:
            return [tuple(r) for r in con.execute(query).fetchall()]
        finally:
            con.close()
    engine = sa.create_engine(target, poolclass=sa.pool.NullPool)
    try:
        with engine.connect() as conn:
            return [tuple(r) for r in conn.execute(sa.text(query))]
    finally:
        engine.dispose()


UPSERT = {"table": "orders", "mode": "upsert", "key": ("id",), "delete_on_tombstone": True}


def test_an_older_message_never_overwrites_or_deletes_a_newer_row(
    sink_url: str, tmp_path: Path
) -> None:
    with sink(sink_url, tmp_path, **UPSERT) as s:
        s.write(
            batch(
                [
                    ("1", {"id": 1, "v": "new"}, 0, 11, T0 + 11),
                    ("2", {"id": 2, "v": "p0"}, 0, 10, T0 + 10),
                ]
            )
        )
        # Same partition, lower offset: ignored, whatever its timestamp.
        s.write(batch([("1", {"id": 1, "v": "old"}, 0, 5, T0 + 99)]), replay=True)
        # Other partition: the later timestamp wins.
        s.write(
            batch(
                [
                    ("1", {"id": 1, "v": "p1-older"}, 1, 0, T0 + 1),
                    ("2", {"id": 2, "v": "p1-newer"}, 1, 1, T0 + 20),
                ]
            ),
            replay=True,
        )
        assert rows(sink_url, "SELECT id, v, _partition FROM orders ORDER BY id") == [
            (1, "new", 0),
            (2, "p1-newer", 1),
        ]
        # A tombstone older than the row does not delete it; a newer one does.
        older = s.write(batch([("1", None, 0, 7, T0 + 7)]), replay=True)
        assert older.rows_deleted == 0
        newer = s.write(
            batch([("1", None, 0, 20, T0 + 21), ("2", None, 0, 21, T0 + 21)]), replay=True
        )
        assert newer.rows_deleted == 2
        assert rows(sink_url, "SELECT id FROM orders") == []


def test_within_a_batch_the_last_message_per_key_wins_tombstones_included(
    sink_url: str, tmp_path: Path
) -> None:
    with sink(sink_url, tmp_path, **UPSERT) as s:
        result = s.write(
            batch(
                [
                    ("1", {"id": 1, "v": "a"}, 0, 0, T0),
                    ("1", None, 0, 1, T0 + 1),
                    ("1", {"id": 1, "v": "b"}, 0, 2, T0 + 2),  # update, delete, update: b
                    ("2", {"id": 2, "v": "c"}, 0, 3, T0 + 3),
                    ("2", {"id": 2, "v": "d"}, 0, 4, T0 + 4),
                    ("2", None, 0, 5, T0 + 5),  # update, update, delete: gone
                    ("3", {"id": 3, "v": "late"}, 1, 0, T0 + 9),
                    ("3", {"id": 3, "v": "early"}, 2, 0, T0 + 8),  # other partitions: by time
                    (None, None, 0, 6, T0 + 6),  # a tombstone without a key: skipped
                ]
            )
        )
        assert (result.rows_written, result.tombstones_skipped) == (2, 1)
        assert rows(sink_url, "SELECT id, v FROM orders ORDER BY id") == [(1, "b"), (3, "late")]
        assert s.read_checkpoints() == {0: 7, 1: 1, 2: 1}


def test_upsert_replaces_the_whole_row_and_refuses_a_missing_key(
    sink_url: str, tmp_path: Path
) -> None:
    from kafka_etl.errors import RecordError

    with sink(sink_url, tmp_path, **UPSERT) as s:
        s.write(batch([("1", {"id": 1, "v": "a", "note": "x"}, 0, 0, T0)]))
        s.write(batch([("1", {"id": 1, "v": "b"}, 0, 1, T0 + 1)]))
        assert rows(sink_url, "SELECT id, v, note FROM orders") == [(1, "b", None)]
        with pytest.raises(RecordError, match=rf"{TOPIC}/0@3: key column 'id' is null"):
            s.write(batch([("2", {"id": 2, "v": "c"}, 0, 2, T0), ("9", {"v": "?"}, 0, 3, T0)]))
        assert s.read_checkpoints() == {0: 2}


def test_append_replay_rewrites_the_range_and_reset_deletes_from_the_offsets(
    sink_url: str, tmp_path: Path
) -> None:
    with sink(sink_url, tmp_path, table="log") as s:
        first = batch([(None, {"n": i}, 0, i, T0 + i) for i in range(5)])
        s.write(first)
        replayed = s.write(first, replay=True)
        assert (replayed.rows_deleted, replayed.rows_written) == (5, 5)
        assert s.row_count() == 5
        with pytest.raises(CheckpointConflictError, match="checkpoint moved to 5"):
            s.write(first)
        assert s.reset({0: 2}) == 3
        assert s.read_checkpoints() == {0: 2}
        assert rows(sink_url, "SELECT _offset FROM log ORDER BY 1") == [(0,), (1,)]
        s.write(batch([(None, {"n": i}, 0, i, T0 + i) for i in range(2, 4)]))
        assert rows(sink_url, "SELECT _offset FROM log ORDER BY 1") == [(i,) for i in range(4)]


def test_new_fields_and_nested_values_and_a_conflict_that_commits_nothing(
    sink_url: str, tmp_path: Path
) -> None:
    with sink(sink_url, tmp_path, table="evolving") as s:
        s.write(batch([(None, {"a": 1, "tags": ["x"], "meta": {"k": "v"}}, 0, 0, T0)]))
        added = s.write(batch([(None, {"a": 2, "b": 2.5, "meta": {"k": "w"}}, 0, 1, T0)]))
        assert added.columns_added == ("b",)
        schema = s.table_schema()
        assert schema is not None and {"a", "b", "tags", "meta"} <= set(schema.names)
        with pytest.raises(SchemaConflictError, match="field 'a' arrived as string"):
            s.write(batch([(None, {"a": "text"}, 0, 2, T0)]))
        assert s.read_checkpoints() == {0: 2}
        assert s.row_count() == 2
    stored = rows(sink_url, "SELECT a, b FROM evolving ORDER BY a")
    assert stored == [(1, None), (2, 2.5)]


def test_a_failed_batch_leaves_no_rows_and_no_columns_where_ddl_is_transactional(
    sink_url: str, tmp_path: Path
) -> None:
    with sink(sink_url, tmp_path, table="t") as s:
        s.write(batch([(None, {"a": 1}, 0, 0, T0)]))
        # A batch that adds a column but starts at a checkpoint it does not own.
        with pytest.raises(CheckpointConflictError):
            s.write(batch([(None, {"a": 2, "late": True}, 0, 5, T0)]))
        assert s.row_count() == 1
        schema = s.table_schema()
        columns = set(schema.names) if schema is not None else set()
    if sink_url.startswith("mysql"):
        # MariaDB commits DDL implicitly: the new nullable column stays, empty (documented).
        assert "late" in columns
        assert rows(sink_url, "SELECT count(*) FROM t WHERE late IS NOT NULL") == [(0,)]
    else:
        assert "late" not in columns


@sinks("postgresql", "mariadb")
@pytest.mark.parametrize(
    "holder_commits", [True, False], ids=["holder-commits", "holder-rolls-back"]
)
def test_a_writer_waiting_on_the_checkpoint_row_commits_only_if_the_holder_did_not(
    holder_commits: bool, sink_url: str, tmp_path: Path
) -> None:
    """The other writer's transaction is held open by hand, mid-way, holding the row lock."""
    with sink(sink_url, tmp_path, table="t") as s:
        s.write(batch([(None, {"a": i}, p, 0, T0) for i, p in enumerate((0, 1))]))
        engine = sa.create_engine(resolve_target(sink_url, None), poolclass=sa.pool.NullPool)
        holder = engine.connect()
        outcome: list[BaseException | None] = []
        try:
            tx = holder.begin()
            checkpoints = _checkpoints()
            holder.execute(
                sa.update(checkpoints)
                .where(
                    checkpoints.c.pipeline == "p",
                    checkpoints.c.topic == TOPIC,
                    checkpoints.c.partition == 0,
                )
                .values(next_offset=9)
            )

            def contender() -> None:
                try:
                    s.write(batch([(None, {"a": 5}, 0, 1, T0), (None, {"a": 6}, 1, 1, T0)]))
                    outcome.append(None)
                except BaseException as exc:
                    outcome.append(exc)

            thread = threading.Thread(target=contender)
            thread.start()
            time.sleep(1.0)
            assert thread.is_alive(), f"the contender did not wait for the row lock: {outcome}"
            if holder_commits:
                tx.commit()
            else:
                tx.rollback()
            thread.join(timeout=60)
        finally:
            holder.close()
            engine.dispose()
        if holder_commits:
            assert isinstance(outcome[0], CheckpointConflictError), outcome
            assert s.read_checkpoints() == {0: 9, 1: 1}
            assert s.row_count() == 2
        else:
            assert outcome == [None]
            assert s.read_checkpoints() == {0: 2, 1: 2}
            assert s.row_count() == 4


@sinks("postgresql", "mariadb")
def test_two_first_writers_of_a_new_partition_cannot_both_commit(
    sink_url: str, tmp_path: Path
) -> None:
    with sink(sink_url, tmp_path, table="t") as s:
        s.write(batch([(None, {"a": 0}, 0, 0, T0)]))
        engine = sa.create_engine(resolve_target(sink_url, None), poolclass=sa.pool.NullPool)
        holder = engine.connect()
        outcome: list[BaseException | None] = []
        try:
            tx = holder.begin()
            holder.execute(
                sa.insert(_checkpoints()).values(
                    pipeline="p",
                    topic=TOPIC,
                    table_name="t",
                    partition=3,
                    next_offset=4,
                    updated_at=sa.func.now(),
                )
            )

            def contender() -> None:
                try:
                    s.write(batch([(None, {"a": 1}, 3, 0, T0)]))
                    outcome.append(None)
                except BaseException as exc:
                    outcome.append(exc)

            thread = threading.Thread(target=contender)
            thread.start()
            time.sleep(1.0)
            assert thread.is_alive(), f"the contender did not wait for the key lock: {outcome}"
            tx.commit()
            thread.join(timeout=60)
        finally:
            holder.close()
            engine.dispose()
        # A deadlock report (MariaDB may pick this writer as the victim) also commits nothing.
        assert outcome and outcome[0] is not None, "both writers committed partition 3"
        assert isinstance(outcome[0], CheckpointConflictError | SinkUnavailableError), outcome
        assert s.read_checkpoints() == {0: 1, 3: 4}
        assert s.row_count() == 1


def _checkpoints() -> sa.TableClause:
    names = ("pipeline", "topic", "table_name", "partition", "next_offset", "updated_at")
    return sa.table("_kafka_etl_checkpoints", *(sa.column(n) for n in names))


def test_a_schema_holds_the_table_and_its_checkpoints(sink_url: str, tmp_path: Path) -> None:
    from kafka_etl.errors import ConfigError

    name = f"etl_{uuid.uuid4().hex[:8]}"
    if sink_url.startswith("sqlite"):
        with pytest.raises(ConfigError, match="'schema' is not supported for sqlite"):
            open_sink(sink_url, TableSpec("p", TOPIC, "t", db_schema=name))
        return
    try:
        with sink(sink_url, tmp_path, table="t", db_schema=name) as s:
            s.write(batch([(None, {"a": 1}, 0, 0, T0), (None, {"a": 2}, 0, 1, T0)]))
            assert s.read_checkpoints() == {0: 2}
        assert rows(sink_url, f"SELECT count(*) FROM {name}.t") == [(2,)]
        query = f"SELECT next_offset FROM {name}._kafka_etl_checkpoints"
        if sink_url.startswith("duckdb"):  # DuckDB keeps its checkpoints in the main schema
            query = "SELECT next_offset FROM _kafka_etl_checkpoints"
        assert rows(sink_url, query) == [(2,)]
    finally:
        if sink_url.startswith("mysql"):  # a MariaDB schema is a database of its own
            _drop_database(sink_url, name)


def _drop_database(url: str, name: str) -> None:
    engine = sa.create_engine(resolve_target(url, None), poolclass=sa.pool.NullPool)
    try:
        with engine.begin() as conn:
            conn.execute(sa.schema.DropSchema(name, if_exists=True))
    finally:
        engine.dispose()


def _open_transactions(url: str) -> int:
    """Transactions open in the sink's database, other than this query's own."""
    (count,) = rows(
        url,
        "SELECT count(*) FROM pg_stat_activity WHERE datname = current_database()"
        " AND xact_start IS NOT NULL AND pid <> pg_backend_pid()",
    )[0]
    return int(count)


@sinks("postgresql")
@pytest.mark.parametrize(
    "first_commits", [True, False], ids=["first-commits", "first-loses-its-checkpoint"]
)
def test_overlapping_writes_commit_in_turn_and_fail_after_a_failed_predecessor(
    first_commits: bool, sink_url: str, tmp_path: Path
) -> None:
    """Two writes in flight at once, as the runner hands them over on PostgreSQL: the first is
    held at its checkpoint by another transaction while the second has already sent its rows."""
    with sink(sink_url, tmp_path, table="t") as s:
        s.write(batch([(None, {"a": 0}, 0, 0, T0), (None, {"a": 1}, 1, 0, T0)]))
        engine = sa.create_engine(resolve_target(sink_url, None), poolclass=sa.pool.NullPool)
        holder = engine.connect()
        writes = {
            1: batch([(None, {"a": 2}, 0, 1, T0), (None, {"a": 3}, 1, 1, T0)]),
            2: batch([(None, {"a": 4}, 0, 2, T0), (None, {"a": 5}, 1, 2, T0)]),
        }
        try:
            tx = holder.begin()
            checkpoints = _checkpoints()
            holder.execute(
                sa.update(checkpoints)
                .where(checkpoints.c.partition == 0)
                .values(next_offset=checkpoints.c.next_offset)
            )
            with s.writes() as writer:
                assert writer.depth == 2
                futures = {n: writer.submit(rows_) for n, rows_ in writes.items()}
                deadline = time.monotonic() + 30
                while _open_transactions(sink_url) < 3 and time.monotonic() < deadline:
                    time.sleep(0.05)
                try:
                    # The holder's, the first write's (waiting on the row) and the second's
                    # (rows sent, waiting for its turn to move the checkpoint).
                    assert _open_transactions(sink_url) == 3
                    assert not any(f.done() for f in futures.values())
                except BaseException:
                    tx.rollback()  # or closing the writer would wait for them forever
                    raise
                if first_commits:
                    tx.rollback()
                else:
                    holder.execute(
                        sa.update(checkpoints)
                        .where(checkpoints.c.partition == 0)
                        .values(next_offset=7)
                    )
                    tx.commit()
                outcomes = {n: f.exception(timeout=60) for n, f in futures.items()}
        finally:
            holder.close()
            engine.dispose()
        if first_commits:
            assert outcomes == {1: None, 2: None}
            assert s.read_checkpoints() == {0: 3, 1: 3}
            assert s.row_count() == 6
        else:
            assert isinstance(outcomes[1], CheckpointConflictError), outcomes
            assert isinstance(outcomes[2], CheckpointConflictError), outcomes
            assert s.read_checkpoints() == {0: 7, 1: 1}
            assert s.row_count() == 2


@sinks("postgresql")
def test_a_write_in_flight_after_one_that_adds_a_column_plans_against_the_new_column(
    sink_url: str, tmp_path: Path
) -> None:
    with sink(sink_url, tmp_path, table="t") as s:
        s.write(batch([(None, {"a": 0}, 0, 0, T0)]))
        with s.writes() as writer:
            futures = [
                writer.submit(batch([(None, {"a": 1, "b": 0}, 0, 1, T0)])),
                writer.submit(batch([(None, {"a": 2, "b": 1}, 0, 2, T0)])),
            ]
            outcomes = [f.exception(timeout=60) for f in futures]
        assert outcomes == [None, None]
        assert s.read_checkpoints() == {0: 3}
        assert rows(sink_url, "SELECT a, b FROM t ORDER BY _offset") == [(0, None), (1, 0), (2, 1)]
        assert [(c.column, c.change) for c in s.schema_history() if c.column == "b"] == [
            ("b", "added")
        ]


def test_a_writer_that_finds_the_table_created_meanwhile_loads_into_it(
    sink_url: str, tmp_path: Path
) -> None:
    """Two first runs (here, two sinks opened before the table existed) both mean to create
    it: the second finds the first's table and loads into it instead of failing."""
    with sink(sink_url, tmp_path, table="t") as first, sink(sink_url, tmp_path, table="t") as late:
        assert first.table_schema() is None and late.table_schema() is None
        first.write(batch([(None, {"a": 0}, 0, 0, T0)]))
        late.write(batch([(None, {"a": 1, "b": "x"}, 1, 0, T0)]))
        assert late.read_checkpoints() == {0: 1, 1: 1}
        assert rows(sink_url, "SELECT a, b FROM t ORDER BY a") == [(0, None), (1, "x")]


def test_runs_opening_a_new_database_at_once_all_start(sink_url: str, tmp_path: Path) -> None:
    """Several first runs open the sink at the same moment: each finds or creates the
    checkpoint and schema-history tables, and none fails on another's CREATE."""
    opened: list[Sink] = []
    failures: list[BaseException] = []
    start = threading.Barrier(4)

    def open_one() -> None:
        start.wait()
        try:
            opened.append(open_sink(sink_url, TableSpec("p", TOPIC, "t"), base_dir=tmp_path))
        except BaseException as exc:  # reported below, with the others
            failures.append(exc)

    threads = [threading.Thread(target=open_one) for _ in range(4)]
    for t in threads:
        t.start()
    for t in threads:
        t.join(timeout=120)
    for s in opened:
        s.close()
    assert failures == []
    assert len(opened) == 4
