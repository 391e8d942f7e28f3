"""``_kafka_etl_checkpoints`` in DuckDB: its DDL and the migration of its older layout (the
compare-and-set, the reads and the resets are ``sinks.checkpoints``', for every database).

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

from sinks.base import CHECKPOINT_TABLE, TableSpec
from sinks.checkpoints import COLUMNS, UNCLAIMED
from sinks.duckdb.sql import quote

_CHECKPOINTS = quote(CHECKPOINT_TABLE)
_MIGRATING = quote(f"{CHECKPOINT_TABLE}__migrating")
_COLUMNS = ", ".join(COLUMNS)
_DEFINITION = (
    " (pipeline VARCHAR NOT NULL, topic VARCHAR NOT NULL, table_name VARCHAR NOT NULL,"
    " partition INTEGER NOT NULL, next_offset BIGINT NOT NULL, updated_at TIMESTAMPTZ NOT NULL,"
    " PRIMARY KEY (pipeline, topic, table_name, partition))"
)


def ensure(con: Any, spec: TableSpec) -> None:
    """Create the table, or migrate an older layout, inside the caller's transaction (which
    keeps other sinks of this process out, and then claims this pipeline's unclaimed rows)."""
    con.execute(f"CREATE TABLE IF NOT EXISTS {_CHECKPOINTS}{_DEFINITION}")
    if "table_name" not in _columns(con):
        _migrate(con, spec)


def _columns(con: Any) -> set[str]:
    rows = con.execute(
        "SELECT column_name FROM information_schema.columns"
        " WHERE table_name = ? AND table_schema = current_schema()",
        [CHECKPOINT_TABLE],
    ).fetchall()
    return {str(name) for (name,) in rows}


def _migrate(con: Any, spec: TableSpec) -> None:
    """Rebuild a checkpoint table of the old layout with ``table_name`` in its key (DuckDB
    cannot change a primary key in place); the opening pipeline's rows take its table."""
    con.execute(f"CREATE TABLE {_MIGRATING}{_DEFINITION}")
    con.execute(
        f"INSERT INTO {_MIGRATING} ({_COLUMNS})"
        " SELECT pipeline, topic,"
        " CASE WHEN pipeline = ? AND topic = ? THEN ? ELSE ? END,"
        f" partition, next_offset, updated_at FROM {_CHECKPOINTS}",
        [spec.pipeline, spec.topic, spec.display_name, UNCLAIMED],
    )
    con.execute(f"DROP TABLE {_CHECKPOINTS}")
    con.execute(f"ALTER TABLE {_MIGRATING} RENAME TO {_CHECKPOINTS}")
