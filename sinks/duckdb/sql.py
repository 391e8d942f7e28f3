"""Identifier quoting for DuckDB statements, done by SQLAlchemy's PostgreSQL preparer.

DuckDB follows PostgreSQL's identifier rules (double quotes, doubled to escape), so the
statements below never interpolate a name that has not been through the preparer, and every
value is a bound ``?`` parameter.
"""

from __future__ import annotations

from sqlalchemy.dialects import postgresql

_preparer = postgresql.dialect().identifier_preparer


def quote(name: str) -> str:
    """Always quote: a JSON field name is data, whatever it looks like."""
    return _preparer.quote_identifier(name)


def qualified(table: str, schema: str | None) -> str:
    return f"{quote(schema)}.{quote(table)}" if schema else quote(table)


def column_list(names: list[str] | tuple[str, ...]) -> str:
    return ", ".join(quote(n) for n in names)
