"""The checkpoint compare-and-set, in the transaction that writes the rows.

``UPDATE ... SET next_offset = :next WHERE ... AND next_offset = :first`` must touch exactly one
row; a partition seen for the first time gets an ``INSERT`` that does nothing when the row exists.
Anything else means another writer moved the checkpoint: ``CheckpointConflictError``, and the
caller rolls back.

Why two concurrent runs can never both commit one range: the ``UPDATE`` takes the row lock, so
the second writer waits until the first commits, then re-reads the row and matches nothing.
PostgreSQL (READ COMMITTED) re-evaluates the ``WHERE`` on the committed row; InnoDB's ``UPDATE``
is a locking read of the latest committed version even under REPEATABLE READ; SQLite takes the
database write lock at ``BEGIN IMMEDIATE``. Two first inserts race on the primary key: the
second waits, then inserts nothing. Stricter isolation turns the race into a serialization
failure or deadlock, which rolls back as well (classified as transient).
"""

from __future__ import annotations

from datetime import UTC, datetime
from typing import Any

import sqlalchemy as sa
from sqlalchemy.dialects import mysql, postgresql
from sqlalchemy.engine import Connection
from sqlalchemy.ext.compiler import compiles
from sqlalchemy.schema import ExecutableDDLElement
from sqlalchemy.sql.compiler import DDLCompiler

from connector.batch import OffsetRange
from kafka_etl.errors import CheckpointConflictError
from sinks.base import CHECKPOINT_TABLE, TableSpec, checkpoint_conflict_message
from sinks.capabilities import capabilities
from sinks.sql import tables

# What rows written before checkpoints named their table hold until their pipeline claims them.
UNCLAIMED = ""


class Checkpoints:
    """One pipeline's rows of ``_kafka_etl_checkpoints``: those of its topic and table.

    The table is part of the key: a pipeline pointed at another table has no checkpoint there
    and loads it from its ``start``, while the old table's checkpoint stays as it was.
    """

    def __init__(self, table: sa.Table, spec: TableSpec) -> None:
        self.table = table
        self.spec = spec
        c = table.c
        self._mine = sa.and_(
            c.pipeline == spec.pipeline,
            c.topic == spec.topic,
            c.table_name == spec.display_name,
        )

    def ensure(self, conn: Connection) -> None:
        """Create the table, or bring one written before checkpoints named their table up to
        date, and claim this pipeline's rows of that time for its current table.

        Migrating adds ``table_name`` to the primary key. PostgreSQL and MySQL/MariaDB do it
        in one ``ALTER TABLE`` (atomic on InnoDB, whose DDL commits at once; in the caller's
        transaction on PostgreSQL); SQLite and others rebuild the table in the transaction.
        The added column holds ``''`` for the rows of other pipelines, which each claims on
        its own first open (by then its rows are still those of its current table).
        """
        spec = self.spec
        self.table.create(conn, checkfirst=True)
        inspector = sa.inspect(conn)
        columns = {c["name"] for c in inspector.get_columns(CHECKPOINT_TABLE, spec.db_schema)}
        if "table_name" not in columns:
            if capabilities(conn.dialect).primary_key_change != "rebuild":
                pk = inspector.get_pk_constraint(CHECKPOINT_TABLE, spec.db_schema).get("name")
                conn.execute(_AddTableToKey(self.table, pk))
            else:
                self._rebuild(conn)
        c = self.table.c
        unclaimed = sa.and_(
            c.pipeline == spec.pipeline, c.topic == spec.topic, c.table_name == UNCLAIMED
        )
        if conn.execute(sa.select(sa.func.count()).where(unclaimed)).scalar():
            conn.execute(
                sa.update(self.table).where(unclaimed).values(table_name=spec.display_name)
            )

    def _rebuild(self, conn: Connection) -> None:
        """A copy with the new key replaces the old-layout table (same transaction)."""
        migrating = f"{CHECKPOINT_TABLE}__migrating"
        copy = tables.checkpoint_table(self.spec, conn.dialect, migrating)
        copy.create(conn)
        names = ("pipeline", "topic", "partition", "next_offset", "updated_at")
        old = sa.table(CHECKPOINT_TABLE, *map(sa.column, names), schema=self.spec.db_schema)
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
        conn.execute(sa.schema.DropTable(self.table))
        conn.execute(tables.RenameTable(copy, CHECKPOINT_TABLE))

    def read(self, conn: Connection) -> dict[int, int]:
        c = self.table.c
        rows = conn.execute(sa.select(c.partition, c.next_offset).where(self._mine))
        return {int(p): int(o) for p, o in rows}

    def advance(self, conn: Connection, ranges: dict[int, OffsetRange]) -> None:
        """Compare-and-set each partition from ``first`` to ``next``."""
        c = self.table.c
        now = datetime.now(UTC)
        # In partition order, as every writer does: two transactions never wait on each
        # other's rows in opposite orders (a deadlock that would roll both races back).
        for r in sorted(ranges.values(), key=lambda r: r.partition):
            moved = conn.execute(
                sa.update(self.table)
                .where(self._mine, c.partition == r.partition, c.next_offset == r.first)
                .values(next_offset=r.next, updated_at=now)
            )
            if moved.rowcount == 1:
                continue
            if self._insert_if_absent(conn, r.partition, r.next, now):
                continue
            current = conn.execute(
                sa.select(c.next_offset)
                .where(self._mine, c.partition == r.partition)
                .with_for_update()
            ).scalar()
            raise CheckpointConflictError(checkpoint_conflict_message(self.spec, r, current))

    def set(self, conn: Connection, partition: int, offset: int) -> None:
        """Move a checkpoint unconditionally (reset)."""
        c = self.table.c
        now = datetime.now(UTC)
        moved = conn.execute(
            sa.update(self.table)
            .where(self._mine, c.partition == partition)
            .values(next_offset=offset, updated_at=now)
        )
        if moved.rowcount == 0:
            conn.execute(sa.insert(self.table).values(self._row(partition, offset, now)))

    def _row(self, partition: int, offset: int, now: datetime) -> dict[str, object]:
        return {
            "pipeline": self.spec.pipeline,
            "topic": self.spec.topic,
            "table_name": self.spec.display_name,
            "partition": partition,
            "next_offset": offset,
            "updated_at": now,
        }

    def _insert_if_absent(
        self, conn: Connection, partition: int, offset: int, now: datetime
    ) -> bool:
        """Insert a first checkpoint row; False if one exists (or a concurrent writer won)."""
        row = self._row(partition, offset, now)
        how = capabilities(conn.dialect).insert_if_absent
        if how == "on_conflict_do_nothing":
            stmt: sa.Executable = postgresql.insert(self.table).values(row).on_conflict_do_nothing()
        elif how == "insert_ignore":
            stmt = mysql.insert(self.table).values(row).prefix_with("IGNORE")
        else:
            # No portable "insert unless present": let the primary key refuse it in a savepoint.
            savepoint = conn.begin_nested()
            try:
                conn.execute(sa.insert(self.table).values(row))
            except sa.exc.IntegrityError:
                savepoint.rollback()
                return False
            savepoint.commit()
            return True
        # SQLAlchemy keeps an INSERT's rowcount only when asked to.
        result = conn.execute(stmt, execution_options={"preserve_rowcount": True})
        return bool(result.rowcount == 1)


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
