"""DuckDB sink: Arrow batches are scanned in place by DuckDB, no row-by-row conversion.

One connection is held for the whole run (DuckDB allows one writing process per file). Opening
a file another process holds is retried until ``lock_timeout``, then reported as transient.

Upsert tables get a unique index on their ``key:`` columns (instead of the offsets index of
append tables): each batch is collapsed per key (``sinks.changes``), tombstones delete by
``_key``, then ``INSERT ... ON CONFLICT DO UPDATE ... WHERE`` applies only newer messages.
"""

from __future__ import annotations

import logging
import re
import threading
import time
from collections.abc import Mapping
from datetime import datetime
from pathlib import Path
from typing import Any

import duckdb
import pyarrow as pa
import sqlalchemy as sa
from sqlalchemy.sql import Select

from connector.batch import Batch, OffsetRange
from connector.names import IDENTITY_COLUMNS
from kafka_etl.errors import (
    ConfigError,
    TerminalError,
    classify,
    first_line,
)
from sinks.base import (
    CHECKPOINT_TABLE,
    ClosesOnExit,
    SchemaChange,
    TableAppeared,
    TableSpec,
    WriteResult,
    describe_ranges,
    dropped_table_message,
)
from sinks.capabilities import DUCKDB
from sinks.changes import Changes, reduce_batch
from sinks.duckdb import history
from sinks.duckdb.checkpoints import Checkpoints
from sinks.duckdb.core import CoreConnection
from sinks.duckdb.dlq import DeadLetters
from sinks.duckdb.sql import column_list, qualified, quote, registered, rollback_quietly
from sinks.history import Entry, SchemaHistory, history_table
from sinks.inflight import InFlight
from sinks.schema import SchemaPlan, plan_schema

log = logging.getLogger(__name__)

_IDENTITY = IDENTITY_COLUMNS
_BATCH_VIEW = "_kafka_etl_batch"
_TOMBSTONE_VIEW = "_kafka_etl_tombstones"
# Aliases for the stored row and the incoming message in the upsert/delete guards.
_STORED, _INCOMING = quote("_kafka_etl_stored"), quote("_kafka_etl_incoming")


# A load only streams through DuckDB's cache, which by default may grow to 80% of RAM and keeps
# every block it wrote. 64 MB keeps a run's peak RSS near 400 MB whatever the backlog. A larger
# cache is faster, at a memory cost (3,000,000 JSON events, one machine: 64 MB 105k rows/s at
# 405 MB peak, 128 MB 117k at 467 MB, 192 MB 117k at 527 MB); the target URL can set it
# (``duckdb:///w.duckdb?memory_limit=256MB``).
MEMORY_LIMIT = "64MB"

# Another process cannot open a DuckDB file this one writes, but sinks in one process share it:
# their concurrent CREATE TABLE IF NOT EXISTS would conflict in DuckDB's catalog; they take turns.
_CREATING = threading.Lock()
# DuckDB names the process holding a file's lock: "... Conflicting lock is held in X (PID 123)".
_LOCK_HOLDER = re.compile(r"held in (.*?) ?\(PID (\d+)\)")


def connect(
    path: str,
    *,
    read_only: bool = False,
    lock_timeout: float = 60.0,
    settings: Mapping[str, str] | None = None,
) -> Any:
    """Open a DuckDB file, waiting while another process holds its lock.

    ``settings`` are DuckDB configuration options (``memory_limit``, ``threads``, ...), from the
    query string of the target URL; they are applied after kafka-etl's own defaults.
    """
    if path != ":memory:" and not read_only:
        try:
            Path(path).parent.mkdir(parents=True, exist_ok=True)
        except OSError as exc:
            msg = f"duckdb {path}: cannot create its folder ({exc.strerror or exc})"
            raise ConfigError(msg) from None
    deadline = time.monotonic() + lock_timeout
    delay = 0.05
    waiting = False
    while True:
        try:
            con = duckdb.connect(path, read_only=read_only)
            break
        except duckdb.Error as exc:
            locked = isinstance(exc, duckdb.IOException) and "lock" in str(exc).lower()
            if not locked or time.monotonic() >= deadline:
                # Locked, or out of space replaying the WAL of a run that filled the disk: try
                # again later; a file that is not a DuckDB database: fix the target.
                raise classify(exc, f"duckdb {path}") from None
            if not waiting:  # once per wait, not per retry
                waiting = True
                holder = _LOCK_HOLDER.search(str(exc))
                log.warning(
                    "duckdb %s is locked by %s; waiting up to %gs (lock_timeout)",
                    path,
                    _holder(holder) if holder else "another process",
                    lock_timeout,
                )
            time.sleep(delay)
            delay = min(delay * 2, 1.0)
    try:
        for name, value in {
            "TimeZone": "UTC",
            "memory_limit": MEMORY_LIMIT,
            **(settings or {}),
        }.items():
            con.execute(f"SET {quote(name)} = ?", [value])
    except duckdb.Error as exc:
        con.close()
        msg = f"duckdb {path}: setting {name}={value!r}: {str(exc).splitlines()[0]}"
        raise ConfigError(msg) from None
    return con


