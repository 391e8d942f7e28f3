"""How a sink stores dead letters, for every database: the table's name, the column it adds,
and the deletes of a replay, a resolve and a reset, in SQLAlchemy Core. (How rejects travel as
Arrow, ``DLQ_SCHEMA``, is the connector's: connector.dead_letters.) Each backend supplies the
table's DDL, its fast insert and its read (``sinks.write.TransactionalSink``).
"""

from __future__ import annotations

import pyarrow as pa
import sqlalchemy as sa

from connector.batch import Batch, OffsetRange
from connector.dead_letters import DLQ_SCHEMA
from connector.names import IDENTITY_COLUMNS
from sinks.base import TableSpec
from sinks.history import Conn

DLQ_SUFFIX = "__dlq"
# What a sink adds to each stored dead letter: when it was first set aside.
FIRST_SEEN = pa.field("first_seen", pa.timestamp("us", tz="UTC"))


def dlq_table_name(table: str) -> str:
    """The dead-letter table next to ``table``."""
    return f"{table}{DLQ_SUFFIX}"


def resolved_offsets(batch: pa.Table | None, *more: pa.Table | None) -> pa.Table:
    """``(_topic, _partition, _offset)`` of the given row tables (rows, tombstones): the dead
    letters they resolve."""
    names = list(IDENTITY_COLUMNS)
    schema = pa.schema([DLQ_SCHEMA.field(n) for n in names])
    parts = [t.select(names).cast(schema) for t in (batch, *more) if t is not None]
    return pa.concat_tables(parts) if parts else schema.empty_table()


def statement_table(spec: TableSpec) -> sa.TableClause:
    """The dead-letter table's identity columns, for statements only (each backend creates
    the table with its own DDL and inserts with its own fast path)."""
    names = IDENTITY_COLUMNS
    return sa.table(dlq_table_name(spec.table), *map(sa.column, names), schema=spec.db_schema)


def delete_ranges(conn: Conn, table: sa.TableClause, topic: str, ranges: list[OffsetRange]) -> int:
    """Delete the rows of ``table`` (the target or its dead letters) within ``ranges``."""
    c = table.c
    deleted = 0
    for r in ranges:
        result = conn.execute(
            sa.delete(table).where(
                c._topic == topic,
                c._partition == r.partition,
                c._offset >= r.first,
                c._offset < r.next,
            )
        )
        deleted += max(result.rowcount, 0)
    return deleted


def delete_from(conn: Conn, table: sa.TableClause, topic: str, partition: int, offset: int) -> int:
    """Delete the rows of ``table`` at or after ``offset`` of ``partition`` (a reset)."""
    c = table.c
    result = conn.execute(
        sa.delete(table).where(c._topic == topic, c._partition == partition, c._offset >= offset)
    )
    return max(result.rowcount, 0)


def delete_offsets(conn: Conn, table: sa.TableClause, batch: Batch) -> int:
    """Delete the rows of ``table`` at the exact offsets of the batch's rows and tombstones
    (the dead letters a resolve now loads). Returns the count as the driver reports it."""
    offsets = resolved_offsets(batch.rows, batch.tombstones).to_pylist()
    if not offsets:
        return 0
    c = table.c
    statement = sa.delete(table).where(
        c._topic == sa.bindparam("t"),
        c._partition == sa.bindparam("p"),
        c._offset == sa.bindparam("o"),
    )
    params = [{"t": o["_topic"], "p": o["_partition"], "o": o["_offset"]} for o in offsets]
    return max(conn.execute(statement, params).rowcount, 0)
