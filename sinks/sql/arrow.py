"""Arrow micro-batches to what a database driver takes: JSON text and parameter sets.

Nested values become JSON text in one vectorised pass through an in-memory DuckDB (``to_json``
on the Arrow columns, no per-value Python); everything else stays columnar until the last step.
"""

from __future__ import annotations

import threading
from typing import Any

import duckdb
import pyarrow as pa

from sinks.capabilities import Capabilities
from sinks.duckdb.sql import registered
from sinks.sql.types import stored_as_json

_VIEW = "_kafka_etl_nested"


class JsonText:
    """Replaces nested columns of a table by their JSON text (one DuckDB scan per batch).

    Safe to share between threads: each thread that encodes gets its own DuckDB connection
    (a connection runs one query at a time), all closed by ``close``.
    """

    def __init__(self) -> None:
        self._local = threading.local()
        self._lock = threading.Lock()
        self._cons: list[Any] = []

    def _connection(self) -> Any:
        con = getattr(self._local, "con", None)
        if con is None:
            con = self._local.con = duckdb.connect()
            with self._lock:
                self._cons.append(con)
        return con

    def encode(self, rows: pa.Table) -> pa.Table:
        nested = [i for i, f in enumerate(rows.schema) if stored_as_json(f.type)]
        if not nested or rows.num_rows == 0:
            return _strings_for(rows, nested)
        con = self._connection()
        names = [f"c{i}" for i in nested]
        source = pa.table([rows.column(i) for i in nested], names=names)
        select = ", ".join(f"CAST(to_json({n}) AS VARCHAR) AS {n}" for n in names)
        with registered(con, _VIEW, source):
            text = con.sql(f"SELECT {select} FROM {_VIEW}").to_arrow_table()
        for i, name in zip(nested, names, strict=True):
            rows = rows.set_column(i, rows.schema.field(i).name, text.column(name))
        return rows

    def close(self) -> None:
        with self._lock:
            cons, self._cons = self._cons, []
        for con in cons:
            con.close()
        self._local = threading.local()


def _strings_for(rows: pa.Table, nested: list[int]) -> pa.Table:
    """An empty batch: nested columns become (empty) text columns."""
    for i in nested:
        name = rows.schema.field(i).name
        rows = rows.set_column(i, name, pa.array([], pa.string()))
    return rows


def utc_wall_time(rows: pa.Table) -> pa.Table:
    """Time-zone-aware timestamps as naive UTC (for databases without time zones, and COPY)."""
    for i, field in enumerate(rows.schema):
        if pa.types.is_timestamp(field.type) and field.type.tz is not None:
            naive = rows.column(i).cast(pa.timestamp(field.type.unit))
            rows = rows.set_column(i, field.name, naive)
    return rows


def driver_values(rows: pa.Table, caps: Capabilities) -> pa.Table:
    """Columns as the DB-API driver binds them without SQLAlchemy's type processing.

    psycopg takes zoned datetimes; PyMySQL takes UTC wall time; sqlite3 gets the exact text
    SQLAlchemy's SQLite types store (fixed-width, so stored timestamps compare as text).
    """
    if caps.driver_values == "as_is":
        return rows
    rows = utc_wall_time(rows)
    if caps.driver_values != "sqlite_text":
        return rows
    for i, field in enumerate(rows.schema):
        t = field.type
        if pa.types.is_timestamp(t):
            text = rows.column(i).cast(pa.timestamp("us")).cast(pa.string())
        elif pa.types.is_date(t):
            text = rows.column(i).cast(pa.string())
        elif pa.types.is_time(t):
            text = rows.column(i).cast(pa.time64("us")).cast(pa.string())
        elif pa.types.is_decimal(t):
            text = rows.column(i).cast(pa.float64())
        else:
            continue
        rows = rows.set_column(i, field.name, text)
    return rows


def parameter_tuples(rows: pa.Table, order: list[int]) -> list[tuple[Any, ...]]:
    """One tuple per row, of the columns in ``order`` (positional paramstyles)."""
    columns = [rows.column(i).to_pylist() for i in order]
    return list(zip(*columns, strict=True))


def parameter_sets(rows: pa.Table) -> list[dict[str, Any]]:
    """One ``{"p0": ..., "p1": ...}`` dict per row, in column order."""
    names = [f"p{i}" for i in range(rows.num_columns)]
    columns = [rows.column(i).to_pylist() for i in range(rows.num_columns)]
    return [dict(zip(names, values, strict=True)) for values in zip(*columns, strict=True)]
