"""The dead-letter table ``<table>__dlq`` on SQL databases: its definition, DDL, insert and read
(the deletes of a replay, a resolve and a reset are ``sinks.dead_letter_table``'s).

Defined through SQLAlchemy like the target table: raw key and value as ``BYTEA``/``LONGBLOB``/
``BLOB`` (a 5 MB value fits everywhere), primary key ``(_topic, _partition, _offset)``.
Created with ``checkfirst`` inside the transaction that first needs it (on MySQL/MariaDB that
DDL commits on its own, which leaves at most an empty table behind a failed batch).
"""

from __future__ import annotations

from datetime import UTC, datetime
from typing import Any

import pyarrow as pa
import sqlalchemy as sa
from sqlalchemy.engine import Connection, Dialect

from connector.dead_letters import DLQ_SCHEMA
from connector.names import IDENTITY_COLUMNS
from kafka_etl.errors import ConfigError
from sinks.base import TableSpec
from sinks.dead_letter_table import FIRST_SEEN, dlq_table_name
from sinks.sql.load import Loader
from sinks.sql.tables import check_name, creating
from sinks.sql.types import bounded_text, column_type, exact_collation

_KAFKA_TOPIC_CHARS = 249
_SCHEMA = DLQ_SCHEMA.append(FIRST_SEEN)


def dlq_table(spec: TableSpec, dialect: Dialect) -> sa.Table:
    name = dlq_table_name(spec.table)
    problem = check_name(name, dialect, "dead-letter table")
    if problem:
        msg = f"pipeline {spec.pipeline!r}: {problem} (shorten 'table')"
        raise ConfigError(msg)
    columns = []
    for field in _SCHEMA:
        sql: Any = column_type(field.type, dialect)
        if field.name == "_topic" and bounded_text(dialect):
            sql = sa.String(_KAFKA_TOPIC_CHARS, collation=exact_collation(dialect))
        columns.append(sa.Column(field.name, sql, nullable=field.nullable, autoincrement=False))
    return sa.Table(
        name,
        sa.MetaData(),
        *columns,
        sa.PrimaryKeyConstraint(*IDENTITY_COLUMNS),
        schema=spec.db_schema,
        mysql_engine="InnoDB",
        mysql_charset="utf8mb4",
    )


class DeadLetters:
    """One pipeline's dead-letter table; the writing methods run in the caller's transaction."""

    def __init__(self, spec: TableSpec, dialect: Dialect) -> None:
        self.spec = spec
        self.table = dlq_table(spec, dialect)
        self._loader = Loader(dialect)

    def create(self, conn: Connection) -> None:
        """Create the table unless it exists, taking turns with other writers creating it."""
        with creating(conn, self.table.name):
            self.table.create(conn, checkfirst=True)

    def exists(self, conn: Connection) -> bool:
        return bool(sa.inspect(conn).has_table(self.table.name, schema=self.spec.db_schema))

    def insert(self, conn: Connection, rejects: pa.Table) -> None:
        now = pa.array([datetime.now(UTC)] * rejects.num_rows, FIRST_SEEN.type)
        self._loader.insert(conn, self.table, rejects.append_column(FIRST_SEEN, now), set())

    def read(self, conn: Connection, limit: int | None) -> pa.Table:
        if not self.exists(conn):
            return _SCHEMA.empty_table()
        c = self.table.c
        query = (
            sa.select(*(c[n] for n in _SCHEMA.names))
            .where(c._topic == self.spec.topic)
            .order_by(c._partition, c._offset)
            .limit(limit)
        )
        rows = conn.execute(query).all()
        columns = list(zip(*rows, strict=True)) if rows else [()] * len(_SCHEMA)
        arrays = [
            pa.array([plain_value(v) for v in column], field.type)
            for column, field in zip(columns, _SCHEMA, strict=True)
        ]
        return pa.Table.from_arrays(arrays, schema=_SCHEMA)


def plain_value(value: Any) -> Any:
    """memoryview (psycopg's bytea) as bytes; naive datetimes are UTC wall time."""
    if isinstance(value, memoryview):
        return value.tobytes()
    if isinstance(value, datetime) and value.tzinfo is None:
        return value.replace(tzinfo=UTC)
    return value
