"""The DuckDB delete-marker table ``<table>__deleted`` (``sinks.delete_markers``): its DDL and
its read by Arrow scan, in the sink's open transaction (the sink writes it with its guarded
upsert, and a reset deletes from it with ``sinks.dead_letter_table``'s Core statement)."""

from __future__ import annotations

from typing import Any

import pyarrow as pa

from sinks.base import TableSpec
from sinks.delete_markers import MARKER_COLUMNS, marker_schema, markers_table_name
from sinks.duckdb.sql import SideTable, column_list, quote, registered

_VIEW = "_kafka_etl_marker_keys"


class DeleteMarkers(SideTable):
    """One upsert table's delete markers; every method runs in the caller's transaction."""

    def __init__(self, con: Any, spec: TableSpec) -> None:
        super().__init__(con, spec, markers_table_name(spec.table))

    def create(self, key_type: pa.DataType) -> None:
        if self.exists():
            return
        con = self._con
        if self.spec.db_schema:
            con.execute(f"CREATE SCHEMA IF NOT EXISTS {quote(self.spec.db_schema)}")
        with registered(con, _VIEW, marker_schema(key_type).empty_table()):
            con.execute(f"CREATE TABLE {self.name} AS SELECT * FROM {quote(_VIEW)} LIMIT 0")
        # Unique on the key, for ON CONFLICT; the only index (DuckDB cannot update indexed
        # columns in ON CONFLICT DO UPDATE).
        index = quote(f"{self.table}__key")
        con.execute(f"CREATE UNIQUE INDEX {index} ON {self.name} (_key)")

    def read(self, keys: pa.Array | pa.ChunkedArray) -> pa.Table:
        with registered(self._con, _VIEW, pa.table({"_key": keys})):
            table: pa.Table = self._con.sql(
                f"SELECT {column_list(MARKER_COLUMNS)} FROM {self.name}"
                f" WHERE _key IN (SELECT _key FROM {quote(_VIEW)})"
            ).to_arrow_table()
        return table
