"""SQLAlchemy Core statements run on a DuckDB connection, so that the bookkeeping tables
(checkpoints, schema history, dead letters) are written by one module for every database.

DuckDB follows PostgreSQL's SQL, so statements are compiled by SQLAlchemy's PostgreSQL dialect
with ``?`` parameters and executed on the sink's own DuckDB connection, in its transaction.
Measured on one DuckDB file (three partitions per batch, commit included): 5.7 ms per batch by
hand-written SQL, 11.6 ms through Core compiled per call, against seconds of row loading per
batch of 200,000 rows; the difference is below the noise of a load (``bench/bench_json.py``
before and after, in the closing note of the one-write-path change).
"""

from __future__ import annotations

from collections.abc import Iterator, Mapping, Sequence
from typing import Any

from sqlalchemy.dialects import postgresql
from sqlalchemy.sql.compiler import SQLCompiler
from sqlalchemy.sql.expression import ClauseElement

_DIALECT = postgresql.dialect(paramstyle="qmark")


class Result:
    """The few parts of SQLAlchemy's ``Result`` the bookkeeping modules use."""

    def __init__(self, rows: list[tuple[Any, ...]], rowcount: int = -1) -> None:
        self._rows = rows
        self.rowcount = rowcount

    def __iter__(self) -> Iterator[tuple[Any, ...]]:
        return iter(self._rows)

    def scalar(self) -> Any:
        return self._rows[0][0] if self._rows else None


class CoreConnection:
    """``execute(statement, parameters)`` of SQLAlchemy Core, on a DuckDB connection."""

    def __init__(self, con: Any) -> None:
        self._con = con

    def execute(
        self,
        statement: ClauseElement,
        parameters: Mapping[str, Any] | Sequence[Mapping[str, Any]] | None = None,
        *,
        execution_options: Mapping[str, Any] | None = None,
    ) -> Result:
        dml = bool(getattr(statement, "is_dml", False))
        if isinstance(parameters, Sequence):  # executemany, as ``conn.execute(insert, rows)``
            if not parameters:
                return Result([], 0)
            compiled = _compile(statement, column_keys=list(parameters[0]))
            order = compiled.positiontup or []
            self._con.executemany(
                compiled.string, [[row[name] for name in order] for row in parameters]
            )
            return Result([])
        compiled = _compile(statement)
        values = {**compiled.params, **(parameters or {})}
        bound = [values[name] for name in compiled.positiontup or []]
        rows = [tuple(row) for row in self._con.execute(compiled.string, bound).fetchall()]
        # DuckDB answers INSERT/UPDATE/DELETE with one row: the count of rows they touched.
        return Result(rows, int(rows[0][0]) if dml and rows else -1)

    def begin_nested(self) -> Any:
        msg = "DuckDB inserts checkpoints with ON CONFLICT DO NOTHING, never in a savepoint"
        raise NotImplementedError(msg)


def _compile(statement: ClauseElement, **kw: Any) -> SQLCompiler:
    compiled = statement.compile(dialect=_DIALECT, **kw)
    assert isinstance(compiled, SQLCompiler)  # a statement, never DDL
    return compiled
