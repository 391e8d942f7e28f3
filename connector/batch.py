"""What crosses from ``connector`` to ``sinks``: Arrow rows plus the offset ranges they cover.

Every batch and every checkpoint is described as ``partition -> [first, next)``: ``first`` is the
checkpoint the batch was read from and ``next`` the checkpoint it moves to. Offsets only grow.
"""

from __future__ import annotations

from dataclasses import dataclass, field

import pyarrow as pa


@dataclass(frozen=True, slots=True)
class OffsetRange:
    """Offsets ``[first, next)`` of one partition."""

    partition: int
    first: int
    next: int

    def __post_init__(self) -> None:
        if self.next < self.first:
            msg = f"partition {self.partition}: offsets must grow ({self.first} -> {self.next})"
            raise ValueError(msg)

    @property
    def size(self) -> int:
        return self.next - self.first

    def __str__(self) -> str:
        return f"{self.partition}:[{self.first},{self.next})"


@dataclass(frozen=True, slots=True)
class Gap:
    """Offsets the checkpoint expected but the log no longer holds (retention, truncation)."""

    partition: int
    expected: int
    log_start: int

    @property
    def lost(self) -> int:
        return self.log_start - self.expected


@dataclass(frozen=True, slots=True)
class Batch:
    """One micro-batch of one topic, ready for a sink to commit in one transaction.

    ``rows`` holds decoded values plus the metadata columns; ``tombstones`` holds the metadata
    columns of messages whose value was null (deletes in upsert tables, skipped otherwise).
    ``ranges`` covers every offset read, including tombstones and offsets Kafka skipped.
    ``tombstones_skipped`` counts null values the decoder decided never to apply (Debezium's
    tombstone after a ``d`` event, whose delete is already in ``tombstones``); they are in
    ``ranges`` but in neither table.
    ``rejects`` holds the messages set aside for the dead-letter table (``on_error: dlq``), as
    ``connector.dead_letters.DLQ_SCHEMA`` rows; None when there are none.
    """

    topic: str
    rows: pa.Table
    ranges: dict[int, OffsetRange]
    tombstones: pa.Table | None = None
    message_bytes: int = 0
    gaps: tuple[Gap, ...] = field(default=())
    rejects: pa.Table | None = None
    tombstones_skipped: int = 0

    @property
    def row_count(self) -> int:
        return self.rows.num_rows

    @property
    def tombstone_count(self) -> int:
        return 0 if self.tombstones is None else self.tombstones.num_rows

    @property
    def reject_count(self) -> int:
        return 0 if self.rejects is None else self.rejects.num_rows
