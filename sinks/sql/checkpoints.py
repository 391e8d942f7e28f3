"""``_kafka_etl_checkpoints`` on SQL databases: the migration of its older layout (the table is
defined in ``sinks.sql.tables``; the compare-and-set is ``sinks.checkpoints``', for every
database).
"""

from __future__ import annotations

from typing import Any

import sqlalchemy as sa
from sqlalchemy.engine import Connection
from sqlalchemy.ext.compiler import compiles
from sqlalchemy.schema import ExecutableDDLElement
from sqlalchemy.sql.compiler import DDLCompiler

from sinks.base import CHECKPOINT_TABLE, TableSpec
from sinks.capabilities import capabilities
from sinks.checkpoints import UNCLAIMED
from sinks.sql import tables


def ensure(conn: Connection, table: sa.Table, spec: TableSpec) -> None:
    """Create the table, or bring one written before checkpoints named their table up to date
    (the caller then claims this pipeline's rows of that time, ``Checkpoints.claim_unclaimed``).

    Migrating adds ``table_name`` to the primary key. PostgreSQL and MySQL/MariaDB do it in one
    ``ALTER TABLE`` (atomic on InnoDB, whose DDL commits at once; in the caller's transaction on
    PostgreSQL); SQLite and others rebuild the table in the transaction. The added column holds
    ``''`` for the rows of other pipelines, which each claims on its own first open.
    """
    table.create(conn, checkfirst=True)
    inspector = sa.inspect(conn)
    columns = {c["name"] for c in inspector.get_columns(CHECKPOINT_TABLE, spec.db_schema)}
    if "table_name" in columns:
        return
    if capabilities(conn.dialect).primary_key_change != "rebuild":
        pk = inspector.get_pk_constraint(CHECKPOINT_TABLE, spec.db_schema).get("name")
        conn.execute(_AddTableToKey(table, pk))
    else:
        _rebuild(conn, table, spec)


def _rebuild(conn: Connection, table: sa.Table, spec: TableSpec) -> None:
    """A copy with the new key replaces the old-layout table (same transaction)."""
    migrating = f"{CHECKPOINT_TABLE}__migrating"
    copy = tables.checkpoint_table(spec, conn.dialect, migrating)
    copy.create(conn)
    names = ("pipeline", "topic", "partition", "next_offset", "updated_at")
    old = sa.table(CHECKPOINT_TABLE, *map(sa.column, names), schema=spec.db_schema)
    o = old.c
    rows = sa.select(
        o.pipeline,
        o.topic,
        sa.literal(UNCLAIMED, sa.String()).label("table_name"),
        o.partition,
        o.next_offset,
        o.updated_at,
    )
    conn.execute(sa.insert(copy).from_select([c.name for c in copy.columns], rows))
    conn.execute(sa.schema.DropTable(table))
    conn.execute(tables.RenameTable(copy, CHECKPOINT_TABLE))


class _AddTableToKey(ExecutableDDLElement):
    """Add ``table_name`` (``''`` for the rows there are) and put it in the primary key."""

    inherit_cache = False

    def __init__(self, table: sa.Table, primary_key: str | None) -> None:
        self.table = table
        self.primary_key = primary_key


@compiles(_AddTableToKey)
def _add_table_to_key(element: _AddTableToKey, compiler: DDLCompiler, **kw: Any) -> str:
    preparer = compiler.preparer
    column = tables.checkpoint_table_column(compiler.dialect, server_default=UNCLAIMED)
    sa.Table(element.table.name, sa.MetaData(), column, schema=element.table.schema)
    spec = compiler.get_column_specification(column)
    key = ", ".join(preparer.quote(n) for n in tables.CHECKPOINT_KEY)
    if capabilities(compiler.dialect).primary_key_change == "drop_primary_key":
        drop = "DROP PRIMARY KEY"
        spec += f" AFTER {preparer.quote('topic')}"
    else:
        drop = f"DROP CONSTRAINT {preparer.quote(element.primary_key or '')}"
    table = preparer.format_table(element.table)
    return f"ALTER TABLE {table} ADD COLUMN {spec}, {drop}, ADD PRIMARY KEY ({key})"
