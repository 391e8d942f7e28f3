"""A sink for any SQLAlchemy URL: rows and checkpoint in one transaction per batch.

Per batch, in one transaction: the checkpoint compare-and-set (first, so a concurrent writer of
the same pipeline waits on the row lock and then fails before doing any work), the table's
creation or new columns, then the rows (append) or the tombstone deletes and the guarded upsert.

Schema changes and transactions: PostgreSQL and SQLite run DDL inside the batch's transaction,
so a failed batch leaves no trace. MySQL/MariaDB commit DDL implicitly, so there the table is
created, or the new nullable columns added, in a step of their own just before the batch's
transaction: if the batch then fails, the table keeps an empty new column, which is harmless
(the next run fills it) and never holds rows without their checkpoint. Widening a column works
the same way (PostgreSQL ``ALTER COLUMN ... TYPE``, MariaDB ``MODIFY COLUMN`` before the batch's
transaction, SQLite a table rebuild inside it): a wider column that the batch then did not fill
is harmless too. Every change is recorded in ``_kafka_etl_schema_history`` by the same
connection and transaction that applied it.
"""

from __future__ import annotations

import contextlib
from collections.abc import Iterator
from contextlib import contextmanager
from datetime import UTC, datetime
from typing import Any

import pyarrow as pa
import sqlalchemy as sa
from sqlalchemy import event
from sqlalchemy.engine import URL, Connection, Engine
from sqlalchemy.sql import Select

from connector.batch import Batch
from kafka_etl.errors import (
    CheckpointConflictError,
    ConfigError,
    TerminalError,
    classify,
    raced,
    redact,
)
from kafka_etl.extras import extra_for, missing_extra_message
from sinks.base import (
    ClosesOnExit,
    SchemaChange,
    TableAppeared,
    TableSpec,
    WriteResult,
    describe_ranges,
    dropped_table_message,
)
from sinks.capabilities import capabilities
from sinks.changes import Changes, reduce_batch
from sinks.history import Entry, SchemaHistory, history_table
from sinks.inflight import InFlight, WriteTurn
from sinks.schema import SchemaPlan, plan_schema
from sinks.sql import tables
from sinks.sql.arrow import JsonText
from sinks.sql.checkpoints import Checkpoints
from sinks.sql.dlq import DeadLetters, delete_offsets
from sinks.sql.load import CopyLoader, Loader
from sinks.sql.types import JSON_TYPE


