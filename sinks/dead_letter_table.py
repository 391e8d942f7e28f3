"""How a sink stores dead letters: the table's name, the column it adds, the offsets a batch
resolves. (How rejects travel as Arrow, ``DLQ_SCHEMA``, is the connector's: connector.dead_letters.)
"""

from __future__ import annotations

import pyarrow as pa

from connector.dead_letters import DLQ_SCHEMA
from connector.names import IDENTITY_COLUMNS

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
