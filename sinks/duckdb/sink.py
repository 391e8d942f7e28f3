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
from collections.abc import Iterator, Mapping
from contextlib import contextmanager
from pathlib import Path
from typing import Any

import duckdb
import pyarrow as pa

from connector.batch import Batch
from connector.names import IDENTITY_COLUMNS
from kafka_etl.errors import ConfigError, classify, first_line
from sinks.base import TableAppeared, TableSpec
from sinks.capabilities import DUCKDB
from sinks.changes import Changes
from sinks.checkpoints import Checkpoints, statement_table
from sinks.delete_markers import MARKER_COLUMNS
from sinks.duckdb import history
from sinks.duckdb.checkpoints import ensure as ensure_checkpoints
from sinks.duckdb.core import CoreConnection
from sinks.duckdb.dlq import DeadLetters
from sinks.duckdb.markers import DeleteMarkers
from sinks.duckdb.sql import column_list, qualified, quote, registered, rollback_quietly
from sinks.history import Conn, SchemaHistory, history_table
from sinks.schema import Widening
from sinks.write import TransactionalSink

log = logging.getLogger(__name__)

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
            # DuckDB draws a bar on stdout for a query over 2 s (on a busy machine, a write):
            # that would land in the middle of `kafka-etl run --json`'s output.
            "enable_progress_bar": False,
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


