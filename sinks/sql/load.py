"""Writing prepared rows: the generic executemany path, for every SQL database (PostgreSQL's
COPY path is ``sinks.postgres.copy``).

It runs inside the caller's transaction (the one that also moves the checkpoint) and takes rows
whose nested columns are already JSON text (``sinks.sql.arrow.JsonText``).

Generic: one compiled statement goes to the driver's ``executemany`` in chunks of rows whose
parameters stay within SQLAlchemy's per-dialect budget (``insertmanyvalues_max_parameters``:
32700, 999 on SQLite before 3.32) and at most 10,000 rows. psycopg pipelines the statements,
sqlite3 loops in C, and PyMySQL rewrites each chunk into multi-row ``INSERT``s of at most 1 MB
(well under MariaDB's default 16 MB ``max_allowed_packet``).
"""

from __future__ import annotations

from collections.abc import Collection, Sequence
from typing import Any

import pyarrow as pa
import sqlalchemy as sa
from sqlalchemy.engine import Connection, Dialect

from connector.batch import OffsetRange
from sinks.capabilities import capabilities
from sinks.sql import statements
from sinks.sql.arrow import driver_values, parameter_sets, parameter_tuples

_MAX_CHUNK_ROWS = 10_000


class Loader:
    """executemany of one compiled statement, chunked to the dialect's parameter limits.

    The statement is compiled once per batch and handed to the driver with plain tuples
    (``exec_driver_sql``): values are still bound by the driver, but SQLAlchemy's per-row
    parameter processing is skipped, so the few conversions it would do are done on the Arrow
    columns instead (``sinks.sql.arrow.driver_values``).
    """

    def __init__(self, dialect: Dialect) -> None:
        self.dialect = dialect
        self.caps = capabilities(dialect)
        self._limit = int(dialect.insertmanyvalues_max_parameters)

    def insert(
        self, conn: Connection, table: sa.Table, rows: pa.Table, json_columns: Collection[str]
    ) -> int:
        binds = statements.value_binds(table, rows.column_names, json_columns, self.caps)
        self._execute_many(conn, statements.insert_values(table, binds), rows)
        return rows.num_rows

    def upsert(
        self,
        conn: Connection,
        table: sa.Table,
        rows: pa.Table,
        key: tuple[str, ...],
        json_columns: Collection[str],
    ) -> int:
        binds = statements.value_binds(table, rows.column_names, json_columns, self.caps)
        statement = statements.upsert_values(table, binds, key, self.caps)
        self._execute_many(conn, statement, rows)
        return rows.num_rows

    def delete_tombstones(self, conn: Connection, table: sa.Table, tombstones: pa.Table) -> int:
        """Guarded deletes by Kafka key; returns the rows deleted."""
        names = [*statements.ORDER_COLUMNS, "_key"]
        statement = statements.delete_tombstones(table)
        return self._execute_many(conn, statement, tombstones.select(names))

    def delete_ranges(
        self, conn: Connection, table: sa.Table, topic: str, ranges: Sequence[OffsetRange]
    ) -> int:
        deleted = 0
        statement = statements.delete_ranges(table, topic)
        for r in ranges:
            result = conn.execute(statement, {"part": r.partition, "lo": r.first, "hi": r.next})
            deleted += max(result.rowcount, 0)
        return deleted

    def _execute_many(self, conn: Connection, statement: sa.ClauseElement, rows: pa.Table) -> int:
        """Run ``statement`` (parameters ``p0..pN`` = the columns of ``rows``) once per row;
        returns the rows it affected as the driver counts them."""
        if rows.num_rows == 0:
            return 0
        compiled = statement.compile(dialect=conn.dialect)
        values = driver_values(rows, self.caps)
        order: list[str] | None = getattr(compiled, "positiontup", None)
        step = max(1, min(_MAX_CHUNK_ROWS, self._limit // max(rows.num_columns, 1)))
        affected = 0
        for start in range(0, values.num_rows, step):
            chunk = values.slice(start, step)
            params: Any = (
                parameter_tuples(chunk, [int(name[1:]) for name in order])
                if order is not None
                else parameter_sets(chunk)
            )
            result = conn.exec_driver_sql(compiled.string, params)
            affected += max(result.rowcount, 0)
        return affected
