"""The DuckDB dead-letter table ``<table>__dlq``, written in the sink's open transaction."""

from __future__ import annotations

from typing import Any

import pyarrow as pa

from connector.batch import Batch
from sinks.base import TableSpec
from sinks.dead_letter_table import dlq_table_name, resolved_offsets
from sinks.duckdb.sql import qualified, quote, registered

_VIEW = "_kafka_etl_dead_letters"
_DDL = (
    " (_topic VARCHAR NOT NULL, _partition INTEGER NOT NULL, _offset BIGINT NOT NULL,"
    " _timestamp TIMESTAMPTZ, key BLOB, value BLOB, headers VARCHAR,"
    " error_class VARCHAR NOT NULL, error_message VARCHAR NOT NULL,"
    " first_seen TIMESTAMPTZ NOT NULL, PRIMARY KEY (_topic, _partition, _offset))"
)


class DeadLetters:
    """One pipeline's dead-letter table; every method runs in the caller's transaction."""

    def __init__(self, con: Any, spec: TableSpec) -> None:
        self._con = con
        self.spec = spec
        self.table = dlq_table_name(spec.table)
        self.name = qualified(self.table, spec.db_schema)

    def exists(self) -> bool:
        found = self._con.execute(
            "SELECT count(*) FROM information_schema.tables"
            " WHERE table_name = ? AND table_schema = coalesce(?, current_schema())",
            [self.table, self.spec.db_schema],
        ).fetchall()[0][0]
        return bool(found)

    def apply(self, batch: Batch, *, replay: bool, resolve: bool) -> int:
        """A batch's dead-letter work: a replay first deletes the dead letters of its ranges, a
        resolve deletes the dead letters it now loads; rejects are inserted. Returns the number
        of dead letters inserted."""
        if (replay or resolve) and self.exists():
            if replay:
                for r in batch.ranges.values():
                    self._con.execute(
                        f"DELETE FROM {self.name}"
                        " WHERE _topic = ? AND _partition = ? AND _offset >= ? AND _offset < ?",
                        [self.spec.topic, r.partition, r.first, r.next],
                    )
            if resolve:
                self.delete_offsets(self.name, batch)
        rejects = batch.rejects
        if rejects is None or rejects.num_rows == 0:
            return 0
        if self.spec.db_schema:
            self._con.execute(f"CREATE SCHEMA IF NOT EXISTS {quote(self.spec.db_schema)}")
        self._con.execute(f"CREATE TABLE IF NOT EXISTS {self.name}{_DDL}")
        with registered(self._con, _VIEW, rejects):
            self._con.execute(
                f"INSERT INTO {self.name} BY NAME SELECT *, now() AS first_seen FROM {quote(_VIEW)}"
            )
        return int(rejects.num_rows)

    def delete_offsets(self, name: str, batch: Batch) -> int:
        """Delete the rows of table ``name`` at the exact offsets of the batch's rows and
        tombstones (a resolve deletes them from the table first, then from the DLQ)."""
        offsets = resolved_offsets(batch.rows, batch.tombstones)
        if offsets.num_rows == 0:
            return 0
        with registered(self._con, _VIEW, offsets):
            return int(
                self._con.execute(
                    f"DELETE FROM {name} AS t USING {quote(_VIEW)} AS o"
                    " WHERE t._topic = o._topic AND t._partition = o._partition"
                    " AND t._offset = o._offset"
                ).fetchall()[0][0]
            )

    def delete_from(self, partition: int, offset: int) -> None:
        """Reset: dead letters at or after ``offset`` will be read again."""
        self._con.execute(
            f"DELETE FROM {self.name} WHERE _topic = ? AND _partition = ? AND _offset >= ?",
            [self.spec.topic, partition, offset],
        )

    def read(self, limit: int | None) -> pa.Table:
        if not self.exists():
            return pa.table({})
        query = f"SELECT * FROM {self.name} WHERE _topic = ? ORDER BY _partition, _offset"
        params: list[Any] = [self.spec.topic]
        if limit is not None:
            query += " LIMIT ?"
            params.append(limit)
        table: pa.Table = self._con.sql(query, params=params).to_arrow_table()
        return table
