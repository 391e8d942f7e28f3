"""The narrow contract every sink fulfils: ``SinkWriter`` (each call one transaction) and
``SinkInspection`` (reads only).

The runner owns the order of a run (read checkpoint -> read a bounded batch -> ``write`` ->
report); a sink never decides on its own to commit offsets. ``write`` commits the batch's rows
and moves the checkpoint from each range's ``first`` to its ``next`` in one database
transaction, as a compare-and-set: if another writer moved the checkpoint, nothing is
committed and ``CheckpointConflictError`` is raised. The steps of that transaction are written
once, in ``sinks.write``; the order of writes in flight is owned by ``sinks.inflight``.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from datetime import datetime
from types import TracebackType
from typing import TYPE_CHECKING, Any, Literal, Protocol, Self

import pyarrow as pa
from sqlalchemy.sql import Select

from connector.batch import Batch, OffsetRange

if TYPE_CHECKING:
    from sinks.inflight import InFlight

CHECKPOINT_TABLE = "_kafka_etl_checkpoints"
SCHEMA_HISTORY_TABLE = "_kafka_etl_schema_history"


@dataclass(frozen=True, slots=True)
class TableSpec:
    """Where and how one pipeline's rows land."""

    pipeline: str
    topic: str
    table: str
    db_schema: str | None = None
    mode: Literal["append", "upsert"] = "append"
    key: tuple[str, ...] = ()
    delete_on_tombstone: bool = False
    widen_to_string: bool = False

    @property
    def display_name(self) -> str:
        return f"{self.db_schema}.{self.table}" if self.db_schema else self.table


@dataclass(frozen=True, slots=True)
class WriteResult:
    """What one committed transaction did."""

    rows_written: int = 0
    rows_deleted: int = 0
    tombstones_skipped: int = 0
    columns_added: tuple[str, ...] = field(default=())
    rows_dead_lettered: int = 0


@dataclass(frozen=True, slots=True)
class SchemaChange:
    """One applied change to a table's columns, as recorded in ``_kafka_etl_schema_history``.

    Types are Arrow type names (the same in every database); ``first_offsets`` names the batch
    that first needed the change, as ``partition:[first,next)`` ranges.
    """

    pipeline: str
    table: str
    column: str
    change: Literal["created", "added", "widened"]
    old_type: str | None
    new_type: str
    first_offsets: str
    applied_at: datetime


class TableAppeared(Exception):
    """Another writer created the table this write was about to create: the write rolled
    back and is planned once more against the table that exists."""


def checkpoint_conflict_message(spec: TableSpec, r: OffsetRange, current: object) -> str:
    """Why a batch was refused: its partition's checkpoint is not where the batch starts."""
    return (
        f"pipeline {spec.pipeline!r}: {spec.topic}/{r.partition} checkpoint moved to {current}"
        f" while this run was loading from {r.first} (another run of the same pipeline?);"
        " nothing from this batch was committed"
    )


def describe_ranges(ranges: dict[int, OffsetRange]) -> str:
    return ", ".join(str(r) for _, r in sorted(ranges.items()))


def dropped_table_message(spec: TableSpec, where: str, checkpoints: dict[int, int]) -> str:
    """Why a run refuses to resume into a table that was dropped after it was loaded: its
    checkpoints would skip everything they cover, and the run would report success."""
    offsets = ", ".join(f"{p}:{o}" for p, o in sorted(checkpoints.items()))
    return (
        f"pipeline {spec.pipeline!r}: table {spec.display_name} in {where} was dropped after"
        f" loading up to offsets {offsets} (its checkpoints remain); nothing was loaded. To load"
        f" the topic into it again from the start: kafka-etl reset {spec.pipeline} --to earliest"
    )


class ClosesOnExit:
    """``with sink:`` closes it, whatever happened inside."""

    def close(self) -> None:
        raise NotImplementedError

    def __enter__(self) -> Self:
        return self

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        self.close()


