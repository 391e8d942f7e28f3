"""``_kafka_etl_checkpoints`` in DuckDB: the next offset per pipeline, topic, table, partition.

The table is part of the key: a pipeline pointed at another table has no checkpoint there and
loads it from its ``start``, while the old table's checkpoint stays as it was (and is used
again if the pipeline is pointed back).

Files written before checkpoints named their table (key ``pipeline, topic, partition``) are
brought up to date on first open, in one transaction: the table is rebuilt with the
``table_name`` column, whose rows take the opening pipeline's current table; other pipelines'
rows get ``''`` and are claimed the same way when each of those pipelines first opens the file.
"""

from __future__ import annotations

from typing import Any

from connector.batch import OffsetRange
from kafka_etl.errors import CheckpointConflictError
from sinks.base import CHECKPOINT_TABLE, TableSpec, checkpoint_conflict_message
from sinks.duckdb.sql import quote, rollback_quietly

_CHECKPOINTS = quote(CHECKPOINT_TABLE)
_MIGRATING = quote(f"{CHECKPOINT_TABLE}__migrating")
_COLUMNS = "pipeline, topic, table_name, partition, next_offset, updated_at"
_DEFINITION = (
    " (pipeline VARCHAR NOT NULL, topic VARCHAR NOT NULL, table_name VARCHAR NOT NULL,"
    " partition INTEGER NOT NULL, next_offset BIGINT NOT NULL, updated_at TIMESTAMPTZ NOT NULL,"
    " PRIMARY KEY (pipeline, topic, table_name, partition))"
)
_MINE = "pipeline = ? AND topic = ? AND table_name = ?"
# What rows written before checkpoints named their table hold until their pipeline claims them.
UNCLAIMED = ""


class Checkpoints:
    """One pipeline's rows of ``_kafka_etl_checkpoints``, on the sink's connection."""

    def __init__(self, con: Any, spec: TableSpec) -> None:
        self._con = con
        self.spec = spec
        self._mine = [spec.pipeline, spec.topic, spec.display_name]

    def ensure(self) -> None:
        """Create the table, or migrate an older layout, and claim this pipeline's unclaimed
        rows, in one transaction (the caller keeps other sinks of this process out)."""
        con = self._con
        con.begin()
        try:
            con.execute(f"CREATE TABLE IF NOT EXISTS {_CHECKPOINTS}{_DEFINITION}")
            if "table_name" not in self._columns():
                self._migrate()
            elif self._unclaimed():
                con.execute(
                    f"UPDATE {_CHECKPOINTS} SET table_name = ?"
                    " WHERE pipeline = ? AND topic = ? AND table_name = ?",
                    [self.spec.display_name, self.spec.pipeline, self.spec.topic, UNCLAIMED],
                )
            con.commit()
        except BaseException:
            rollback_quietly(con)
            raise

    def _columns(self) -> set[str]:
        rows = self._con.execute(
            "SELECT column_name FROM information_schema.columns"
            " WHERE table_name = ? AND table_schema = current_schema()",
            [CHECKPOINT_TABLE],
        ).fetchall()
        return {str(name) for (name,) in rows}

    def _unclaimed(self) -> bool:
        rows = self._con.execute(
            f"SELECT count(*) FROM {_CHECKPOINTS} WHERE {_MINE}",
            [self.spec.pipeline, self.spec.topic, UNCLAIMED],
        ).fetchall()
        return bool(rows[0][0])

    def _migrate(self) -> None:
        """Rebuild a checkpoint table of the old layout with ``table_name`` in its key (DuckDB
        cannot change a primary key in place); inside the caller's transaction."""
        con = self._con
        con.execute(f"CREATE TABLE {_MIGRATING}{_DEFINITION}")
        con.execute(
            f"INSERT INTO {_MIGRATING} ({_COLUMNS})"
            " SELECT pipeline, topic,"
            " CASE WHEN pipeline = ? AND topic = ? THEN ? ELSE ? END,"
            f" partition, next_offset, updated_at FROM {_CHECKPOINTS}",
            [self.spec.pipeline, self.spec.topic, self.spec.display_name, UNCLAIMED],
        )
        con.execute(f"DROP TABLE {_CHECKPOINTS}")
        con.execute(f"ALTER TABLE {_MIGRATING} RENAME TO {_CHECKPOINTS}")

    def read(self) -> dict[int, int]:
        rows = self._con.execute(
            f"SELECT partition, next_offset FROM {_CHECKPOINTS} WHERE {_MINE}", self._mine
        ).fetchall()
        return {int(p): int(o) for p, o in rows}

    def advance(self, ranges: dict[int, OffsetRange]) -> None:
        """Compare-and-set each partition's checkpoint from ``first`` to ``next``."""
        con = self._con
        for r in ranges.values():
            updated = con.execute(
                f"UPDATE {_CHECKPOINTS} SET next_offset = ?, updated_at = now()"
                f" WHERE {_MINE} AND partition = ? AND next_offset = ?",
                [r.next, *self._mine, r.partition, r.first],
            ).fetchall()[0][0]
            if updated == 1:
                continue
            current = con.execute(
                f"SELECT next_offset FROM {_CHECKPOINTS} WHERE {_MINE} AND partition = ?",
                [*self._mine, r.partition],
            ).fetchall()
            if current:
                msg = checkpoint_conflict_message(self.spec, r, int(current[0][0]))
                raise CheckpointConflictError(msg)
            con.execute(
                f"INSERT INTO {_CHECKPOINTS} ({_COLUMNS}) VALUES (?, ?, ?, ?, ?, now())",
                [*self._mine, r.partition, r.next],
            )

    def set(self, partition: int, offset: int) -> None:
        """Move a checkpoint unconditionally (reset), inside the caller's transaction."""
        self._con.execute(
            f"INSERT INTO {_CHECKPOINTS} ({_COLUMNS}) VALUES (?, ?, ?, ?, ?, now())"
            " ON CONFLICT DO UPDATE SET next_offset = excluded.next_offset,"
            " updated_at = excluded.updated_at",
            [*self._mine, partition, offset],
        )
