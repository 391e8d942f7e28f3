"""``_kafka_etl_schema_history``, for every database: every column change applied to a table.

Written once, in SQLAlchemy Core: on DuckDB the statements run on the sink's own connection
through ``sinks.duckdb.core`` (each backend still supplies the table's DDL). Rows are written
by the connection that applies the change: inside the batch's transaction where DDL is
transactional; elsewhere (MySQL/MariaDB) in the DDL step before it (DDL commits implicitly
there, so the history is committed with the change it records, whether or not the batch then
commits).
"""

from __future__ import annotations

from collections.abc import Sequence
from datetime import UTC, datetime

import sqlalchemy as sa
from sqlalchemy.dialects import mysql
from sqlalchemy.engine import Connection, Dialect

from sinks.base import SCHEMA_HISTORY_TABLE, SchemaChange, TableSpec
from sinks.capabilities import capabilities
from sinks.duckdb.core import CoreConnection

#: A SQLAlchemy connection, or DuckDB's through the Core adapter.
Conn = Connection | CoreConnection

Entry = tuple[str, str, str | None, str]  # column, change, old type, new type


def history_table(db_schema: str | None, dialect: Dialect | None = None) -> sa.Table:
    """The table's definition (``dialect`` None: the portable one, for statements only)."""
    bounded = dialect is not None and capabilities(dialect).bounded_text_types
    name_type: sa.types.TypeEngine[str] = sa.String(255) if bounded else sa.Text()
    return sa.Table(
        SCHEMA_HISTORY_TABLE,
        sa.MetaData(),
        sa.Column("pipeline", name_type, nullable=False),
        sa.Column("table_name", name_type, nullable=False),
        sa.Column("column_name", sa.Text(), nullable=False),
        sa.Column("change", sa.String(16), nullable=False),
        sa.Column("old_type", sa.Text(), nullable=True),
        sa.Column("new_type", sa.Text(), nullable=False),
        sa.Column("first_offsets", sa.Text(), nullable=False),
        sa.Column(
            "applied_at",
            mysql.DATETIME(fsp=6) if bounded else sa.DateTime(timezone=True),
            nullable=False,
        ),
        sa.Column("position", sa.Integer(), nullable=False),
        sa.Index(f"{SCHEMA_HISTORY_TABLE}_pipeline", "pipeline", "table_name"),
        schema=db_schema,
        mysql_engine="InnoDB",
        mysql_charset="utf8mb4",
    )


class SchemaHistory:
    def __init__(self, table: sa.Table, spec: TableSpec) -> None:
        self.table = table
        self.spec = spec

    def record(self, conn: Conn, entries: Sequence[Entry], first_offsets: str) -> None:
        if not entries:
            return
        now = datetime.now(UTC)
        conn.execute(
            sa.insert(self.table),
            [
                {
                    "pipeline": self.spec.pipeline,
                    "table_name": self.spec.display_name,
                    "column_name": column,
                    "change": change,
                    "old_type": old,
                    "new_type": new,
                    "first_offsets": first_offsets,
                    "applied_at": now,
                    "position": position,
                }
                for position, (column, change, old, new) in enumerate(entries)
            ],
        )

    def read(self, conn: Conn) -> list[SchemaChange]:
        c = self.table.c
        query = (
            sa.select(
                c.pipeline,
                c.table_name,
                c.column_name,
                c.change,
                c.old_type,
                c.new_type,
                c.first_offsets,
                c.applied_at,
            )
            .where(c.pipeline == self.spec.pipeline, c.table_name == self.spec.display_name)
            .order_by(c.applied_at, c.position)
        )
        return [SchemaChange(*row) for row in conn.execute(query)]

    def created(self, conn: Conn) -> bool:
        """Did this pipeline create its table (which may since have been dropped)?"""
        c = self.table.c
        query = sa.select(sa.func.count()).where(
            c.pipeline == self.spec.pipeline,
            c.table_name == self.spec.display_name,
            c.change == "created",
        )
        return bool(conn.execute(query).scalar())

    def forget(self, conn: Conn) -> None:
        """Delete the history of a table that no longer exists, in the caller's transaction."""
        c = self.table.c
        conn.execute(
            sa.delete(self.table).where(
                c.pipeline == self.spec.pipeline, c.table_name == self.spec.display_name
            )
        )
