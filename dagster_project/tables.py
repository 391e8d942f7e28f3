"""Read-only queries of a pipeline's target table, for asset checks.

Statements are built with SQLAlchemy Core and run by the pipeline's own sink
(``SinkInspection.select``), so the checks reach the database the same way a load does. No
SQL is built by string formatting, and every name goes through the dialect's quoting.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

import sqlalchemy as sa

from connector.names import IDENTITY_COLUMNS
from sinks.base import SinkInspection


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


def partition_stats(sink: SinkInspection, t: sa.TableClause, topic: str) -> list[PartitionStats]:
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
    return [PartitionStats(*(int(v) for v in row)) for row in sink.select(stmt)]


def duplicate_groups(
    sink: SinkInspection, t: sa.TableClause, topic: str, columns: Sequence[str], limit: int
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
    total = int(sink.select(sa.select(sa.func.count()).select_from(sub))[0][0])
    examples = sink.select(groups.order_by(*cols).limit(limit)) if total else []
    return total, examples


def missing_ranges(
    sink: SinkInspection, t: sa.TableClause, topic: str, partition: int, below: int, limit: int
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
    return [(int(a), int(b)) for a, b in sink.select(stmt)]


def rows_at_or_after(
    sink: SinkInspection, t: sa.TableClause, topic: str, checkpoints: dict[int, int]
) -> int:
    """Rows whose offset is not below their partition's checkpoint (should be none)."""
    if not checkpoints:
        return 0
    c = t.c
    beyond = sa.or_(
        *(sa.and_(c._partition == p, c._offset >= o) for p, o in sorted(checkpoints.items()))
    )
    stmt = sa.select(sa.func.count()).where(c._topic == topic, beyond)
    return int(sink.select(stmt)[0][0])