def _holder(found: re.Match[str]) -> str:
    program, pid = found.groups()
    return f"process {pid} ({Path(program).name})" if program else f"process {pid}"


class DuckDBSink(ClosesOnExit):
    """Rows and checkpoints of one pipeline in one DuckDB file."""

    max_in_flight = DUCKDB.max_in_flight

    def __init__(
        self,
        path: str,
        spec: TableSpec,
        *,
        lock_timeout: float = 60.0,
        settings: Mapping[str, str] | None = None,
    ) -> None:
        self.spec = spec
        self.path = path
        self._name = qualified(spec.table, spec.db_schema)
        self._where = f"duckdb {path}"
        self._con = connect(path, lock_timeout=lock_timeout, settings=settings)
        self._checkpoints = Checkpoints(self._con, spec)
        self._core = CoreConnection(self._con)
        self._history = SchemaHistory(history_table(None), spec)
        try:
            with _CREATING:
                self._checkpoints.ensure()
                self._con.execute(history.CREATE)
            self._schema = self._read_schema()
        except BaseException as exc:
            self.close()
            if isinstance(exc, Exception):
                raise classify(exc, self._where) from exc
            raise
        self._dlq = DeadLetters(self._con, spec)

    # -- reading ---------------------------------------------------------------------------
    def read_checkpoints(self, *, for_reset: bool = False) -> dict[int, int]:
        try:
            checkpoints = self._checkpoints.read()
            if checkpoints and self._schema is None:
                self._schema = self._read_schema()
            dropped = bool(checkpoints) and self._schema is None
            dropped = dropped and self._history.created(self._core)
        except Exception as exc:
            raise classify(exc, self._where) from exc
        if dropped and not for_reset:
            raise TerminalError(dropped_table_message(self.spec, self._where, checkpoints))
        return checkpoints

    def table_schema(self) -> pa.Schema | None:
        return self._schema

    def row_count(self) -> int:
        if self._schema is None:
            return 0
        return int(self._con.execute(f"SELECT count(*) FROM {self._name}").fetchall()[0][0])

    def schema_history(self) -> list[SchemaChange]:
        return self._history.read(self._core)

    def column_types(self) -> dict[str, str]:
        rows = self._con.execute(
            "SELECT column_name, data_type FROM information_schema.columns"
            " WHERE table_name = ? AND table_schema = coalesce(?, current_schema())"
            " ORDER BY ordinal_position",
            [self.spec.table, self.spec.db_schema],
        ).fetchall()
        return {str(name): str(kind) for name, kind in rows}

    def last_commit(self) -> datetime | None:
        names = ("pipeline", "topic", "table_name", "updated_at")
        c = sa.table(CHECKPOINT_TABLE, *map(sa.column, names))
        latest = self.select(
            sa.select(sa.func.max(c.c.updated_at)).where(
                c.c.pipeline == self.spec.pipeline,
                c.c.topic == self.spec.topic,
                c.c.table_name == self.spec.display_name,
            )
        )[0][0]
        return latest if isinstance(latest, datetime) else None  # TIMESTAMPTZ, TimeZone UTC

    def select(self, statement: Select[Any]) -> list[tuple[Any, ...]]:
        try:
            return list(self._core.execute(statement))
        except Exception as exc:
            raise classify(exc, self._where) from exc

    def _read_schema(self) -> pa.Schema | None:
        exists = self._con.execute(
            "SELECT count(*) FROM information_schema.tables"
            " WHERE table_name = ? AND table_schema = coalesce(?, current_schema())",
            [self.spec.table, self.spec.db_schema],
        ).fetchall()[0][0]
        if not exists:
            return None
        schema: pa.Schema = (
            self._con.sql(f"SELECT * FROM {self._name} LIMIT 0").to_arrow_table().schema
        )
        return schema

    # -- writing ---------------------------------------------------------------------------
    def write(self, batch: Batch, *, replay: bool = False) -> WriteResult:
        return self._write(batch, replay=replay)

    def writes(self) -> InFlight:
        # One connection: writes never overlap, so the turn has nothing to wait for.
        return InFlight(lambda batch, replay, _turn: self._write(batch, replay=replay), 1)

    def resolve_dead_letters(self, batch: Batch) -> int:
        if batch.ranges:
            msg = "resolving dead letters never covers offset ranges"
            raise ValueError(msg)
        before = self.read_dead_letters().num_rows
        self._write(batch, replay=True, resolve=True)
        return before - self.read_dead_letters().num_rows

    def read_dead_letters(self, limit: int | None = None) -> pa.Table:
        return self._dlq.read(limit)

    def _write(self, batch: Batch, *, replay: bool, resolve: bool = False) -> WriteResult:
        try:
            return self._write_once(batch, replay=replay, resolve=resolve)
        except TableAppeared:  # rolled back; now plan against the table that exists
            return self._write_once(batch, replay=replay, resolve=resolve)

    def _write_once(self, batch: Batch, *, replay: bool, resolve: bool) -> WriteResult:
        plan = plan_schema(
            self._schema,
            batch.rows,
            self.spec.pipeline,
            widen_to_string=self.spec.widen_to_string,
            protected=(*_IDENTITY, *self.spec.key),
        )
        upsert = self.spec.mode == "upsert"
        changes = reduce_batch(batch, plan.rows, self.spec) if upsert else None
        con = self._con
        try:
            con.begin()
            created = self._evolve(plan, describe_ranges(batch.ranges))
            deleted = 0
            if replay:
                deleted = self._delete_ranges(batch.ranges) if not created else 0
            else:
                self._checkpoints.advance(batch.ranges)
            if resolve and not upsert and not created and self._schema is not None:
                deleted += self._dlq.delete_offsets(self._name, batch)
            dead = self._dlq.apply(batch, replay=replay, resolve=resolve)
            written = 0
            if changes is not None:
                if self._schema is not None or created:
                    deleted += self._apply(changes)
                    written = changes.upserts.num_rows
            elif plan.rows.num_rows:
                with registered(con, _BATCH_VIEW, plan.rows):
                    con.execute(
                        f"INSERT INTO {self._name} BY NAME SELECT * FROM {quote(_BATCH_VIEW)}"
                    )
                written = plan.rows.num_rows
            con.commit()
        except BaseException as exc:
            # The failure is what the user hears about: neither a rollback that finds no
            # transaction (a failed commit) nor a database invalidated by a fatal error (a full
            # disk while checkpointing) may replace it.
            rollback_quietly(con)
            try:
                self._schema = self._read_schema()
            except duckdb.Error:
                self._schema = None
            if isinstance(exc, TableAppeared):
                raise
            if isinstance(exc, Exception):
                raise classify(exc, self._where, work="this batch") from exc
            raise
        if created or plan.new_fields or plan.widened:
            self._schema = self._read_schema()
        added = tuple(f.name for f in plan.new_fields) if not created else ()
        return WriteResult(
            rows_written=written,
            rows_deleted=deleted,
            tombstones_skipped=batch.tombstone_count if changes is None else changes.skipped,
            rows_dead_lettered=dead,
            columns_added=added,
        )

    def _apply(self, changes: Changes) -> int:
        """Guarded tombstone deletes, then the guarded upsert of each key's newest row."""
        con = self._con
        deleted = 0
        if changes.deletes.num_rows:
            with registered(con, _TOMBSTONE_VIEW, changes.deletes):
                deleted = int(
                    con.execute(
                        f"DELETE FROM {self._name} AS {_STORED}"
                        f" USING {quote(_TOMBSTONE_VIEW)} AS {_INCOMING}"
                        f" WHERE {_STORED}._key = {_INCOMING}._key AND {_newer()}"
                    ).fetchall()[0][0]
                )
        rows = changes.upserts
        if rows.num_rows == 0:
            return deleted
        names = rows.column_names
        key = set(self.spec.key)
        # Columns this batch lacks are set to NULL: the message is the key's whole new state.
        # (A column added by this batch is in ``names``; ``_schema`` is the table before it.)
        absent = [n for n in (self._schema.names if self._schema else []) if n not in names]
        updates = [f"{quote(n)} = excluded.{quote(n)}" for n in names if n not in key]
        updates += [f"{quote(n)} = NULL" for n in absent if n not in key]
        with registered(con, _BATCH_VIEW, rows):
            con.execute(
                f"INSERT INTO {self._name} AS {_STORED} ({column_list(names)})"
                f" SELECT {column_list(names)} FROM {quote(_BATCH_VIEW)}"
                f" ON CONFLICT ({column_list(self.spec.key)}) DO UPDATE SET {', '.join(updates)}"
                f" WHERE {_newer('excluded')}"
            )
        return deleted

    def _delete_ranges(self, ranges: dict[int, OffsetRange]) -> int:
        """Remove the rows a replayed batch is about to write again (append tables)."""
        if self.spec.mode != "append":
            return 0
        deleted = 0
        for r in ranges.values():
            deleted += int(
                self._con.execute(
                    f"DELETE FROM {self._name}"
                    " WHERE _topic = ? AND _partition = ? AND _offset >= ? AND _offset < ?",
                    [self.spec.topic, r.partition, r.first, r.next],
                ).fetchall()[0][0]
            )
        return deleted

    def _evolve(self, plan: SchemaPlan, first_offsets: str) -> bool:
        """Create the table, or add the batch's new columns and widen the columns it needs
        wider, inside the open transaction; each change goes to the schema history."""
        con = self._con
        rows = plan.rows
        if self._schema is None:
            if self.spec.mode == "upsert" and rows.num_rows == 0:
                return False  # the key columns are known with the first row
            if self._read_schema() is not None:
                raise TableAppeared  # another sink of this process created it meanwhile
            if self.spec.db_schema:
                con.execute(f"CREATE SCHEMA IF NOT EXISTS {quote(self.spec.db_schema)}")
            with registered(con, _BATCH_VIEW, rows.schema.empty_table()):
                con.execute(
                    f"CREATE TABLE {self._name} AS SELECT * FROM {quote(_BATCH_VIEW)} LIMIT 0"
                )
            self._create_index()
            entries = [(f.name, "created", None, str(f.type)) for f in rows.schema]
            self._history.record(self._core, entries, first_offsets)
            return True
        changes: list[Entry] = []
        for field in plan.new_fields:
            type_name = self._type_name(field)
            con.execute(f"ALTER TABLE {self._name} ADD COLUMN {quote(field.name)} {type_name}")
            changes.append((field.name, "added", None, str(field.type)))
        if plan.widened:
            # DuckDB refuses ALTER ... TYPE on a table with an index: drop and rebuild it.
            con.execute(f"DROP INDEX {self._index_name()}")
            for w in plan.widened:
                type_name = self._type_name(pa.field(w.name, w.new))
                con.execute(
                    f"ALTER TABLE {self._name} ALTER COLUMN {quote(w.name)} TYPE {type_name}"
                )
                changes.append((w.name, "widened", str(w.old), str(w.new)))
            self._create_index()
        self._history.record(self._core, changes, first_offsets)
        return False

    def _type_name(self, field: pa.Field) -> str:
        """DuckDB's name for the type of an Arrow field (structs, lists included)."""
        con = self._con
        with registered(con, _BATCH_VIEW, pa.schema([field]).empty_table()):
            return str(
                con.execute(
                    f"DESCRIBE SELECT {quote(field.name)} FROM {quote(_BATCH_VIEW)}"
                ).fetchall()[0][1]
            )

    def _index_name(self, *, bare: bool = False) -> str:
        # Upsert tables: DuckDB cannot update indexed columns in ON CONFLICT, so only the key
        # is indexed; append tables: the Kafka coordinates, so a replay cannot duplicate.
        suffix = "key" if self.spec.mode == "upsert" else "offsets"
        index = quote(f"{self.spec.table}__{suffix}")
        if bare or not self.spec.db_schema:
            return index
        return f"{quote(self.spec.db_schema)}.{index}"

    def _create_index(self) -> None:
        unique = self.spec.key if self.spec.mode == "upsert" else _IDENTITY
        self._con.execute(
            f"CREATE UNIQUE INDEX {self._index_name(bare=True)} ON {self._name}"
            f" ({column_list(unique)})"
        )

    def reset(self, offsets: dict[int, int], *, dry_run: bool = False) -> int:
        con = self._con
        deleted = 0
        try:
            con.begin()
            if self._schema is None:
                self._history.forget(self._core)  # a dropped table's columns are gone with it
            for partition, offset in sorted(offsets.items()):
                if self._schema is not None and self.spec.mode == "append":
                    deleted += int(
                        con.execute(
                            f"DELETE FROM {self._name}"
                            " WHERE _topic = ? AND _partition = ? AND _offset >= ?",
                            [self.spec.topic, partition, offset],
                        ).fetchall()[0][0]
                    )
                if self._dlq.exists():
                    self._dlq.delete_from(partition, offset)
                self._checkpoints.set(partition, offset)
            if dry_run:
                con.rollback()
            else:
                con.commit()
        except Exception as exc:
            rollback_quietly(con)
            raise classify(exc, self._where, work="this reset") from exc
        return deleted

    # -- lifecycle -------------------------------------------------------------------------
    def close(self) -> None:
        # Often called while a failure propagates; and whatever committed is durable in the
        # write-ahead log even if closing cannot checkpoint it into the file.
        try:
            self._con.close()
        except duckdb.Error as exc:
            log.warning("closing %s: %s", self._where, first_line(exc))


def _newer(incoming: str = _INCOMING) -> str:
    """The guard of ``sinks.changes``: is the incoming message newer than the stored row?"""
    same = f"{_STORED}._topic = {incoming}._topic AND {_STORED}._partition = {incoming}._partition"
    return (
        f"(({same} AND {_STORED}._offset <= {incoming}._offset)"
        f" OR (NOT ({same}) AND {_STORED}._timestamp < {incoming}._timestamp))"
    )
