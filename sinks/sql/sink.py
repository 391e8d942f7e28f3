"""A sink for any SQLAlchemy URL: the backend of ``sinks.write`` for SQL databases.

What it supplies: connections and transactions from one engine; the table's definition by
reflection; DDL compiled by the dialect (``sinks.sql.tables``); rows by executemany, or by binary
COPY on PostgreSQL (``sinks.postgres.copy``); upserts by the dialect's own statement.

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
from dataclasses import replace
from typing import Any

import pyarrow as pa
import sqlalchemy as sa
from sqlalchemy import event
from sqlalchemy.engine import URL, Connection, Engine

from kafka_etl.errors import ConfigError, classify, redact
from kafka_etl.extras import extra_for, missing_extra_message
from sinks.base import TableAppeared, TableSpec
from sinks.capabilities import capabilities
from sinks.changes import Changes
from sinks.checkpoints import Checkpoints
from sinks.history import Conn, SchemaHistory, history_table
from sinks.schema import Widening
from sinks.sql import tables
from sinks.sql.arrow import JsonText
from sinks.sql.checkpoints import ensure as ensure_checkpoints
from sinks.sql.dlq import DeadLetters
from sinks.sql.load import Loader
from sinks.sql.markers import DeleteMarkers
from sinks.sql.types import JSON_TYPE
from sinks.write import TransactionalSink


class SqlSink(TransactionalSink):
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
        self.caps = capabilities(url.get_backend_name())
        self._engine = make_engine(url, lock_timeout)
        self._json = JsonText()
        self._table: sa.Table | None = None
        self._schema = None
        self._setup()
        try:
            # The dialect learns the server (MariaDB or MySQL, name limits) on first connect.
            self._engine.connect().close()
            dialect = self._engine.dialect
            self.caps = caps = capabilities(dialect)
            if not fast_path:
                self.caps = caps = replace(caps, copy=False)
            tables.check_spec(spec, dialect)
            if spec.mode == "upsert" and caps.upsert is None:
                msg = f"pipeline {spec.pipeline!r}: mode 'upsert' is not supported on {caps.name}"
                raise ConfigError(msg)
            self._loader = Loader(dialect)
            if caps.copy:
                from sinks.postgres.copy import CopyLoader

                self._loader = CopyLoader(dialect)
            self._dlq = DeadLetters(spec, dialect)
            self._delete_markers = DeleteMarkers(spec, dialect, self._loader)
            checkpoints = tables.checkpoint_table(spec, dialect)
            self._checkpoints = Checkpoints(checkpoints, spec, caps)
            self._history = SchemaHistory(history_table(spec.db_schema, dialect), spec)
            with self._engine.begin() as conn, tables.creating(conn, "bookkeeping tables"):
                tables.ensure_schema(conn, spec)
                ensure_checkpoints(conn, checkpoints, spec)
                self._checkpoints.claim_unclaimed(conn)
                self._history.table.create(conn, checkfirst=True)
            self._refresh()
        except BaseException as exc:
            with contextlib.suppress(Exception):  # the failure to open is the one to report
                self.close()
            if isinstance(exc, Exception):
                raise classify(exc, self.where) from exc
            raise

    @property
    def fast_path(self) -> bool:
        return self.caps.copy

    # -- what the write path asks of a SQL database -------------------------------------------
    @contextmanager
    def _transaction(self, *, commit: bool = True) -> Iterator[Connection]:
        with self._engine.connect() as conn, conn.begin() as transaction:
            yield conn
            if not commit:
                transaction.rollback()

    @contextmanager
    def _reading(self) -> Iterator[Connection]:
        with self._engine.connect() as conn:
            yield conn

    def _refresh(self, conn: Conn | None = None) -> None:
        if not isinstance(conn, Connection):
            with self._engine.connect() as own:
                self._refresh(own)
            return
        table = tables.reflect(conn, self.spec)
        if table is None:
            self._table = self._schema = None
            return
        key = self.spec.key
        if self.spec.mode == "upsert" and not tables.has_unique_key(conn, table, key):
            msg = (
                f"pipeline {self.spec.pipeline!r}: table {self.spec.display_name} has no primary"
                f" key or unique index on {', '.join(key)}, which mode 'upsert' needs (it was"
                " probably created in append mode; load into a new table)"
            )
            raise ConfigError(msg)
        self._table, self._schema = table, tables.arrow_schema(conn, table)

    def column_types(self) -> dict[str, str]:
        if self._table is None:
            return {}
        dialect = self._engine.dialect
        return {c.name: c.type.compile(dialect) for c in self._table.columns}

    def _check_fields(self, fields: tuple[pa.Field, ...]) -> None:
        tables.check_fields(fields, self.spec, self._engine.dialect)

    def _create_table(self, conn: Conn, schema: pa.Schema) -> None:
        conn = _sql(conn)
        table = tables.target_table(schema, self.spec, conn.dialect)
        with tables.creating(conn, self.spec.display_name):
            if tables.reflect(conn, self.spec) is not None:
                raise TableAppeared  # another writer created it meanwhile
            table.create(conn)
        # The definition just created is what reflection would return (and reflecting costs
        # a dozen catalog queries on PostgreSQL, on the first batch of every table).
        self._table, self._schema = table, tables.arrow_schema(conn, table, reflected=False)

    def _alter_table(
        self, conn: Conn, new_fields: tuple[pa.Field, ...], widened: tuple[Widening, ...]
    ) -> None:
        conn = _sql(conn)
        if widened:  # first: SQLite rebuilds the table as ``self._table`` defines it
            tables.widen_columns(
                conn, self._require_table(), {w.name: w.new for w in widened}, self.spec
            )
        for field in new_fields:
            conn.execute(tables.new_column(self._require_table(), field, self.spec, conn.dialect))
        self._refresh(conn)

    def _insert(self, conn: Conn, rows: pa.Table) -> int:
        table = self._require_table()
        rows = tables.in_key_order(table, self._json.encode(rows))
        return self._loader.insert(_sql(conn), table, rows, self._json_columns())

    def _upsert(self, conn: Conn, changes: Changes) -> int:
        """Tombstone deletes first, then the upserts that are newer than them."""
        conn = _sql(conn)
        table = self._require_table()
        deleted = self._loader.delete_tombstones(conn, table, changes.deletes)
        upserts = self._json.encode(changes.upserts)
        self._loader.upsert(conn, table, upserts, self.spec.key, self._json_columns())
        return deleted

    def _markers_exist(self, conn: Conn) -> bool:
        return self._delete_markers.exists(_sql(conn))

    def _create_markers(self, conn: Conn, key_type: pa.DataType) -> None:
        self._delete_markers.create(_sql(conn), key_type)

    def _read_markers(self, conn: Conn, keys: pa.Array) -> pa.Table:
        return self._delete_markers.read(_sql(conn), keys)

    def _write_markers(self, conn: Conn, deletes: pa.Table) -> None:
        self._delete_markers.write(_sql(conn), deletes)

    def _dead_letters_exist(self, conn: Conn) -> bool:
        return self._dlq.exists(_sql(conn))

    def _create_dead_letters(self, conn: Conn) -> None:
        self._dlq.create(_sql(conn))

    def _insert_dead_letters(self, conn: Conn, rejects: pa.Table) -> None:
        self._dlq.insert(_sql(conn), rejects)

    def read_dead_letters(self, limit: int | None = None) -> pa.Table:
        try:
            with self._engine.connect() as conn:
                return self._dlq.read(conn, limit)
        except Exception as exc:
            raise classify(exc, self.where) from exc

    def _json_columns(self) -> set[str]:
        schema = self._schema
        return set() if schema is None else {f.name for f in schema if f.type == JSON_TYPE}

    def _require_table(self) -> sa.Table:
        if self._table is None:  # pragma: no cover - guarded by callers
            msg = f"table {self.spec.display_name} does not exist"
            raise RuntimeError(msg)
        return self._table

    # -- lifecycle -------------------------------------------------------------------------
    def close(self) -> None:
        self._json.close()
        self._engine.dispose()


def _sql(conn: Conn) -> Connection:
    """The write path hands a backend back the connection it opened."""
    assert isinstance(conn, Connection)
    return conn


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
