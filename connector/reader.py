"""Bounded reads: from the planned start offsets up to the high watermarks taken at the start.

Messages are pulled with ``consume()`` in chunks and turned into columns right away (one C-level
pass per attribute, no per-message Python logic), then grouped into micro-batches bounded by rows
and bytes, so memory does not grow with the backlog. A partition that reaches its end is paused,
so a producer writing throughout the run cannot keep it alive.

A read never waits for ever: when no message arrives for ``probe_after`` seconds, the reader
asks the cluster for the topic's metadata; a cluster that stays unreachable for
``unreachable_timeout`` seconds ends the read with ``SourceUnavailableError``, and one that
answers but sends nothing for ``idle_timeout`` seconds ends it too.
"""

from __future__ import annotations

import time
from collections.abc import Iterator
from dataclasses import dataclass
from itertools import chain
from typing import cast

import numpy as np
from confluent_kafka import Consumer, KafkaError, KafkaException, Message, TopicPartition

from connector.batch import OffsetRange
from connector.client import ReadPlan
from kafka_etl.errors import SourceUnavailableError, classify

# One message's Kafka headers as librdkafka returns them: ordered, keys may repeat.
Headers = list[tuple[str, bytes | None]] | None


@dataclass(slots=True)
class RawBatch:
    """Undecoded messages of one micro-batch as parallel columns, in consume order."""

    topic: str
    values: list[bytes | None]
    keys: list[bytes | None]
    partitions: np.ndarray  # int32
    offsets: np.ndarray  # int64
    timestamps: np.ndarray  # int64, milliseconds since the epoch
    ranges: dict[int, OffsetRange]
    nbytes: int
    # Per message: ``[(key, value), ...]`` or None; only filled with ``include_headers=True``.
    headers: list[Headers] | None = None

    def __len__(self) -> int:
        return len(self.values)


@dataclass(slots=True)
class _Chunk:
    values: list[bytes | None]
    keys: list[bytes | None]
    partitions: np.ndarray
    offsets: np.ndarray
    timestamps: np.ndarray
    nbytes: int
    headers: list[Headers] | None = None


