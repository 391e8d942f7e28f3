"""The narrow contract every sink fulfils.

The runner owns the order (read checkpoint -> read a bounded batch -> ``write`` -> report); a sink
never decides on its own to commit offsets. ``write`` commits the batch's rows and moves the
checkpoint from each range's ``first`` to its ``next`` in one database transaction, as a
compare-and-set: if another writer moved the checkpoint, nothing is committed and
``CheckpointConflictError`` is raised.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from types import TracebackType
from typing import Literal, Protocol, Self

import pyarrow as pa

from connector.batch import Batch

CHECKPOINT_TABLE = "_kafka_etl_checkpoints"


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


class Sink(Protocol):
    """A target database, bound to one pipeline's table."""

    spec: TableSpec

    def read_checkpoints(self) -> dict[int, int]:
        """``partition -> next offset`` committed for this pipeline and topic."""
        ...

    def write(self, batch: Batch, *, replay: bool = False) -> WriteResult:
        """Commit the rows and advance the checkpoint in one transaction (compare-and-set).

        With ``replay=True`` the batch re-covers offsets loaded before: the checkpoint is left
        alone; append tables first delete the rows of ``batch.ranges`` in the same transaction,
        upsert tables apply the offset-guarded upsert (older data never overwrites newer).
        """
        ...

    def reset(self, offsets: dict[int, int]) -> int:
        """Move checkpoints to ``offsets`` (any direction); in append mode also delete the
        rows at or after them, in the same transaction, so a reload cannot duplicate.
        Returns the number of rows deleted."""
        ...

    def table_schema(self) -> pa.Schema | None:
        """The target table's columns as Arrow types, or None if it does not exist yet."""
        ...

    def row_count(self) -> int:
        """Rows in the target table (0 if it does not exist)."""
        ...

    def close(self) -> None: ...

    def __enter__(self) -> Self: ...

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None: ...
