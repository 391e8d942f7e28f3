"""Insert, upsert and tombstone-delete statements, built with SQLAlchemy Core per dialect.

Values are always bound parameters named ``p0, p1, ...`` (never derived from column names, so a
field called ``x"; DROP TABLE t; --`` or ``100%`` is only ever a quoted identifier).

The guard ``newer(stored, incoming)`` is the rule documented in ``sinks.changes``: same topic and
partition -> the higher (or same) offset wins; otherwise the later ``_timestamp`` wins.
PostgreSQL and SQLite apply it as ``ON CONFLICT ... DO UPDATE ... WHERE``. MySQL/MariaDB's
``ON DUPLICATE KEY UPDATE`` has no ``WHERE`` and evaluates assignments left to right, each seeing
the columns already assigned; every column is therefore ``CASE WHEN guard THEN new ELSE old END``,
value columns first and then ``_offset, _partition, _topic, _timestamp`` in that order: with that
order the guard stays true through its own assignments when it was true at the start (each step
leaves either "different partition, later timestamp" or "same partition, offset not older"
holding), and a false guard changes nothing.
"""

from __future__ import annotations

from collections.abc import Collection, Mapping, Sequence
from typing import Any

import sqlalchemy as sa
from sqlalchemy.dialects import mysql, postgresql
from sqlalchemy.sql.elements import ColumnElement

from connector.names import IDENTITY_COLUMNS
from sinks.capabilities import Capabilities

ORDER_COLUMNS = (*IDENTITY_COLUMNS, "_timestamp")
# MySQL assignment order for the guard columns (see the module docstring).
_MYSQL_LAST = ("_offset", "_partition", "_topic", "_timestamp")


def newer(
    stored: Mapping[str, ColumnElement[Any]] | Any, incoming: Mapping[str, ColumnElement[Any]] | Any
) -> ColumnElement[bool]:
    """True where the incoming message is at least as new as the stored row."""
    same = sa.and_(
        stored["_topic"] == incoming["_topic"], stored["_partition"] == incoming["_partition"]
    )
    return sa.or_(
        sa.and_(same, stored["_offset"] <= incoming["_offset"]),
        sa.and_(sa.not_(same), stored["_timestamp"] < incoming["_timestamp"]),
    )


def value_binds(
    table: sa.Table, names: Sequence[str], json_columns: Collection[str], caps: Capabilities
) -> dict[str, ColumnElement[Any]]:
    """``column -> bound parameter``; JSON arrives as text (cast to JSONB on PostgreSQL)."""
    binds: dict[str, ColumnElement[Any]] = {}
    for i, name in enumerate(names):
        column = table.c[name]
        if name in json_columns:
            text = sa.bindparam(f"p{i}", type_=sa.Text())
            binds[name] = sa.cast(text, column.type) if caps.jsonb else text
        else:
            binds[name] = sa.bindparam(f"p{i}", type_=column.type)
    return binds


def insert_values(table: sa.Table, binds: Mapping[str, ColumnElement[Any]]) -> sa.Insert:
    return sa.insert(table).values(binds)


def upsert_values(
    table: sa.Table,
    binds: Mapping[str, ColumnElement[Any]],
    key: tuple[str, ...],
    caps: Capabilities,
) -> sa.Insert:
    """One guarded upsert row per parameter set (for executemany)."""
    if caps.upsert == "on_duplicate_key":
        return _mysql_upsert(table, binds, key)
    insert = _on_conflict_insert(caps, table).values(binds)
    return _on_conflict_update(insert, table, list(binds), key)


def upsert_select(
    table: sa.Table, source: sa.Table, names: Sequence[str], key: tuple[str, ...]
) -> sa.Insert:
    """``INSERT INTO table SELECT ... FROM source ON CONFLICT DO UPDATE`` (PostgreSQL)."""
    insert = postgresql.insert(table).from_select(
        [table.c[n] for n in names], sa.select(*(source.c[n] for n in names))
    )
    return _on_conflict_update(insert, table, names, key)


def _on_conflict_insert(caps: Capabilities, table: sa.Table) -> Any:
    """SQLAlchemy's PostgreSQL ``INSERT ... ON CONFLICT`` construct compiles for every dialect
    with that clause (SQLite's, DuckDB's): the statement is compiled for the connection's."""
    if caps.upsert != "on_conflict":
        msg = f"upsert is not implemented for {caps.name} targets"
        raise NotImplementedError(msg)
    return postgresql.insert(table)


def _on_conflict_update(
    insert: Any, table: sa.Table, names: Sequence[str], key: tuple[str, ...]
) -> sa.Insert:
    excluded = insert.excluded
    update: dict[str, Any] = {name: excluded[name] for name in names if name not in key}
    update.update({name: sa.null() for name in absent_columns(table, names, key)})
    result: sa.Insert = insert.on_conflict_do_update(
        index_elements=[table.c[k] for k in key],
        set_=update,
        where=newer(table.c, excluded),
    )
    return result


def _mysql_upsert(
    table: sa.Table, binds: Mapping[str, ColumnElement[Any]], key: tuple[str, ...]
) -> sa.Insert:
    insert = mysql.insert(table).values(binds)
    incoming = insert.inserted
    guard = newer(table.c, incoming)
    values = [n for n in binds if n not in key and n not in _MYSQL_LAST]
    last = [n for n in _MYSQL_LAST if n in binds and n not in key]
    nulls = absent_columns(table, list(binds), key)
    assignments: list[tuple[str, Any]] = [
        (n, sa.case((guard, incoming[n]), else_=table.c[n])) for n in values
    ]
    assignments += [(n, sa.case((guard, sa.null()), else_=table.c[n])) for n in nulls]
    assignments += [(n, sa.case((guard, incoming[n]), else_=table.c[n])) for n in last]
    result: sa.Insert = insert.on_duplicate_key_update(assignments)
    return result


def absent_columns(table: sa.Table, names: Sequence[str], key: tuple[str, ...]) -> list[str]:
    """Columns the batch does not carry: an upsert replaces the whole row, so they become NULL
    (the message value is the key's complete new state, as in a compacted topic)."""
    present = set(names) | set(key)
    return [c.name for c in table.columns if c.name not in present]


def delete_tombstones(table: sa.Table) -> sa.Delete:
    """Delete the rows with the tombstone's ``_key`` that are older than the tombstone.

    Parameters: ``p0..p3`` (the tombstone's topic, partition, offset, timestamp), ``p4`` its key.
    """
    incoming = {
        name: sa.bindparam(f"p{i}", type_=table.c[name].type)
        for i, name in enumerate(ORDER_COLUMNS)
    }
    key = sa.bindparam(f"p{len(ORDER_COLUMNS)}", type_=table.c._key.type)
    return sa.delete(table).where(table.c._key == key, newer(table.c, incoming))


def delete_ranges(table: sa.Table, topic: str) -> sa.Delete:
    """Rows of one partition's offsets ``[first, next)``: parameters ``part``, ``lo``, ``hi``."""
    c = table.c
    return sa.delete(table).where(
        c._topic == topic,
        c._partition == sa.bindparam("part"),
        c._offset >= sa.bindparam("lo"),
        c._offset < sa.bindparam("hi"),
    )