class BoundedReader:
    """Iterates ``RawBatch`` micro-batches covering exactly ``plan.start -> plan.end``."""

    def __init__(
        self,
        consumer: Consumer,
        plan: ReadPlan,
        *,
        max_rows: int = 200_000,
        max_bytes: int = 64 * 1024 * 1024,
        chunk: int = 10_000,
        idle_timeout: float = 60.0,
        unreachable_timeout: float = 20.0,
        probe_after: float = 5.0,
        include_headers: bool = False,
    ) -> None:
        self._consumer = consumer
        self._plan = plan
        self._max_rows = max_rows
        self._max_bytes = max_bytes
        self._chunk = min(chunk, max_rows)
        self._idle_timeout = idle_timeout
        self._unreachable_timeout = unreachable_timeout
        self._probe_after = probe_after
        self._include_headers = include_headers
        self._position = dict(plan.start)  # next offset to read, per partition
        self._committed = {p: plan.committed_from(p) for p in plan.start}  # the CAS base
        width = max(plan.end, default=-1) + 1
        self._ends = np.full(width, -1, dtype=np.int64)
        for p, end in plan.end.items():
            self._ends[p] = end
        self._active = {p for p in plan.start if plan.start[p] < plan.end[p]}

    def __iter__(self) -> Iterator[RawBatch]:
        plan = self._plan
        # Partitions whose checkpoint row must be written even if no message arrives: new
        # ones (recorded at their start) and those that skipped a gap (moved to the log start).
        pending = set(plan.unrecorded) | set(plan.base)
        if self._active:
            self._consumer.assign(
                [TopicPartition(plan.topic, p, plan.start[p]) for p in sorted(self._active)]
            )
        try:
            while self._active or pending:
                batch = self._read_batch() if self._active else self._assemble([], {})
                for p in pending:
                    if p not in batch.ranges:
                        batch.ranges[p] = OffsetRange(p, self._committed[p], self._position[p])
                        self._committed[p] = self._position[p]
                pending.clear()
                yield batch
        finally:
            if self._active or plan.start:
                self._consumer.unassign()

    def _read_batch(self) -> RawBatch:
        chunks: list[_Chunk] = []
        rows = nbytes = 0
        first = {p: self._committed[p] for p in self._active}
        last_progress = last_probe = time.monotonic()
        unreachable_since: float | None = None
        while self._active and rows < self._max_rows and nbytes < self._max_bytes:
            messages = self._consumer.consume(
                num_messages=min(self._chunk, self._max_rows - rows), timeout=0.5
            )
            if not messages:
                now = time.monotonic()
                if now - last_progress > self._idle_timeout:
                    msg = (
                        f"kafka {self._plan.topic}: no data for {self._idle_timeout:.0f}s while"
                        f" partitions still had offsets to read ({self._waiting()})"
                    )
                    raise SourceUnavailableError(msg)
                if now - last_probe >= self._probe_after:
                    last_probe = now
                    if self._cluster_answers():
                        unreachable_since = None
                    else:
                        unreachable_since = unreachable_since or now
                        if time.monotonic() - unreachable_since > self._unreachable_timeout:
                            msg = (
                                f"kafka {self._plan.topic}: no broker answered for"
                                f" {self._unreachable_timeout:.0f}s while partitions still had"
                                f" offsets to read ({self._waiting()})"
                            )
                            raise SourceUnavailableError(msg)
                continue
            last_progress = last_probe = time.monotonic()
            unreachable_since = None
            chunk = self._columns(messages)
            if chunk is not None and len(chunk.values):
                chunks.append(chunk)
                rows += len(chunk.values)
                nbytes += chunk.nbytes
        return self._assemble(chunks, first)

    def _waiting(self) -> str:
        return ", ".join(
            f"{p}@{self._position[p]}<{self._plan.end[p]}" for p in sorted(self._active)
        )

    def _cluster_answers(self) -> bool:
        """Does any broker answer a metadata request? librdkafka's ``consume()`` shows no sign
        of a dead cluster (it retries its connections for ever), so the reader asks."""
        try:
            self._consumer.list_topics(self._plan.topic, timeout=self._probe_after)
        except KafkaException as exc:
            error = classify(exc, f"kafka {self._plan.topic}")
            if error.transient:
                return False
            raise error from None
        return True

    def _columns(self, messages: list[Message]) -> _Chunk | None:
        errors = [m for m in messages if m.error() is not None]
        if errors:
            self._handle_events(errors)
            messages = [m for m in messages if m.error() is None]
            if not messages:
                return None
        partitions = np.fromiter((m.partition() for m in messages), np.int32, len(messages))
        offsets = np.fromiter((m.offset() for m in messages), np.int64, len(messages))
        ends = self._ends[partitions]
        keep = offsets < ends
        if not keep.all():
            # Messages written after the run started: not ours. Their partitions are done.
            for p in np.unique(partitions[~keep]).tolist():
                self._finish(p, int(self._plan.end[p]))
            messages = [m for m, k in zip(messages, keep.tolist(), strict=True) if k]
            partitions, offsets = partitions[keep], offsets[keep]
        if not messages:
            return None
        self._advance(partitions, offsets)
        values = [m.value() for m in messages]
        return _Chunk(
            values=values,
            keys=[m.key() for m in messages],
            partitions=partitions,
            offsets=offsets,
            timestamps=np.fromiter((m.timestamp()[1] for m in messages), np.int64, len(messages)),
            nbytes=sum(map(len, filter(None, values))),
            headers=(
                [cast(Headers, m.headers()) for m in messages] if self._include_headers else None
            ),
        )

    def _advance(self, partitions: np.ndarray, offsets: np.ndarray) -> None:
        # The last offset per partition in this chunk: messages of a partition arrive in order.
        order = np.lexsort((offsets, partitions))
        sorted_parts = partitions[order]
        last_index = np.flatnonzero(np.append(sorted_parts[1:] != sorted_parts[:-1], True))
        for p, last in zip(
            sorted_parts[last_index].tolist(), offsets[order][last_index].tolist(), strict=True
        ):
            self._position[p] = last + 1
            if last + 1 >= self._plan.end[p]:
                self._finish(p, last + 1)

    def _handle_events(self, events: list[Message]) -> None:
        for event in events:
            error = event.error()
            if error is None:
                continue
            if error.code() == KafkaError._PARTITION_EOF:
                p = event.partition()
                # Everything below the end offset was delivered or skipped by Kafka
                # (transaction markers, compaction): the partition is complete up to there.
                if p in self._active and (event.offset() or 0) >= self._plan.end[p]:
                    self._finish(p, self._plan.end[p])
                continue
            where = f"kafka {event.topic()}/{event.partition()}@{event.offset()}"
            raise classify(KafkaException(error), where)

    def _finish(self, partition: int, position: int) -> None:
        if partition not in self._active:
            return
        self._position[partition] = max(self._position[partition], position)
        self._active.discard(partition)
        self._consumer.pause([TopicPartition(self._plan.topic, partition)])

    def _assemble(self, chunks: list[_Chunk], first: dict[int, int]) -> RawBatch:
        # Every partition that moved, including those finished by an end-of-partition event
        # with no new message (their last offsets were transaction markers or compacted away).
        ranges = {
            p: OffsetRange(p, start, self._position[p])
            for p, start in first.items()
            if self._position[p] > start
        }
        for r in ranges.values():
            self._committed[r.partition] = r.next
        if len(chunks) == 1:
            c = chunks[0]
            return RawBatch(
                self._plan.topic,
                c.values,
                c.keys,
                c.partitions,
                c.offsets,
                c.timestamps,
                ranges,
                c.nbytes,
                c.headers,
            )
        return RawBatch(
            topic=self._plan.topic,
            values=list(chain.from_iterable(c.values for c in chunks)),
            keys=list(chain.from_iterable(c.keys for c in chunks)),
            partitions=np.concatenate([c.partitions for c in chunks] or [np.empty(0, np.int32)]),
            offsets=np.concatenate([c.offsets for c in chunks] or [np.empty(0, np.int64)]),
            timestamps=np.concatenate([c.timestamps for c in chunks] or [np.empty(0, np.int64)]),
            ranges=ranges,
            nbytes=sum(c.nbytes for c in chunks),
            headers=(
                list(chain.from_iterable(c.headers or () for c in chunks))
                if self._include_headers
                else None
            ),
        )

    @property
    def positions(self) -> dict[int, int]:
        return dict(self._position)
