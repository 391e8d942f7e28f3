"""The target's own account of a pipeline (rows, checkpoints, last load, column types), read
without making a writer wait: a DuckDB file is opened read-only with no wait and skipped while a
load holds it; a server database is read with plain queries.
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Any

import sqlalchemy as sa

from dagster_project.tables import TableReader
from dagster_project.translator import PipelineTranslatorData
from kafka_etl.errors import KafkaEtlError
from sinks.base import CHECKPOINT_TABLE

_DEFAULT_SCHEMA = {"duckdb": "main", "postgresql": "public"}


@dataclass(frozen=True, slots=True)
class TableSide:
    """The target's own account of the pipeline: what is stored and up to where."""

    rows: int | None  # None: the table does not exist yet
    checkpoints: dict[int, int]
    last_load: datetime | None
    column_types: dict[str, str]


def read_table_side(data: PipelineTranslatorData) -> TableSide | None:
    """Rows, checkpoints, last load time and column types; None when the database cannot be
    read without waiting (a DuckDB file a load holds, a database that is down)."""
    try:
        with TableReader.open(data.url, lock_timeout=0.0) as reader:
            return _table_side(reader, data)
    except KafkaEtlError:
        return None


def _table_side(reader: TableReader, data: PipelineTranslatorData) -> TableSide:
    p = data.pipeline
    backend = data.backend
    schema = p.db_schema or _DEFAULT_SCHEMA.get(backend)
    # Only tables that exist are queried: a failed statement would abort a PostgreSQL
    # transaction, and an unknown table is not an error here (no load yet).
    types = column_types(reader, backend, p.table, schema)
    rows = None
    if types:
        table = sa.table(p.table, schema=p.db_schema)
        rows = int(reader.rows(sa.select(sa.func.count()).select_from(table))[0][0])
    checkpoints: dict[int, int] = {}
    last_load = None
    if not column_types(reader, backend, CHECKPOINT_TABLE, schema):
        return TableSide(rows, checkpoints, last_load, types)
    c = sa.table(
        CHECKPOINT_TABLE,
        *map(sa.column, ("pipeline", "topic", "partition", "next_offset", "updated_at")),
        schema=p.db_schema,
    )
    stmt = sa.select(c.c.partition, c.c.next_offset, c.c.updated_at).where(
        c.c.pipeline == p.name, c.c.topic == p.topic
    )
    for part, offset, updated in reader.rows(stmt):
        checkpoints[int(part)] = int(offset)
        when = _utc(updated)
        if when is not None and (last_load is None or when > last_load):
            last_load = when
    return TableSide(rows, checkpoints, last_load, types)


def column_types(
    reader: TableReader, backend: str, table: str, schema: str | None
) -> dict[str, str]:
    """Column name -> the database's own type name (``BIGINT``, ``jsonb``...), from
    ``information_schema`` (SQLite: its declared types); empty for a table not created yet."""
    if backend == "sqlite":
        info = sa.func.pragma_table_info(table).table_valued("name", "type", "cid")
        found = reader.rows(sa.select(info.c.name, info.c.type).order_by(info.c.cid))
        return {str(name): str(kind) for name, kind in found}
    cols = sa.table(
        "columns",
        *map(sa.column, ("table_schema", "table_name", "column_name", "data_type")),
        schema="information_schema",
    )
    where = [cols.c.table_name == table]
    if schema is not None:
        where.append(cols.c.table_schema == schema)
    elif backend in ("mysql", "mariadb"):
        where.append(cols.c.table_schema == sa.func.database())
    ordinal: sa.ColumnClause[Any] = sa.column("ordinal_position")
    stmt = sa.select(cols.c.column_name, cols.c.data_type).where(*where).order_by(ordinal)
    return {str(name): str(kind) for name, kind in reader.rows(stmt)}


def _utc(value: object) -> datetime | None:
    """``updated_at`` as an aware datetime: SQLite returns text, MariaDB a naive UTC value (the
    sinks write ``datetime.now(UTC)``)."""
    if isinstance(value, str):
        try:
            value = datetime.fromisoformat(value)
        except ValueError:
            return None
    if not isinstance(value, datetime):
        return None
    return value if value.tzinfo is not None else value.replace(tzinfo=UTC)
