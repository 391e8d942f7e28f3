"""The delete-marker table ``<table>__deleted`` on SQL databases (``sinks.delete_markers``).

Defined like an upsert table keyed by ``[_key]`` (``sinks.sql.tables.target_table``: the same
key types, exact collation and lengths), so it is written by the loader's own guarded upsert
(executemany, or COPY into a staging table on PostgreSQL). Read by ``_key = ANY(:keys)``, one
array parameter, where the database takes one (PostgreSQL), else by ``_key IN (...)`` in chunks
within the dialect's parameter budget; the primary key answers both.
"""

from __future__ import annotations

from dataclasses import replace
from typing import Any

import pyarrow as pa
import pyarrow.compute as pc
import sqlalchemy as sa
from sqlalchemy.dialects import postgresql
from sqlalchemy.engine import Connection, Dialect

from kafka_etl.errors import ConfigError
from sinks.base import TableSpec
from sinks.capabilities import capabilities
from sinks.delete_markers import MARKER_COLUMNS, marker_schema, markers_table_name
from sinks.sql.dlq import plain_value
from sinks.sql.load import Loader
from sinks.sql.tables import check_name, creating, target_table
from sinks.sql.types import stored_as_json

_MAX_KEYS = 10_000


class DeleteMarkers:
    """One upsert table's delete markers; every method runs in the caller's transaction."""

    def __init__(self, spec: TableSpec, dialect: Dialect, loader: Loader) -> None:
        self.spec = spec
        self.name = markers_table_name(spec.table)
        problem = check_name(self.name, dialect, "delete-marker table")
        if problem and spec.mode == "upsert" and spec.delete_on_tombstone:
            msg = f"pipeline {spec.pipeline!r}: {problem} (shorten 'table')"
            raise ConfigError(msg)
        self._dialect = dialect
        self._loader = loader
        self._caps = capabilities(dialect)
        self._limit = max(1, min(_MAX_KEYS, int(dialect.insertmanyvalues_max_parameters) - 1))
        self._table: sa.Table | None = None

    def definition(self, key_type: pa.DataType) -> sa.Table:
        if self._table is None:
            if stored_as_json(key_type):
                msg = (
                    f"pipeline {self.spec.pipeline!r}: the Kafka key (_key) is {key_type}; a"
                    " tombstone's delete marker needs a scalar key (key_format: string)"
                )
                raise ConfigError(msg)
            spec = replace(self.spec, table=self.name, key=("_key",), delete_on_tombstone=False)
            self._table = target_table(marker_schema(key_type), spec, self._dialect)
        return self._table

    def exists(self, conn: Connection) -> bool:
        return bool(sa.inspect(conn).has_table(self.name, schema=self.spec.db_schema))

    def create(self, conn: Connection, key_type: pa.DataType) -> None:
        """Create the table unless it exists, taking turns with other writers creating it."""
        with creating(conn, self.name):
            self.definition(key_type).create(conn, checkfirst=True)

    def read(self, conn: Connection, keys: pa.Array | pa.ChunkedArray) -> pa.Table:
        table = self.definition(keys.type)
        wanted = pc.unique(keys.drop_null()).to_pylist()
        columns = [table.c[n] for n in MARKER_COLUMNS]
        found: list[Any] = []
        key = table.c._key
        if self._caps.array_binds:  # one parameter, looked up by the primary key
            keys_param = sa.bindparam("keys", wanted, type_=postgresql.ARRAY(key.type))
            found = list(conn.execute(sa.select(*columns).where(key == sa.any_(keys_param))))
            wanted = []
        for start in range(0, len(wanted), self._limit):
            chunk = wanted[start : start + self._limit]
            found += conn.execute(sa.select(*columns).where(key.in_(chunk))).all()
        values = list(zip(*found, strict=True)) if found else [()] * len(MARKER_COLUMNS)
        schema = marker_schema(keys.type)
        # Naive datetimes (UTC wall time) convert as UTC; only bytes need a look per value.
        arrays = [
            pa.array(
                [plain_value(v) for v in column] if _binary(field.type) else column,
                field.type,
            )
            for column, field in zip(values, schema, strict=True)
        ]
        return pa.Table.from_arrays(arrays, schema=schema)

    def write(self, conn: Connection, deletes: pa.Table) -> None:
        table = self.definition(deletes.schema.field("_key").type)
        self._loader.upsert(conn, table, deletes, ("_key",), set())


def _binary(t: pa.DataType) -> bool:
    return bool(pa.types.is_binary(t) or pa.types.is_large_binary(t))
