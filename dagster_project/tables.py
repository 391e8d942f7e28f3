"""Read-only queries against a pipeline's target table, for asset checks.

Statements are built with SQLAlchemy Core and compiled for the target: SQL databases run them
through SQLAlchemy; DuckDB (no SQLAlchemy driver in this project) gets them compiled with the
PostgreSQL dialect, whose SQL DuckDB speaks, with ``?`` parameters. No SQL is built by string
formatting, and every name goes through the dialect's quoting.
"""

from __future__ import annotations

from collections.abc import Iterator, Sequence
from contextlib import contextmanager
from dataclasses import dataclass
from typing import Any

import sqlalchemy as sa
from sqlalchemy.dialects import postgresql
from sqlalchemy.engine import URL
from sqlalchemy.pool import NullPool
from sqlalchemy.sql import Select

from connector.names import IDENTITY_COLUMNS
from kafka_etl.errors import classify, redact
from sinks.duckdb.sink import connect as duckdb_connect

_DUCKDB_DIALECT = postgresql.dialect(paramstyle="qmark")


class TableReader:
    """One read-only connection to a target database."""

    def __init__(self, run: Any) -> None:
        self._run = run

    @classmethod
    @contextmanager
    def open(cls, url: URL, *, lock_timeout: float = 60.0) -> Iterator[TableReader]:
        where = redact(url.render_as_string(hide_password=False))
        if url.get_backend_name() == "duckdb":
            con = duckdb_connect(
                url.database or ":memory:", read_only=True, lock_timeout=lock_timeout
            )
            try:

                def run_duckdb(stmt: Select[Any]) -> list[tuple[Any, ...]]:
                    compiled = stmt.compile(dialect=_DUCKDB_DIALECT)
                    params = [compiled.params[name] for name in compiled.positiontup or ()]
                    try:
                        return [tuple(r) for r in con.execute(str(compiled), params).fetchall()]
                    except Exception as exc:
                        raise classify(exc, f"duckdb {url.database}") from exc

                yield cls(run_duckdb)
            finally:
                con.close()
            return
        engine = sa.create_engine(url, poolclass=NullPool)
        try:
            with engine.connect() as conn:

                def run_sql(stmt: Select[Any]) -> list[tuple[Any, ...]]:
                    try:
                        return [tuple(r) for r in conn.execute(stmt).all()]
                    except Exception as exc:
                        raise classify(exc, where) from exc

                yield cls(run_sql)
        except sa.exc.SQLAlchemyError as exc:
            raise classify(exc, where) from exc
        finally:
            engine.dispose()

    def rows(self, stmt: Select[Any]) -> list[tuple[Any, ...]]:
        result: list[tuple[Any, ...]] = self._run(stmt)
        return result


@dataclass(frozen=True, slots=True)
class PartitionStats:
    partition: int
    rows: int
    distinct_offsets: int
    first: int
    last: int


def data_table(table: str, schema: str | None, *extra: str) -> sa.TableClause:
    columns: list[sa.ColumnClause[Any]] = [sa.column(c) for c in (*IDENTITY_COLUMNS, *extra)]
    return sa.table(table, *columns, schema=schema)


def partition_stats(reader: TableReader, t: sa.TableClause, topic: str) -> list[PartitionStats]:
    c = t.c
    stmt = (
        sa.select(
            c._partition,
            sa.func.count(),
            sa.func.count(sa.distinct(c._offset)),
            sa.func.min(c._offset),
            sa.func.max(c._offset),
        )
        .where(c._topic == topic)
        .group_by(c._partition)
        .order_by(c._partition)
    )
    return [PartitionStats(*(int(v) for v in row)) for row in reader.rows(stmt)]


def duplicate_groups(
    reader: TableReader, t: sa.TableClause, topic: str, columns: Sequence[str], limit: int
) -> tuple[int, list[tuple[Any, ...]]]:
    """How many ``columns`` value groups occur more than once, and the first ``limit`` of them
    (values, then the count)."""
    cols = [t.c[name] for name in columns]
    groups = (
        sa.select(*cols, sa.func.count().label("n"))
        .where(t.c._topic == topic)
        .group_by(*cols)
        .having(sa.func.count() > 1)
    )
    sub = groups.subquery()
    total = int(reader.rows(sa.select(sa.func.count()).select_from(sub))[0][0])
    examples = reader.rows(groups.order_by(*cols).limit(limit)) if total else []
    return total, examples


def missing_ranges(
    reader: TableReader, t: sa.TableClause, topic: str, partition: int, below: int, limit: int
) -> list[tuple[int, int]]:
    """Holes ``[first, next)`` between consecutive stored offsets below ``below``."""
    c = t.c
    offsets = (
        sa.select(c._offset)
        .where(c._topic == topic, c._partition == partition, c._offset < below)
        .distinct()
        .subquery()
    )
    following = sa.func.lead(offsets.c._offset).over(order_by=offsets.c._offset).label("nxt")
    pairs = sa.select(offsets.c._offset, following).subquery()
    stmt = (
        sa.select(pairs.c._offset + 1, pairs.c.nxt)
        .where(pairs.c.nxt > pairs.c._offset + 1)
        .order_by(pairs.c._offset)
        .limit(limit)
    )
    return [(int(a), int(b)) for a, b in reader.rows(stmt)]


def rows_at_or_after(
    reader: TableReader, t: sa.TableClause, topic: str, checkpoints: dict[int, int]
) -> int:
    """Rows whose offset is not below their partition's checkpoint (should be none)."""
    if not checkpoints:
        return 0
    c = t.c
    beyond = sa.or_(
        *(sa.and_(c._partition == p, c._offset >= o) for p, o in sorted(checkpoints.items()))
    )
    stmt = sa.select(sa.func.count()).where(c._topic == topic, beyond)
    return int(reader.rows(stmt)[0][0])