class SqlSink(ClosesOnExit):
    """Rows and checkpoints of one pipeline in a database reached through SQLAlchemy."""

    def __init__(
        self,
        url: URL,
        spec: TableSpec,
        *,
        fast_path: bool = True,
        lock_timeout: float = 60.0,
    ) -> None:
        """``fast_path=False`` writes with executemany on PostgreSQL too (for comparison)."""
        self.spec = spec
        self.where = redact(url.render_as_string(hide_password=False))
        self._engine = make_engine(url, lock_timeout)
        self._json = JsonText()
        self.max_in_flight = 1
        # Partitions whose checkpoint row is committed: a write that would insert one is not
        # overlapped (its successor could not compare against a row it cannot see yet).
        self._known_partitions: set[int] = set()
        try:
            # The dialect learns the server (MariaDB or MySQL, name limits) on first connect.
            self._engine.connect().close()
            dialect = self._engine.dialect
            caps = capabilities(dialect)
            tables.check_spec(spec, dialect)
            if spec.mode == "upsert" and caps.upsert is None:
                msg = f"pipeline {spec.pipeline!r}: mode 'upsert' is not supported on {caps.name}"
                raise ConfigError(msg)
            copy = fast_path and caps.copy
            self._loader = CopyLoader(dialect) if copy else Loader(dialect)
            self._transactional_ddl = caps.transactional_ddl
            # E.g. PostgreSQL runs two append batches at once, on two connections: while one
            # server process works through batch N, another takes batch N+1 (see _overlaps).
            self.max_in_flight = caps.max_in_flight
            self._dlq = DeadLetters(spec, dialect)
            self._checkpoints = Checkpoints(tables.checkpoint_table(spec, dialect), spec)
            self._history = SchemaHistory(history_table(spec.db_schema, dialect), spec)
            with self._engine.begin() as conn, tables.creating(conn, "bookkeeping tables"):
                tables.ensure_schema(conn, spec)
                self._checkpoints.ensure(conn)
                self._history.table.create(conn, checkfirst=True)
            self._table, self._schema = self._reflect()
        except BaseException as exc:
            with contextlib.suppress(Exception):  # the failure to open is the one to report
                self.close()
            if isinstance(exc, Exception):
                raise classify(exc, self.where) from exc
            raise

    @property
    def fast_path(self) -> bool:
        return isinstance(self._loader, CopyLoader)

    # -- reading ---------------------------------------------------------------------------
    def read_checkpoints(self, *, for_reset: bool = False) -> dict[int, int]:
        try:
            with self._engine.connect() as conn:
                checkpoints = self._checkpoints.read(conn)
                if checkpoints and self._table is None:
                    self._table, self._schema = self._reflect(conn)
                dropped = bool(checkpoints) and self._table is None
                dropped = dropped and self._history.created(conn)
        except Exception as exc:
            raise classify(exc, self.where) from exc
        if dropped and not for_reset:
            raise TerminalError(dropped_table_message(self.spec, self.where, checkpoints))
        self._known_partitions.update(checkpoints)
        return checkpoints

    def table_schema(self) -> pa.Schema | None:
        return self._schema

    def schema_history(self) -> list[SchemaChange]:
        try:
            with self._engine.connect() as conn:
                return self._history.read(conn)
        except Exception as exc:
            raise classify(exc, self.where) from exc

    def row_count(self) -> int:
        if self._table is None:
            return 0
        try:
            with self._engine.connect() as conn:
                count = conn.execute(sa.select(sa.func.count()).select_from(self._table))
                return int(count.scalar_one())
        except Exception as exc:
            raise classify(exc, self.where) from exc

    def column_types(self) -> dict[str, str]:
        if self._table is None:
            return {}
        dialect = self._engine.dialect
        return {c.name: c.type.compile(dialect) for c in self._table.columns}

    def last_commit(self) -> datetime | None:
        c = self._checkpoints.table.c
        latest = self.select(
            sa.select(sa.func.max(c.updated_at)).where(
                c.pipeline == self.spec.pipeline,
                c.topic == self.spec.topic,
                c.table_name == self.spec.display_name,
            )
        )[0][0]
        if isinstance(latest, str):  # SQLite keeps text
            latest = datetime.fromisoformat(latest)
        if not isinstance(latest, datetime):
            return None
        # MariaDB and SQLite return the naive UTC value the sink wrote.
        return latest if latest.tzinfo is not None else latest.replace(tzinfo=UTC)

    def select(self, statement: Select[Any]) -> list[tuple[Any, ...]]:
        try:
            with self._engine.connect() as conn:
                return [tuple(row) for row in conn.execute(statement)]
        except Exception as exc:
            raise classify(exc, self.where) from exc

    def _reflect(self, conn: Connection | None = None) -> tuple[sa.Table | None, pa.Schema | None]:
        if conn is None:
            with self._engine.connect() as own:
                return self._reflect(own)
        table = tables.reflect(conn, self.spec)
        if table is None:
            return None, None
        key = self.spec.key
        if self.spec.mode == "upsert" and not tables.has_unique_key(conn, table, key):
            msg = (
                f"pipeline {self.spec.pipeline!r}: table {self.spec.display_name} has no primary"
                f" key or unique index on {', '.join(key)}, which mode 'upsert' needs (it was"
                " probably created in append mode; load into a new table)"
            )
            raise ConfigError(msg)
        return table, tables.arrow_schema(conn, table)

    # -- writing ---------------------------------------------------------------------------
    def write(self, batch: Batch, *, replay: bool = False) -> WriteResult:
        return self._write_in_turn(batch, replay, None)

    def writes(self) -> InFlight:
        return InFlight(self._write_in_turn, self.max_in_flight)

    def _write_in_turn(self, batch: Batch, replay: bool, turn: WriteTurn | None) -> WriteResult:
        try:
            return self._write_once_more_if_created(batch, replay, turn=turn)
        except BaseException as exc:
            try:
                self._table, self._schema = self._reflect()
            except Exception:  # the database is gone; the original error says why
                self._table = self._schema = None
            if isinstance(exc, Exception):
                raise classify(exc, self.where, work="this batch") from exc
            raise

    def read_dead_letters(self, limit: int | None = None) -> pa.Table:
        try:
            with self._engine.connect() as conn:
                return self._dlq.read(conn, limit)
        except Exception as exc:
            raise classify(exc, self.where) from exc

    def resolve_dead_letters(self, batch: Batch) -> int:
        if batch.ranges:
            msg = "resolving dead letters never covers offset ranges"
            raise ValueError(msg)
        before = self.read_dead_letters().num_rows
        try:
            self._write_once_more_if_created(batch, replay=True, resolve=True)
        except Exception as exc:
            raise classify(exc, self.where) from exc
        return before - self.read_dead_letters().num_rows

    def _write_once_more_if_created(
        self, batch: Batch, replay: bool, resolve: bool = False, turn: WriteTurn | None = None
    ) -> WriteResult:
        try:
            return self._write(batch, replay, resolve, turn)
        except TableAppeared:  # rolled back; now plan against the table that exists
            self._table, self._schema = self._reflect()
            return self._write(batch, replay, resolve, turn)

    def _write(
        self, batch: Batch, replay: bool, resolve: bool = False, turn: WriteTurn | None = None
    ) -> WriteResult:
        spec = self.spec
        if turn is not None:
            turn.wait_previous_settled()  # plan against the columns the previous write leaves
        plan = plan_schema(
            self._schema,
            batch.rows,
            spec.pipeline,
            widen_to_string=spec.widen_to_string,
            protected=(*tables.IDENTITY, *spec.key),
        )
        first_offsets = describe_ranges(batch.ranges)
        tables.check_fields(plan.new_fields, spec, self._engine.dialect)
        rows = plan.rows
        changes = reduce_batch(batch, rows, spec) if spec.mode == "upsert" else None
        added: tuple[str, ...] = ()
        overlap = False
        if turn is not None:
            quiet = not (self._table is None or plan.new_fields or plan.widened)
            if quiet and not batch.reject_count:  # no DDL: the next write may plan now
                turn.settled()
                overlap = self._overlaps(batch, replay or resolve)
            if not overlap:
                turn.wait_previous_ended()
        if not self._transactional_ddl:
            with self._engine.begin() as conn:
                added = self._evolve(conn, plan, first_offsets)
        if not self._transactional_ddl and batch.reject_count:
            with self._engine.begin() as conn:  # DDL would commit the batch's transaction early
                self._dlq.create(conn)
        racing = spec.mode == "append" and not (replay or resolve)
        with self._concurrent_writer(racing, first_offsets), self._engine.begin() as conn:
            existed = self._table is not None
            if not replay and not overlap:
                self._checkpoints.advance(conn, batch.ranges)
            if self._transactional_ddl:
                added = self._evolve(conn, plan, first_offsets)
            deleted = written = 0
            if replay and existed and spec.mode == "append":
                deleted = self._loader.delete_ranges(
                    conn, self._require_table(), spec.topic, list(batch.ranges.values())
                )
            if resolve and existed and spec.mode == "append":
                deleted += delete_offsets(conn, self._require_table(), batch)
            dead = self._dlq.apply(conn, batch, replay=replay, resolve=resolve)
            if self._table is not None:
                if changes is None:
                    written = self._insert(conn, rows)
                else:
                    deleted += self._apply(conn, changes)
                    written = changes.upserts.num_rows
            if overlap and turn is not None:
                # Rows first, checkpoint last: the rows went in while the previous batch was
                # still being written; the compare-and-set waits for it to end.
                turn.wait_previous_ended()
                self._checkpoints.advance(conn, batch.ranges)
        self._known_partitions.update(batch.ranges)
        skipped = changes.skipped if changes is not None else batch.tombstone_count
        return WriteResult(
            rows_written=written,
            rows_deleted=deleted,
            tombstones_skipped=skipped,
            columns_added=added,
            rows_dead_lettered=dead,
        )

    @contextmanager
    def _concurrent_writer(self, racing: bool, first_offsets: str) -> Iterator[None]:
        """A write in flight after another moves its checkpoint last, so a concurrent run of
        the same pipeline loading the same offsets can show up first as a duplicate key, or as
        a deadlock between the two runs' transactions (the database rolls one back). For an
        append, both mean what a checkpoint conflict means, and say so."""
        try:
            yield
        except Exception as exc:
            if not racing or not raced(exc):
                raise
            msg = (
                f"pipeline {self.spec.pipeline!r}: {self.spec.topic} checkpoint moved while this"
                f" run was loading from {first_offsets}: another writer loaded the same offsets"
                " (another run of the same pipeline?); nothing from this batch was committed"
            )
            raise CheckpointConflictError(msg) from exc

    def _overlaps(self, batch: Batch, replay: bool) -> bool:
        """May this write, which changes no table definition, run while the previous one is
        still in flight? Only appends whose partitions all have a committed checkpoint row
        (a row being inserted by the previous write could not be compared against). Not
        upserts (two transactions could lock the same keys in opposite orders) nor replays."""
        return (
            self.max_in_flight > 1
            and not replay
            and self.spec.mode == "append"
            and self._known_partitions.issuperset(batch.ranges)
        )

    def _evolve(self, conn: Connection, plan: SchemaPlan, first_offsets: str) -> tuple[str, ...]:
        """Create the table on the first rows, or add the batch's new columns and widen the
        columns it needs wider; record each change in the schema history."""
        dialect = conn.dialect
        rows, new_fields = plan.rows, plan.new_fields
        if self._table is None:
            if rows.num_rows == 0:
                return ()
            table = tables.target_table(rows.schema, self.spec, dialect)
            with tables.creating(conn, self.spec.display_name):
                if tables.reflect(conn, self.spec) is not None:
                    raise TableAppeared  # another writer created it meanwhile
                table.create(conn)
            # The definition just created is what reflection would return (and reflecting costs
            # a dozen catalog queries on PostgreSQL, on the first batch of every table).
            self._table, self._schema = table, tables.arrow_schema(conn, table, reflected=False)
            created = [(f.name, "created", None, str(f.type)) for f in self._schema]
            self._history.record(conn, created, first_offsets)
            return ()
        if not new_fields and not plan.widened:
            return ()
        if plan.widened:  # first: SQLite rebuilds the table as ``self._table`` defines it
            widened = {w.name: w.new for w in plan.widened}
            tables.widen_columns(conn, self._table, widened, self.spec)
        for field in new_fields:
            conn.execute(tables.new_column(self._table, field, self.spec, dialect))
        self._table, self._schema = self._reflect(conn)
        stored = {f.name: f.type for f in self._schema} if self._schema is not None else {}
        changes: list[Entry] = [
            (f.name, "added", None, str(stored.get(f.name, f.type))) for f in new_fields
        ]
        changes += [
            (w.name, "widened", str(w.old), str(stored.get(w.name, w.new))) for w in plan.widened
        ]
        self._history.record(conn, changes, first_offsets)
        return tuple(f.name for f in new_fields)

    def _insert(self, conn: Connection, rows: pa.Table) -> int:
        table = self._require_table()
        rows = tables.in_key_order(table, self._json.encode(rows))
        return self._loader.insert(conn, table, rows, self._json_columns())

    def _apply(self, conn: Connection, changes: Changes) -> int:
        """Tombstone deletes first, then the upserts that are newer than them."""
        table = self._require_table()
        deleted = self._loader.delete_tombstones(conn, table, changes.deletes)
        upserts = self._json.encode(changes.upserts)
        self._loader.upsert(conn, table, upserts, self.spec.key, self._json_columns())
        return deleted

    def _json_columns(self) -> set[str]:
        schema = self._schema
        return set() if schema is None else {f.name for f in schema if f.type == JSON_TYPE}

    def _require_table(self) -> sa.Table:
        if self._table is None:  # pragma: no cover - guarded by callers
            msg = f"table {self.spec.display_name} does not exist"
            raise RuntimeError(msg)
        return self._table

    def reset(self, offsets: dict[int, int], *, dry_run: bool = False) -> int:
        deleted = 0
        try:
            with self._engine.connect() as conn, conn.begin() as transaction:
                if self._table is None:
                    self._history.forget(conn)  # a dropped table's columns are gone with it
                for partition, offset in sorted(offsets.items()):
                    if self._table is not None and self.spec.mode == "append":
                        c = self._table.c
                        result = conn.execute(
                            sa.delete(self._table).where(
                                c._topic == self.spec.topic,
                                c._partition == partition,
                                c._offset >= offset,
                            )
                        )
                        deleted += max(result.rowcount, 0)
                    self._dlq.delete_from(conn, partition, offset)
                    self._checkpoints.set(conn, partition, offset)
                if dry_run:
                    transaction.rollback()
        except Exception as exc:
            raise classify(exc, self.where, work="this reset") from exc
        return deleted

    # -- lifecycle -------------------------------------------------------------------------
    def close(self) -> None:
        self._json.close()
        self._engine.dispose()


