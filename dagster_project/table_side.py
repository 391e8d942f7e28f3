"""The target's own account of a pipeline (rows, checkpoints, last load, column types), read
through the pipeline's sink without making a writer wait: a DuckDB file a load holds is skipped
at once (no lock wait), and a file database not created yet is not created by looking at it.
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime
from pathlib import Path

from dagster_project.translator import PipelineTranslatorData
from kafka_etl.errors import KafkaEtlError
from sinks.capabilities import capabilities


@dataclass(frozen=True, slots=True)
class TableSide:
    """The target's own account of the pipeline: what is stored and up to where."""

    rows: int | None  # None: the table does not exist yet
    checkpoints: dict[int, int]
    last_load: datetime | None
    column_types: dict[str, str]


_NOTHING_YET = TableSide(None, {}, None, {})


def read_table_side(data: PipelineTranslatorData) -> TableSide | None:
    """Rows, checkpoints, last load time and column types; None when the database cannot be
    read without waiting (a DuckDB file a load holds, a database that is down)."""
    database = data.url.database or ":memory:"
    if capabilities(data.backend).file_database and (
        database == ":memory:" or not Path(database).exists()
    ):
        return _NOTHING_YET
    try:
        with data.open_sink(lock_timeout=0.0) as sink:
            exists = sink.table_schema() is not None
            return TableSide(
                rows=sink.row_count() if exists else None,
                # As they are: a dropped table's checkpoints are shown, not refused.
                checkpoints=sink.read_checkpoints(for_reset=True),
                last_load=sink.last_commit(),
                column_types=sink.column_types(),
            )
    except KafkaEtlError:
        return None
