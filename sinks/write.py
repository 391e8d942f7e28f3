"""The exactly-once write, written once for every database.

One batch is one database transaction, in these steps:

1. plan the columns (``sinks.schema``) against the table as the previous write leaves it;
2. (databases whose DDL commits on its own: create or alter the table, and create the
   dead-letter table, in a step of their own just before the batch's transaction; if the batch
   then fails, the table keeps an empty column or table, which is harmless);
3. begin;
4. compare-and-set the checkpoint of each partition from the batch's first offset to its next
   (``sinks.checkpoints``). It comes first so that a concurrent writer of the same pipeline
   waits on the row lock and then fails before doing any work;
5. create or alter the table (transactional DDL), each change recorded in the schema history;
6. a replay deletes the rows of its ranges (append), a resolve the rows at its offsets;
7. dead letters: a replay deletes those of its ranges, a resolve those it now loads, and the
   batch's rejects are inserted;
8. the rows: the fast row path (append), or the upsert: its rows whose Kafka key has a newer
   delete marker are dropped (``sinks.delete_markers``), then the tombstone deletes and the
   guarded upsert, then the tombstones' markers (created by the first batch that deletes; on
   databases whose DDL commits on its own, in step 2);
9. commit.

With two writes in flight (``Capabilities.max_in_flight``, PostgreSQL), a write that changes no
table definition may run while the previous one is still in flight; it then moves its
checkpoint last, once the previous write ended (``sinks.inflight.WriteTurn``).

``reset`` and ``resolve_dead_letters`` are written here too. A backend (``sinks/duckdb``,
``sinks/sql``) supplies only what differs: connect, begin and commit (``_transaction``), reading
its table's definition, the DDL to create and alter it, the fast row path, the upsert and the
deletes by range and offset of its own table; and the dead-letter table's DDL, insert and read.
"""

from __future__ import annotations

import logging
import random
import time
from collections.abc import Iterator
from contextlib import AbstractContextManager, contextmanager
from datetime import datetime
from typing import Any

import pyarrow as pa
import sqlalchemy as sa
from sqlalchemy.sql import Select

from connector.batch import Batch, OffsetRange
from connector.names import IDENTITY_COLUMNS
from kafka_etl.errors import (
    CheckpointConflictError,
    TerminalError,
    classify,
    raced,
    rolled_back,
)
from sinks import dead_letter_table as dead_letters
from sinks import delete_markers as markers
from sinks.base import (
    ClosesOnExit,
    SchemaChange,
    TableAppeared,
    TableSpec,
    WriteResult,
    describe_ranges,
    dropped_table_message,
)
from sinks.capabilities import Capabilities
from sinks.changes import Changes, reduce_batch, without_deleted
from sinks.checkpoints import Checkpoints
from sinks.history import Conn, Entry, SchemaHistory
from sinks.inflight import InFlight, WriteTurn
from sinks.schema import SchemaPlan, Widening, plan_schema

log = logging.getLogger(__name__)
# A batch whose transaction the database rolled back to break a deadlock is written again, at
# most this many times (then the error is the run's: transient, exit 75).
_ROLLED_BACK_RETRIES = 3


