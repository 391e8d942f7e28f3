"""``_kafka_etl_schema_history`` in DuckDB: column changes, in the batch's transaction."""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

from sinks.base import SCHEMA_HISTORY_TABLE, SchemaChange, TableSpec
from sinks.duckdb.sql import quote

_HISTORY = quote(SCHEMA_HISTORY_TABLE)

CREATE = (
    f"CREATE TABLE IF NOT EXISTS {_HISTORY} ("
    " pipeline VARCHAR NOT NULL, table_name VARCHAR NOT NULL, column_name VARCHAR NOT NULL,"
    " change VARCHAR NOT NULL, old_type VARCHAR, new_type VARCHAR NOT NULL,"
    " first_offsets VARCHAR NOT NULL, applied_at TIMESTAMPTZ NOT NULL, position INTEGER NOT NULL)"
)

Entry = tuple[str, str, str | None, str]  # column, change, old type, new type


def record(con: Any, spec: TableSpec, entries: Sequence[Entry], first_offsets: str) -> None:
    """Insert ``entries`` inside the caller's open transaction."""
    for position, (column, change, old, new) in enumerate(entries):
        con.execute(
            f"INSERT INTO {_HISTORY} VALUES (?, ?, ?, ?, ?, ?, ?, now(), ?)",
            [spec.pipeline, spec.display_name, column, change, old, new, first_offsets, position],
        )


def read(con: Any, spec: TableSpec) -> list[SchemaChange]:
    rows = con.execute(
        "SELECT pipeline, table_name, column_name, change, old_type, new_type, first_offsets,"
        f" applied_at FROM {_HISTORY} WHERE pipeline = ? AND table_name = ?"
        " ORDER BY applied_at, position",
        [spec.pipeline, spec.display_name],
    ).fetchall()
    return [SchemaChange(*row) for row in rows]


def created(con: Any, spec: TableSpec) -> bool:
    """Did this pipeline create its table (which may since have been dropped)?"""
    rows = con.execute(
        f"SELECT count(*) FROM {_HISTORY} WHERE pipeline = ? AND table_name = ?"
        " AND change = 'created'",
        [spec.pipeline, spec.display_name],
    ).fetchall()
    return bool(rows[0][0])


def forget(con: Any, spec: TableSpec) -> None:
    """Delete the history of a table that no longer exists, inside the caller's transaction."""
    con.execute(
        f"DELETE FROM {_HISTORY} WHERE pipeline = ? AND table_name = ?",
        [spec.pipeline, spec.display_name],
    )
