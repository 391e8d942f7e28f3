"""``_kafka_etl_checkpoints``, for every database: the compare-and-set, in the transaction that
writes the rows. Written once, in SQLAlchemy Core (on DuckDB through ``sinks.duckdb.core``); each
backend supplies only the table's DDL and the migration of its older layout.

``UPDATE ... SET next_offset = :next WHERE ... AND next_offset = :first`` must touch exactly one
row; a partition seen for the first time gets an ``INSERT`` that does nothing when the row exists.
Anything else means another writer moved the checkpoint: ``CheckpointConflictError``, and the
caller rolls back.

Why two concurrent runs can never both commit one range: the ``UPDATE`` takes the row lock, so
the second writer waits until the first commits, then re-reads the row and matches nothing.
PostgreSQL (READ COMMITTED) re-evaluates the ``WHERE`` on the committed row; InnoDB's ``UPDATE``
is a locking read of the latest committed version even under REPEATABLE READ; SQLite takes the
database write lock at ``BEGIN IMMEDIATE``, and DuckDB allows one writing process per file. Two
first inserts race on the primary key: the second waits, then inserts nothing. Stricter
isolation turns the race into a serialization failure or deadlock, which rolls back as well
(classified as transient).

The table is part of the key: a pipeline pointed at another table has no checkpoint there and
loads it from its ``start``, while the old table's checkpoint stays as it was.
"""

from __future__ import annotations

from datetime import UTC, datetime

import sqlalchemy as sa
from sqlalchemy.dialects import mysql, postgresql

from connector.batch import OffsetRange
from kafka_etl.errors import CheckpointConflictError
from sinks.base import CHECKPOINT_TABLE, TableSpec, checkpoint_conflict_message
from sinks.capabilities import Capabilities
from sinks.history import Conn

COLUMNS = ("pipeline", "topic", "table_name", "partition", "next_offset", "updated_at")
# What rows written before checkpoints named their table hold until their pipeline claims them.
UNCLAIMED = ""


def statement_table(db_schema: str | None = None) -> sa.TableClause:
    """The table's columns, for statements only (each backend creates it with its own DDL)."""
    return sa.table(CHECKPOINT_TABLE, *(sa.column(n) for n in COLUMNS), schema=db_schema)


class Checkpoints:
    """One pipeline's rows of ``_kafka_etl_checkpoints``: those of its topic and table."""

    def __init__(self, table: sa.TableClause, spec: TableSpec, caps: Capabilities) -> None:
        self.table = table
        self.spec = spec
        self.caps = caps
        c = table.c
        self._mine = sa.and_(
            c.pipeline == spec.pipeline,
            c.topic == spec.topic,
            c.table_name == spec.display_name,
        )

    def read(self, conn: Conn) -> dict[int, int]:
        c = self.table.c
        rows = conn.execute(sa.select(c.partition, c.next_offset).where(self._mine))
        return {int(p): int(o) for p, o in rows}

    def last_moved(self, conn: Conn) -> datetime | None:
        """When this pipeline's checkpoint in this table last moved, as an aware UTC datetime
        (MariaDB and SQLite return the naive UTC value written, SQLite as text)."""
        latest = conn.execute(sa.select(sa.func.max(self.table.c.updated_at)).where(self._mine))
        value = latest.scalar()
        if isinstance(value, str):
            value = datetime.fromisoformat(value)
        if not isinstance(value, datetime):
            return None
        return value if value.tzinfo is not None else value.replace(tzinfo=UTC)

    def claim_unclaimed(self, conn: Conn) -> None:
        """Rows of this pipeline written before checkpoints named their table belong to its
        current table (by then its rows are still those of that table)."""
        spec = self.spec
        c = self.table.c
        unclaimed = sa.and_(
            c.pipeline == spec.pipeline, c.topic == spec.topic, c.table_name == UNCLAIMED
        )
        if conn.execute(sa.select(sa.func.count()).where(unclaimed)).scalar():
            conn.execute(
                sa.update(self.table).where(unclaimed).values(table_name=spec.display_name)
            )

    def advance(self, conn: Conn, ranges: dict[int, OffsetRange]) -> None:
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
            current = sa.select(c.next_offset).where(self._mine, c.partition == r.partition)
            if self.caps.row_locks:
                current = current.with_for_update()
            found = conn.execute(current).scalar()
            raise CheckpointConflictError(checkpoint_conflict_message(self.spec, r, found))

    def set(self, conn: Conn, partition: int, offset: int) -> None:
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

    def _insert_if_absent(self, conn: Conn, partition: int, offset: int, now: datetime) -> bool:
        """Insert a first checkpoint row; False if one exists (or a concurrent writer won)."""
        row = self._row(partition, offset, now)
        how = self.caps.insert_if_absent
        if how == "on_conflict_do_nothing":
            stmt: sa.Insert = postgresql.insert(self.table).values(row).on_conflict_do_nothing()
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
