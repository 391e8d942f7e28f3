"""Identifier quoting for DuckDB statements, done by SQLAlchemy's PostgreSQL preparer, and the
cleanup that must never hide the error it cleans up after.

DuckDB follows PostgreSQL's identifier rules (double quotes, doubled to escape), so the
statements below never interpolate a name that has not been through the preparer, and every
value is a bound ``?`` parameter.
"""

from __future__ import annotations

import contextlib
from collections.abc import Iterator
from typing import TYPE_CHECKING, Any

import duckdb
import pyarrow as pa
from sqlalchemy.dialects import postgresql

if TYPE_CHECKING:
    from sinks.base import TableSpec

_preparer = postgresql.dialect().identifier_preparer


def quote(name: str) -> str:
    """Always quote: a JSON field name is data, whatever it looks like."""
    return _preparer.quote_identifier(name)


def qualified(table: str, schema: str | None) -> str:
    return f"{quote(schema)}.{quote(table)}" if schema else quote(table)


def column_list(names: list[str] | tuple[str, ...]) -> str:
    return ", ".join(quote(n) for n in names)


def rollback_quietly(con: Any) -> None:
    """Roll back after a failure whose own exception is the one to report. After a failed
    commit DuckDB has no transaction left to roll back, and after a fatal error (a disk that
    filled up while it checkpointed) the database refuses every further call."""
    with contextlib.suppress(duckdb.Error):
        con.rollback()


@contextlib.contextmanager
def registered(con: Any, name: str, table: pa.Table) -> Iterator[None]:
    """``table`` visible to SQL as view ``name`` for the block. If the block fails, failing to
    unregister (the database may be invalidated by then) does not replace its exception."""
    con.register(name, table)
    try:
        yield
    except BaseException:
        with contextlib.suppress(duckdb.Error):
            con.unregister(name)
        raise
    con.unregister(name)


class SideTable:
    """A table beside a pipeline's own (its dead letters, its delete markers), ``table`` in the
    pipeline's schema; every method runs in the caller's transaction."""

    def __init__(self, con: Any, spec: TableSpec, table: str) -> None:
        self._con = con
        self.spec = spec
        self.table = table
        self.name = qualified(table, spec.db_schema)

    def exists(self) -> bool:
        found = self._con.execute(
            "SELECT count(*) FROM information_schema.tables"
            " WHERE table_name = ? AND table_schema = coalesce(?, current_schema())",
            [self.table, self.spec.db_schema],
        ).fetchall()[0][0]
        return bool(found)
