"""``_kafka_etl_schema_history`` in DuckDB: its definition (``sinks.history`` writes it)."""

from __future__ import annotations

from sinks.base import SCHEMA_HISTORY_TABLE
from sinks.duckdb.sql import quote

_HISTORY = quote(SCHEMA_HISTORY_TABLE)

CREATE = (
    f"CREATE TABLE IF NOT EXISTS {_HISTORY} ("
    " pipeline VARCHAR NOT NULL, table_name VARCHAR NOT NULL, column_name VARCHAR NOT NULL,"
    " change VARCHAR NOT NULL, old_type VARCHAR, new_type VARCHAR NOT NULL,"
    " first_offsets VARCHAR NOT NULL, applied_at TIMESTAMPTZ NOT NULL, position INTEGER NOT NULL)"
)
