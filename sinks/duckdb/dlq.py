"""The DuckDB dead-letter table ``<table>__dlq``: its DDL, its insert by Arrow scan and its
read, in the sink's open transaction (the deletes are ``sinks.dead_letter_table``'s)."""

from __future__ import annotations

from typing import Any

import pyarrow as pa

from connector.batch import Batch
from sinks.base import TableSpec
from sinks.dead_letter_table import dlq_table_name, resolved_offsets
from sinks.duckdb.sql import SideTable, quote, registered

_VIEW = "_kafka_etl_dead_letters"
_DDL = (
    " (_topic VARCHAR NOT NULL, _partition INTEGER NOT NULL, _offset BIGINT NOT NULL,"
    " _timestamp TIMESTAMPTZ, key BLOB, value BLOB, headers VARCHAR,"
    " error_class VARCHAR NOT NULL, error_message VARCHAR NOT NULL,"
    " first_seen TIMESTAMPTZ NOT NULL, PRIMARY KEY (_topic, _partition, _offset))"
)


class DeadLetters(SideTable):
    """One pipeline's dead-letter table; every method runs in the caller's transaction."""

    def __init__(self, con: Any, spec: TableSpec) -> None:
        super().__init__(con, spec, dlq_table_name(spec.table))

    def create(self) -> None:
        if self.spec.db_schema:
            self._con.execute(f"CREATE SCHEMA IF NOT EXISTS {quote(self.spec.db_schema)}")
        self._con.execute(f"CREATE TABLE IF NOT EXISTS {self.name}{_DDL}")

    def insert(self, rejects: pa.Table) -> None:
        with registered(self._con, _VIEW, rejects):
            self._con.execute(
                f"INSERT INTO {self.name} BY NAME SELECT *, now() AS first_seen FROM {quote(_VIEW)}"
            )

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
