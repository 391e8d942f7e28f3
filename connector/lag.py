"""Monitoring look-ups (sensors, checks) that must never hang: one deadline bounds every call.

``group_lag`` reads positions from the consumer group that the runner updates after each
committed batch. The group never runs ahead of the sink's checkpoint (it is written after the
database commit), so a lag computed from it is never smaller than the true lag: a sensor using
it can request a run that finds nothing to do, but can never miss a backlog. It also never opens
the target database, so a sensor does not compete with a running load for a DuckDB file lock.
"""

from __future__ import annotations

import time
from collections.abc import Mapping
from dataclasses import dataclass

from confluent_kafka import Consumer, KafkaError, KafkaException, TopicPartition

from connector.client import Settings, close_consumer, make_consumer, partitions, watermarks
from kafka_etl.errors import classify


class _Deadline:
    def __init__(self, seconds: float) -> None:
        self._end = time.monotonic() + seconds

    def left(self) -> float:
        """Seconds left, never below a small floor so a call can still fail cleanly."""
        return max(self._end - time.monotonic(), 0.1)

    @property
    def passed(self) -> bool:
        return time.monotonic() >= self._end


@dataclass(frozen=True, slots=True)
class PartitionLag:
    """One partition's backlog: the one lag type of ``kafka-etl status``, the run's lag after,
    Dagster's sensors and checks.

    ``position`` is the next offset to load: the sink's checkpoint, or the consumer group's
    committed position (``group_lag``); None when there is none, so the whole log is backlog.
    """

    partition: int
    position: int | None
    log_start: int
    high_watermark: int

    @property
    def lag(self) -> int:
        """Offsets still in the log and not loaded (retention may have deleted some below
        the log start; those are a gap, not a backlog)."""
        start = self.position if self.position is not None else self.log_start
        return max(self.high_watermark - max(start, self.log_start), 0)


def group_lag(
    settings: Settings, topic: str, group_id: str, *, timeout: float = 10.0
) -> list[PartitionLag]:
    """Committed position, log start and high watermark per partition, within ``timeout`` s.

    A partition the group has no position for counts from its log start: a pipeline that never
    ran has its whole topic as backlog.
    """
    deadline = _Deadline(timeout)
    consumer = make_consumer(settings, group_id)
    try:
        parts = partitions(consumer, topic, deadline.left())
        marks = watermarks(consumer, topic, parts, deadline.left())
        try:
            committed = consumer.committed(
                [TopicPartition(topic, p) for p in parts], timeout=deadline.left()
            )
        except KafkaException as exc:
            raise classify(exc, f"kafka group {group_id}") from None
    finally:
        close_consumer(consumer)
    positions = {tp.partition: tp.offset for tp in committed if tp.offset >= 0}
    return [PartitionLag(p, positions.get(p), *marks[p]) for p in parts]


def first_timestamps(
    consumer: Consumer,
    topic: str,
    positions: Mapping[int, int],
    ends: Mapping[int, int],
    *,
    timeout: float = 10.0,
) -> dict[int, int]:
    """Timestamp (ms) of the first message in ``[position, end)`` per partition.

    Partitions whose range holds no message (only transaction markers or compacted offsets)
    are left out, as are those the brokers did not answer for within ``timeout``.
    """
    wanted = {p: o for p, o in positions.items() if o < ends.get(p, o)}
    if not wanted:
        return {}
    deadline = _Deadline(timeout)
    found: dict[int, int] = {}
    consumer.assign([TopicPartition(topic, p, o) for p, o in sorted(wanted.items())])
    try:
        while len(found) < len(wanted) and not deadline.passed:
            for message in consumer.consume(num_messages=100, timeout=min(deadline.left(), 0.5)):
                p = message.partition()
                if p not in wanted or p in found:
                    continue
                error = message.error()
                if error is not None:
                    if error.code() == KafkaError._PARTITION_EOF:
                        found.setdefault(p, -1)
                        continue
                    raise classify(KafkaException(error), f"kafka {topic}/{p}")
                offset = message.offset() or 0
                found[p] = message.timestamp()[1] if offset < ends[p] else -1
    finally:
        consumer.unassign()
    return {p: ts for p, ts in found.items() if ts >= 0}
