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

import sqlalchemy as sa
from sqlalchemy.dialects import mysql, postgresql, sqlite
from sqlalchemy.engine import Connection

from connector.batch import OffsetRange
from kafka_etl.errors import CheckpointConflictError
from sinks.base import TableSpec


class Checkpoints:
    """One pipeline's rows of ``_kafka_etl_checkpoints``."""

    def __init__(self, table: sa.Table, spec: TableSpec) -> None:
        self.table = table
        self.spec = spec
        c = table.c
        self._mine = sa.and_(c.pipeline == spec.pipeline, c.topic == spec.topic)

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
            msg = (
                f"pipeline {self.spec.pipeline!r}: {self.spec.topic}/{r.partition} checkpoint"
                f" moved to {current} while this run was loading from {r.first} (another run"
                " of the same pipeline?); nothing from this batch was committed"
            )
            raise CheckpointConflictError(msg)

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
            "partition": partition,
            "next_offset": offset,
            "updated_at": now,
        }

    def _insert_if_absent(
        self, conn: Connection, partition: int, offset: int, now: datetime
    ) -> bool:
        """Insert a first checkpoint row; False if one exists (or a concurrent writer won)."""
        row = self._row(partition, offset, now)
        name = conn.dialect.name
        if name == "postgresql":
            stmt: sa.Executable = postgresql.insert(self.table).values(row).on_conflict_do_nothing()
        elif name == "sqlite":
            stmt = sqlite.insert(self.table).values(row).on_conflict_do_nothing()
        elif name in ("mysql", "mariadb"):
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
