"""Delete markers: what a tombstone leaves behind, so that no replay brings a deleted row back.

A guarded upsert refuses a message older than the stored row; but once a tombstone deleted the
row, nothing is stored to compare with, and a replay of a range holding the key's older updates
but not its delete would create the row again. So every applied tombstone also writes, in the
same transaction, a marker: the Kafka key (``_key``, what tombstones delete by) and the delete's
``_topic``, ``_partition``, ``_offset`` and ``_timestamp``. An upsert whose ``_key`` has a newer
marker is refused like an older update (``sinks.changes.without_deleted``, the rule of
``sinks.changes``), and a second delete of a key moves its marker only if it is newer (the
marker table is written by the same guarded upsert as an upsert table, keyed by ``_key``).

Where: one table per upsert table, ``<table>__deleted`` next to it (like ``<table>__dlq``), and
not one shared table keyed by (table, key): the marker's ``_key`` column has the type of its
table's own ``_key`` (text, bytes or an integer, depending on ``key_format``), so it can be the
primary key and compare exactly with the incoming rows' ``_key`` on every database; it lives in
the table's schema, under the same name rules; and the user who drops a table sees the one next
to it. It is created only for tables that delete (``mode: upsert`` with
``delete_on_tombstone: true``), by the first batch that applies a tombstone, through the write
path's DDL steps (its own step before the batch's transaction on MySQL/MariaDB).

Markers are kept when the key is written again by a newer message: a marker only ever refuses
messages older than a delete of their key, which a load in order would have deleted too, so
keeping it is correct under any replay (and the re-created row refuses those messages itself).
The table therefore holds one row per Kafka key ever deleted.

Replays (``backfill``, ``kafka-etl replay``) never delete markers, inside their range or out of
it: an upsert replay keeps the table's rows too, and a delete it replays writes its own marker
again, unchanged. ``reset`` deletes the markers at or after the new position of each partition,
as it does dead letters: the next run reads those deletes again and writes their markers again,
and a reset to ``earliest`` after the topic was recreated (offsets start again at 0) is not
refused by markers of the old topic.
"""

from __future__ import annotations

import pyarrow as pa
import sqlalchemy as sa

from connector.names import IDENTITY_COLUMNS
from sinks.base import TableSpec

MARKERS_SUFFIX = "__deleted"
#: The columns of a marker, the Kafka key first.
MARKER_COLUMNS = ("_key", *IDENTITY_COLUMNS, "_timestamp")


def markers_table_name(table: str) -> str:
    """The delete-marker table next to ``table``."""
    return f"{table}{MARKERS_SUFFIX}"


def keeps_markers(spec: TableSpec) -> bool:
    """Only tables whose tombstones delete have markers."""
    return spec.mode == "upsert" and spec.delete_on_tombstone


def statement_table(spec: TableSpec) -> sa.TableClause:
    """The marker table's Kafka coordinates, for the deletes of a reset (each backend creates
    the table with its own DDL and writes it with its own upsert)."""
    names = IDENTITY_COLUMNS
    return sa.table(markers_table_name(spec.table), *map(sa.column, names), schema=spec.db_schema)


def marker_schema(key_type: pa.DataType) -> pa.Schema:
    """A marker's columns, as the metadata columns of the tombstone that left it."""
    return pa.schema(
        [
            pa.field("_key", key_type, nullable=False),
            pa.field("_topic", pa.string()),
            pa.field("_partition", pa.int32()),
            pa.field("_offset", pa.int64()),
            pa.field("_timestamp", pa.timestamp("ms", tz="UTC")),
        ]
    )