class TransactionalSink(ClosesOnExit):
    """A sink whose writes follow the steps above; subclasses are the database backends.

    Set by the backend's ``__init__``: ``spec``, ``caps``, ``where`` (how messages name the
    database), ``_checkpoints``, ``_history``, and ``_schema`` (the table's columns as Arrow
    types, None before it exists).
    """

    spec: TableSpec
    caps: Capabilities
    where: str
    _checkpoints: Checkpoints
    _history: SchemaHistory
    _schema: pa.Schema | None

    def _setup(self) -> None:
        """Called by the backend at the end of its ``__init__``."""
        self._dead_letters = dead_letters.statement_table(self.spec)
        self._markers = markers.statement_table(self.spec)
        self._markers_seen = False  # the marker table exists (it is never dropped by a sink)
        # The target table's Kafka coordinates, for the Core statements that count and delete.
        self._rows = sa.table(
            self.spec.table, *map(sa.column, IDENTITY_COLUMNS), schema=self.spec.db_schema
        )
        # Partitions whose checkpoint row is committed: a write that would insert one is not
        # overlapped (its successor could not compare against a row it cannot see yet).
        self._known_partitions: set[int] = set()

    @property
    def max_in_flight(self) -> int:
        return self.caps.max_in_flight

    # -- what a backend supplies ------------------------------------------------------------
    def _transaction(self, *, commit: bool = True) -> AbstractContextManager[Conn]:
        """Begin; yield the connection (Core statements run on it); commit when the block ends
        (roll back with ``commit=False``, or when it raises: the block's error is the one
        that propagates, never a failed rollback's)."""
        raise NotImplementedError

    def _reading(self) -> AbstractContextManager[Conn]:
        """A connection to read with, outside any write."""
        raise NotImplementedError

    def _refresh(self, conn: Conn | None = None) -> None:
        """Read the table's definition again (``_schema``, None if the table is gone)."""
        raise NotImplementedError

    def _check_fields(self, fields: tuple[pa.Field, ...]) -> None:
        """Refuse new column names the database cannot hold (before any transaction)."""

    def _create_table(self, conn: Conn, schema: pa.Schema) -> None:
        """Create the table for ``schema`` (taking turns with other writers; ``TableAppeared``
        if one created it meanwhile) and set ``_schema`` to what it stores."""
        raise NotImplementedError

    def _alter_table(
        self, conn: Conn, new_fields: tuple[pa.Field, ...], widened: tuple[Widening, ...]
    ) -> None:
        """Widen the columns, then add the new ones; set ``_schema`` to what it stores."""
        raise NotImplementedError

    def _insert(self, conn: Conn, rows: pa.Table) -> int:
        """The fast row path of an append."""
        raise NotImplementedError

    def _upsert(self, conn: Conn, changes: Changes) -> int:
        """Guarded tombstone deletes, then the guarded upsert; returns the rows deleted."""
        raise NotImplementedError

    def _delete_ranges(self, conn: Conn, ranges: list[OffsetRange]) -> int:
        """Delete the table's rows within ``ranges`` (an append replay)."""
        return dead_letters.delete_ranges(conn, self._rows, self.spec.topic, ranges)

    def _delete_offsets(self, conn: Conn, batch: Batch) -> int:
        """Delete the table's rows at the exact offsets of ``batch`` (an append resolve)."""
        return dead_letters.delete_offsets(conn, self._rows, batch)

    def _markers_exist(self, conn: Conn) -> bool:
        """The delete-marker table exists."""
        raise NotImplementedError

    def _create_markers(self, conn: Conn, key_type: pa.DataType) -> None:
        """Create the delete-marker table (``_key`` of ``key_type`` as its primary key) unless
        it exists, taking turns with other writers."""
        raise NotImplementedError

    def _read_markers(self, conn: Conn, keys: pa.Array) -> pa.Table:
        """The stored markers (``MARKER_COLUMNS``) of the Kafka keys ``keys``."""
        raise NotImplementedError

    def _write_markers(self, conn: Conn, deletes: pa.Table) -> None:
        """Upsert the markers of ``deletes`` (one per ``_key``), guarded like rows."""
        raise NotImplementedError

    def _dead_letters_exist(self, conn: Conn) -> bool:
        raise NotImplementedError

    def _create_dead_letters(self, conn: Conn) -> None:
        raise NotImplementedError

    def _insert_dead_letters(self, conn: Conn, rejects: pa.Table) -> None:
        """Insert ``rejects`` (``DLQ_SCHEMA``) with their ``first_seen``."""
        raise NotImplementedError

    def read_dead_letters(self, limit: int | None = None) -> pa.Table:
        raise NotImplementedError

    # -- inspection --------------------------------------------------------------------------
    def read_checkpoints(self, *, for_reset: bool = False) -> dict[int, int]:
        try:
            with self._reading() as conn:
                checkpoints = self._checkpoints.read(conn)
                if checkpoints and self._schema is None:
                    self._refresh(conn)
                dropped = bool(checkpoints) and self._schema is None
                dropped = dropped and self._history.created(conn)
        except Exception as exc:
            raise classify(exc, self.where) from exc
        if dropped and not for_reset:
            raise TerminalError(dropped_table_message(self.spec, self.where, checkpoints))
        self._known_partitions.update(checkpoints)
        return checkpoints

    def table_schema(self) -> pa.Schema | None:
        return self._schema

    def row_count(self) -> int:
        if self._schema is None:
            return 0
        try:
            with self._reading() as conn:
                query = sa.select(sa.func.count()).select_from(self._rows)
                return int(conn.execute(query).scalar() or 0)
        except Exception as exc:
            raise classify(exc, self.where) from exc

    def column_types(self) -> dict[str, str]:
        raise NotImplementedError

    def last_commit(self) -> datetime | None:
        try:
            with self._reading() as conn:
                return self._checkpoints.last_moved(conn)
        except Exception as exc:
            raise classify(exc, self.where) from exc

    def select(self, statement: Select[Any]) -> list[tuple[Any, ...]]:
        try:
            with self._reading() as conn:
                return [tuple(row) for row in conn.execute(statement)]
        except Exception as exc:
            raise classify(exc, self.where) from exc

    def schema_history(self) -> list[SchemaChange]:
        try:
            with self._reading() as conn:
                return self._history.read(conn)
        except Exception as exc:
            raise classify(exc, self.where) from exc

    # -- writing -----------------------------------------------------------------------------
    def write(self, batch: Batch, *, replay: bool = False) -> WriteResult:
        return self._write_in_turn(batch, replay, None)

    def writes(self) -> InFlight:
        return InFlight(self._write_in_turn, self.max_in_flight)

    def resolve_dead_letters(self, batch: Batch) -> int:
        if batch.ranges:
            msg = "resolving dead letters never covers offset ranges"
            raise ValueError(msg)
        before = self.read_dead_letters().num_rows
        self._write_in_turn(batch, True, None, resolve=True)
        return before - self.read_dead_letters().num_rows

    def _write_in_turn(
        self, batch: Batch, replay: bool, turn: WriteTurn | None, *, resolve: bool = False
    ) -> WriteResult:
        try:
            attempt = 0
            while True:
                try:
                    return self._write(batch, replay, resolve, turn)
                except TableAppeared:  # rolled back; now plan against the table that exists
                    self._refresh()
                except Exception as exc:
                    # A deadlock or serialization conflict the database broke by rolling this
                    # transaction back (concurrent shards inserting their first checkpoint
                    # rows, say): nothing of it stayed, so it runs again; the checkpoint's
                    # compare-and-set still decides whether its offsets are this run's to load.
                    attempt += 1
                    if attempt > _ROLLED_BACK_RETRIES or not rolled_back(exc):
                        raise
                    log.info("%s: %s; writing the batch again", self.where, type(exc).__name__)
                    time.sleep(random.uniform(0.02, 0.1) * attempt)
                    self._refresh()
        except BaseException as exc:
            self._markers_seen = False  # a marker table created by the failed write is gone
            try:
                self._refresh()
            except Exception:  # the database is gone; the original error says why
                self._schema = None
            if isinstance(exc, Exception):
                raise classify(exc, self.where, work="this batch") from exc
            raise

    def _write(
        self, batch: Batch, replay: bool, resolve: bool, turn: WriteTurn | None
    ) -> WriteResult:
        spec = self.spec
        if turn is not None:
            turn.wait_previous_settled()  # plan against the columns the previous write leaves
        plan = plan_schema(
            self._schema,
            batch.rows,
            spec.pipeline,
            widen_to_string=spec.widen_to_string,
            protected=(*IDENTITY_COLUMNS, *spec.key),
        )
        self._check_fields(plan.new_fields)
        first_offsets = describe_ranges(batch.ranges)
        upsert = spec.mode == "upsert"
        changes = reduce_batch(batch, plan.rows, spec) if upsert else None
        overlap = self._take_turn(turn, batch, plan, replay or resolve)
        added: tuple[str, ...] = ()
        if not self.caps.transactional_ddl:
            with self._transaction() as conn:  # DDL commits on its own there
                added = self._evolve(conn, plan, first_offsets)
                if batch.reject_count and not self._dead_letters_exist(conn):
                    self._create_dead_letters(conn)
                if changes is not None and changes.deletes.num_rows:
                    self._ensure_markers(conn, changes)
        racing = not (upsert or replay or resolve)
        with self._concurrent_writer(racing, first_offsets), self._transaction() as conn:
            existed = self._schema is not None
            if not replay and not overlap:
                self._checkpoints.advance(conn, batch.ranges)
            if self.caps.transactional_ddl:
                added = self._evolve(conn, plan, first_offsets)
            deleted = written = 0
            if existed and not upsert:
                if replay:
                    deleted = self._delete_ranges(conn, list(batch.ranges.values()))
                if resolve:
                    deleted += self._delete_offsets(conn, batch)
            dead = self._apply_dead_letters(conn, batch, replay=replay, resolve=resolve)
            if changes is not None:
                deleted += self._apply_changes(conn, changes)
                written = changes.upserts.num_rows  # those refused as older included
            elif self._schema is not None and plan.rows.num_rows:
                written = self._insert(conn, plan.rows)
            if overlap and turn is not None:
                # Rows first, checkpoint last: the rows went in while the previous batch was
                # still being written; the compare-and-set waits for it to end.
                turn.wait_previous_ended()
                self._checkpoints.advance(conn, batch.ranges)
        self._known_partitions.update(batch.ranges)
        return WriteResult(
            rows_written=written,
            rows_deleted=deleted,
            tombstones_skipped=batch.tombstones_skipped
            + (changes.skipped if changes is not None else batch.tombstone_count),
            columns_added=added,
            rows_dead_lettered=dead,
        )

    def _apply_changes(self, conn: Conn, changes: Changes) -> int:
        """An upsert batch: drop the rows deleted later (stored markers), apply the tombstones
        and the upsert, then record the tombstones' markers. Returns the rows deleted."""
        deleted = 0
        if self._schema is not None:
            upserts = changes.upserts
            if upserts.num_rows and "_key" in upserts.column_names and self._has_markers(conn):
                stored = self._read_markers(conn, upserts.column("_key"))
                changes = without_deleted(changes, stored)
            deleted = self._upsert(conn, changes)
        if changes.deletes.num_rows:
            self._ensure_markers(conn, changes)
            self._write_markers(conn, changes.deletes.select(markers.MARKER_COLUMNS))
        return deleted

    def _has_markers(self, conn: Conn) -> bool:
        if not self._markers_seen and markers.keeps_markers(self.spec):
            self._markers_seen = self._markers_exist(conn)
        return self._markers_seen

    def _ensure_markers(self, conn: Conn, changes: Changes) -> None:
        """Create the marker table, its ``_key`` typed as the table's own (else as the
        tombstones' keys, when no row has been stored yet)."""
        if self._has_markers(conn):
            return
        schema = self._schema
        if schema is not None and "_key" in schema.names:
            key_type = schema.field("_key").type
        else:
            key_type = changes.deletes.schema.field("_key").type
        self._create_markers(conn, key_type)
        self._markers_seen = True

    def _take_turn(
        self, turn: WriteTurn | None, batch: Batch, plan: SchemaPlan, replay: bool
    ) -> bool:
        """Wait for the previous write as long as this one needs; True if it may overlap it
        (moving its checkpoint last). Only appends that change no table definition, set no
        dead letters aside and whose partitions all have a committed checkpoint row (a row
        being inserted by the previous write could not be compared against) overlap. Not
        upserts (two transactions could lock the same keys in opposite orders) nor replays."""
        if turn is None:
            return False
        quiet = not (self._schema is None or plan.new_fields or plan.widened)
        overlap = False
        if quiet and not batch.reject_count:  # no DDL: the next write may plan now
            turn.settled()
            overlap = (
                self.max_in_flight > 1
                and not replay
                and self.spec.mode == "append"
                and self._known_partitions.issuperset(batch.ranges)
            )
        if not overlap:
            turn.wait_previous_ended()
        return overlap

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

    def _evolve(self, conn: Conn, plan: SchemaPlan, first_offsets: str) -> tuple[str, ...]:
        """Create the table on the first rows, or widen the columns the batch needs wider and
        add its new ones; record each change in the schema history. Returns the columns
        added to an existing table."""
        rows = plan.rows
        if self._schema is None:
            if rows.num_rows == 0:
                return ()  # the columns (and an upsert's key) are known with the first row
            self._create_table(conn, rows.schema)
            assert self._schema is not None
            created = [(f.name, "created", None, str(f.type)) for f in self._schema]
            self._history.record(conn, created, first_offsets)
            return ()
        if not plan.new_fields and not plan.widened:
            return ()
        self._alter_table(conn, plan.new_fields, plan.widened)
        stored = {f.name: f.type for f in self._schema} if self._schema is not None else {}
        entries: list[Entry] = [
            (f.name, "added", None, str(stored.get(f.name, f.type))) for f in plan.new_fields
        ]
        entries += [
            (w.name, "widened", str(w.old), str(stored.get(w.name, w.new))) for w in plan.widened
        ]
        self._history.record(conn, entries, first_offsets)
        return tuple(f.name for f in plan.new_fields)

    def _apply_dead_letters(self, conn: Conn, batch: Batch, *, replay: bool, resolve: bool) -> int:
        """A replay first deletes the dead letters of its ranges, a resolve those it now loads;
        then the batch's rejects are inserted. Returns the number inserted."""
        rejects = batch.rejects
        inserting = rejects is not None and rejects.num_rows > 0
        if not (replay or resolve or inserting):
            return 0
        exists = self._dead_letters_exist(conn)
        if exists and replay:
            ranges = list(batch.ranges.values())
            dead_letters.delete_ranges(conn, self._dead_letters, self.spec.topic, ranges)
        if exists and resolve:
            dead_letters.delete_offsets(conn, self._dead_letters, batch)
        if rejects is None or not inserting:
            return 0
        if not exists:
            self._create_dead_letters(conn)
        self._insert_dead_letters(conn, rejects)
        return int(rejects.num_rows)

    def reset(self, offsets: dict[int, int], *, dry_run: bool = False) -> int:
        deleted = 0
        topic = self.spec.topic
        try:
            with self._transaction(commit=not dry_run) as conn:
                if self._schema is None:
                    self._history.forget(conn)  # a dropped table's columns are gone with it
                has_dead_letters = self._dead_letters_exist(conn)
                has_markers = markers.keeps_markers(self.spec) and self._markers_exist(conn)
                for partition, offset in sorted(offsets.items()):
                    if self._schema is not None and self.spec.mode == "append":
                        rows = self._rows
                        deleted += dead_letters.delete_from(conn, rows, topic, partition, offset)
                    if has_dead_letters:
                        table = self._dead_letters
                        dead_letters.delete_from(conn, table, topic, partition, offset)
                    if has_markers:
                        dead_letters.delete_from(conn, self._markers, topic, partition, offset)
                    self._checkpoints.set(conn, partition, offset)
        except Exception as exc:
            raise classify(exc, self.where, work="this reset") from exc
        return deleted