class SinkInspection(Protocol):
    """What a sink tells about its table and bookkeeping; it writes nothing."""

    spec: TableSpec

    def read_checkpoints(self, *, for_reset: bool = False) -> dict[int, int]:
        """``partition -> next offset`` committed for this pipeline, topic and table.

        A checkpoint belongs to its table: a pipeline pointed at a new table has none there
        (and loads from its ``start``). Raises ``TerminalError`` when the table this pipeline
        created is gone while its checkpoints remain (dropped by hand): resuming would skip
        everything and report success; ``reset`` is the way on, so it reads them
        ``for_reset``, without that refusal."""
        ...

    def table_schema(self) -> pa.Schema | None:
        """The target table's columns as Arrow types, or None if it does not exist yet."""
        ...

    def row_count(self) -> int:
        """Rows in the target table (0 if it does not exist)."""
        ...

    def column_types(self) -> dict[str, str]:
        """The target table's columns, in table order, by the database's own type names
        (``BIGINT``, ``JSONB``...); empty if the table does not exist yet."""
        ...

    def last_commit(self) -> datetime | None:
        """When this pipeline's checkpoint in this table last moved (its newest committed
        write), as an aware UTC datetime; None before the first."""
        ...

    def select(self, statement: Select[Any]) -> list[tuple[Any, ...]]:
        """The rows of a read-only SQLAlchemy Core ``SELECT`` run on this target, outside any
        write (the asset checks read the data this way; DuckDB compiles it as PostgreSQL)."""
        ...

    def schema_history(self) -> list[SchemaChange]:
        """Every column change applied to the target table by this pipeline, oldest first."""
        ...

    def read_dead_letters(self, limit: int | None = None) -> pa.Table:
        """The dead-letter rows (``connector.dead_letters.DLQ_SCHEMA`` plus ``first_seen``) in
        partition and offset order, at most ``limit``; empty if there is no dead-letter table."""
        ...


class SinkWriter(Protocol):
    """What changes a sink's table and checkpoints: each call is one database transaction."""

    spec: TableSpec

    def write(self, batch: Batch, *, replay: bool = False) -> WriteResult:
        """Commit the rows and advance the checkpoint in one transaction (compare-and-set).

        With ``replay=True`` the batch re-covers offsets loaded before: the checkpoint is left
        alone; append tables first delete the rows of ``batch.ranges`` in the same transaction,
        upsert tables apply the offset-guarded upsert (older data never overwrites newer, and
        a message older than its key's delete marker, ``<table>__deleted``, is refused).

        ``batch.rejects`` go to the dead-letter table ``<table>__dlq`` (created when first
        needed, unique on ``(_topic, _partition, _offset)``) in the same transaction. A replay
        first deletes the dead letters of ``batch.ranges`` too, so neither table duplicates.
        """
        ...

    def writes(self) -> InFlight:
        """A writer for a run: batches submitted to it are written as many at once as the
        database takes (``Capabilities.max_in_flight``) and commit in the order submitted.
        The writer alone owns that order; close it (``with``) to wait for every write."""
        ...

    def resolve_dead_letters(self, batch: Batch) -> int:
        """Move dead letters that now decode into the table, in one transaction: write
        ``batch.rows`` (and apply ``batch.tombstones`` in upsert mode) and delete their offsets
        from the dead-letter table. The checkpoint does not move. Idempotent: append tables
        first delete rows at those exact offsets. Returns the dead letters removed."""
        ...

    def reset(self, offsets: dict[int, int], *, dry_run: bool = False) -> int:
        """Move checkpoints to ``offsets`` (any direction); in append mode also delete the
        rows at or after them, in the same transaction, so a reload cannot duplicate; dead
        letters and delete markers at or after them are deleted in every mode. Returns the
        number of rows deleted.
        With ``dry_run`` the transaction is rolled back: the count is what a reset would delete.

        If the table was dropped, its schema history goes too (it described columns that no
        longer exist), so the next run creates the table again and loads from ``offsets``."""
        ...


class Sink(SinkWriter, SinkInspection, Protocol):
    """A target database, bound to one pipeline's table: its writer and its inspection."""

    def close(self) -> None: ...

    def __enter__(self) -> Self: ...

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None: ...