def make_engine(url: URL, lock_timeout: float = 60.0) -> Engine:
    """An engine whose errors never show bound values, with SQLite in real transactions."""
    options: dict[str, Any] = {"hide_parameters": True, "pool_pre_ping": True}
    caps = capabilities(url.get_backend_name())
    if caps.begin_immediate:
        options["connect_args"] = {"timeout": lock_timeout}
    where = redact(url.render_as_string(hide_password=False))
    try:
        engine = sa.create_engine(url, **options)
    except sa.exc.NoSuchModuleError:
        msg = (
            f"target {where}: SQLAlchemy has no dialect {url.drivername!r}"
            " (install the package that provides it, e.g. snowflake-sqlalchemy)"
        )
        raise ConfigError(msg) from None
    except ImportError as exc:
        extra = extra_for(exc.name)
        msg = (
            missing_extra_message(f"target {where}", extra)
            if extra
            else f"target {where}: the database driver {exc.name or url.get_driver_name()!r}"
            " is not installed"
        )
        raise ConfigError(msg) from None
    if caps.begin_immediate:
        # pysqlite would not BEGIN before DDL (no transactional ALTER TABLE) and would take the
        # write lock only at the first write; BEGIN IMMEDIATE takes it at the start.
        event.listen(engine, "connect", _manual_transactions)
        event.listen(engine, "begin", _begin_immediate)
    return engine


def _manual_transactions(dbapi_connection: Any, _record: Any) -> None:
    dbapi_connection.isolation_level = None


def _begin_immediate(conn: Connection) -> None:
    conn.exec_driver_sql("BEGIN IMMEDIATE")