class DuckDBSink(TransactionalSink):
    """Rows and checkpoints of one pipeline in one DuckDB file."""

    def __init__(
        self,
        path: str,
        spec: TableSpec,
        *,
        lock_timeout: float = 60.0,
        settings: Mapping[str, str] | None = None,
    ) -> None:
        self.spec = spec
        self.caps = DUCKDB
        self.path = path
        self._name = qualified(spec.table, spec.db_schema)
        self.where = f"duckdb {path}"
        self._con = connect(path, lock_timeout=lock_timeout, settings=settings)
        self._core = CoreConnection(self._con)
        self._checkpoints = Checkpoints(statement_table(), spec, DUCKDB)
        self._history = SchemaHistory(history_table(None), spec)
        self._dlq = DeadLetters(self._con, spec)
        self._delete_markers = DeleteMarkers(self._con, spec)
        self._setup()
        try:
            with _CREATING, self._transaction() as core:
                ensure_checkpoints(self._con, spec)
                self._checkpoints.claim_unclaimed(core)
                self._con.execute(history.CREATE)
            self._schema = self._read_schema()
        except BaseException as exc:
            self.close()
            if isinstance(exc, Exception):
                raise classify(exc, self.where) from exc
            raise

    # -- what the write path asks of DuckDB ---------------------------------------------------
    @contextmanager
    def _transaction(self, *, commit: bool = True) -> Iterator[Conn]:
        con = self._con
        con.begin()
        try:
            yield self._core
            if commit:
                con.commit()
            else:
                con.rollback()
        except BaseException:
            # The failure is what the user hears about: neither a rollback that finds no
            # transaction (a failed commit) nor a database invalidated by a fatal error (a full
            # disk while checkpointing) may replace it.
            rollback_quietly(con)
            raise

    @contextmanager
    def _reading(self) -> Iterator[Conn]:
        yield self._core

    def _refresh(self, conn: Conn | None = None) -> None:
        try:
            self._schema = self._read_schema()
        except duckdb.Error:
            self._schema = None
            raise

    def column_types(self) -> dict[str, str]:
        rows = self._con.execute(
            "SELECT column_name, data_type FROM information_schema.columns"
            " WHERE table_name = ? AND table_schema = coalesce(?, current_schema())"
            " ORDER BY ordinal_position",
            [self.spec.table, self.spec.db_schema],
        ).fetchall()
        return {str(name): str(kind) for name, kind in rows}

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

    def _create_table(self, conn: Conn, schema: pa.Schema) -> None:
        con = self._con
        if self._read_schema() is not None:
            raise TableAppeared  # another sink of this process created it meanwhile
        if self.spec.db_schema:
            con.execute(f"CREATE SCHEMA IF NOT EXISTS {quote(self.spec.db_schema)}")
        with registered(con, _BATCH_VIEW, schema.empty_table()):
            con.execute(f"CREATE TABLE {self._name} AS SELECT * FROM {quote(_BATCH_VIEW)} LIMIT 0")
        self._create_index()
        self._schema = self._read_schema()

    def _alter_table(
        self, conn: Conn, new_fields: tuple[pa.Field, ...], widened: tuple[Widening, ...]
    ) -> None:
        con = self._con
        if widened:
            # DuckDB refuses ALTER ... TYPE on a table with an index: drop and rebuild it.
            con.execute(f"DROP INDEX {self._index_name()}")
            for w in widened:
                type_name = self._type_name(pa.field(w.name, w.new))
                con.execute(
                    f"ALTER TABLE {self._name} ALTER COLUMN {quote(w.name)} TYPE {type_name}"
                )
            self._create_index()
        for field in new_fields:
            type_name = self._type_name(field)
            con.execute(f"ALTER TABLE {self._name} ADD COLUMN {quote(field.name)} {type_name}")
        self._schema = self._read_schema()

    def _insert(self, conn: Conn, rows: pa.Table) -> int:
        with registered(self._con, _BATCH_VIEW, rows):
            self._con.execute(
                f"INSERT INTO {self._name} BY NAME SELECT * FROM {quote(_BATCH_VIEW)}"
            )
        return rows.num_rows

    def _upsert(self, conn: Conn, changes: Changes) -> int:
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
        stored = self._schema.names if self._schema else []
        self._guarded_upsert(self._name, changes.upserts, self.spec.key, stored)
        return deleted

    def _guarded_upsert(
        self, name: str, rows: pa.Table, key: tuple[str, ...], stored: list[str]
    ) -> None:
        """``INSERT ... ON CONFLICT (key) DO UPDATE ... WHERE`` newer, into table ``name``
        whose columns are ``stored``."""
        if rows.num_rows == 0:
            return
        names = rows.column_names
        # Columns this batch lacks are set to NULL: the message is the key's whole new state.
        absent = [n for n in stored if n not in names]
        updates = [f"{quote(n)} = excluded.{quote(n)}" for n in names if n not in key]
        updates += [f"{quote(n)} = NULL" for n in absent if n not in key]
        with registered(self._con, _BATCH_VIEW, rows):
            self._con.execute(
                f"INSERT INTO {name} AS {_STORED} ({column_list(names)})"
                f" SELECT {column_list(names)} FROM {quote(_BATCH_VIEW)}"
                f" ON CONFLICT ({column_list(key)}) DO UPDATE SET {', '.join(updates)}"
                f" WHERE {_newer('excluded')}"
            )

    def _markers_exist(self, conn: Conn) -> bool:
        return self._delete_markers.exists()

    def _create_markers(self, conn: Conn, key_type: pa.DataType) -> None:
        self._delete_markers.create(key_type)

    def _read_markers(self, conn: Conn, keys: pa.Array) -> pa.Table:
        return self._delete_markers.read(keys)

    def _write_markers(self, conn: Conn, deletes: pa.Table) -> None:
        name = self._delete_markers.name
        self._guarded_upsert(name, deletes, ("_key",), list(MARKER_COLUMNS))

    def _delete_offsets(self, conn: Conn, batch: Batch) -> int:
        return self._dlq.delete_offsets(self._name, batch)

    def _dead_letters_exist(self, conn: Conn) -> bool:
        return self._dlq.exists()

    def _create_dead_letters(self, conn: Conn) -> None:
        self._dlq.create()

    def _insert_dead_letters(self, conn: Conn, rejects: pa.Table) -> None:
        self._dlq.insert(rejects)

    def read_dead_letters(self, limit: int | None = None) -> pa.Table:
        return self._dlq.read(limit)

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
        unique = self.spec.key if self.spec.mode == "upsert" else IDENTITY_COLUMNS
        self._con.execute(
            f"CREATE UNIQUE INDEX {self._index_name(bare=True)} ON {self._name}"
            f" ({column_list(unique)})"
        )

    # -- lifecycle -------------------------------------------------------------------------
    def close(self) -> None:
        # Often called while a failure propagates; and whatever committed is durable in the
        # write-ahead log even if closing cannot checkpoint it into the file.
        try:
            self._con.close()
        except duckdb.Error as exc:
            log.warning("closing %s: %s", self.where, first_line(exc))


def _newer(incoming: str = _INCOMING) -> str:
    """The guard of ``sinks.changes``: is the incoming message newer than the stored row?"""
    same = f"{_STORED}._topic = {incoming}._topic AND {_STORED}._partition = {incoming}._partition"
    return (
        f"(({same} AND {_STORED}._offset <= {incoming}._offset)"
        f" OR (NOT ({same}) AND {_STORED}._timestamp < {incoming}._timestamp))"
    )
