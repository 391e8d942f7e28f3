"""Consumer construction and the look-ups a bounded read needs, each with a bounded timeout."""

from __future__ import annotations

import logging
from collections.abc import Mapping
from dataclasses import dataclass, field
from datetime import datetime

from confluent_kafka import Consumer, KafkaException, TopicPartition

from connector.batch import Gap
from connector.librdkafka import EventedConsumer
from kafka_etl.errors import DataLossError, KafkaEtlError, TerminalError, classify

log = logging.getLogger(__name__)

Settings = Mapping[str, str | int | float | bool]

# Settings the runner owns. Offsets come from the sink's checkpoint table, never from the group.
MANAGED_SETTINGS: dict[str, str | int | float | bool] = {
    "enable.auto.commit": False,
    "enable.auto.offset.store": False,
    "auto.offset.reset": "error",  # an offset out of range is reported, never silently moved
    "enable.partition.eof": True,
}
DEFAULT_SETTINGS: dict[str, str | int | float | bool] = {
    "queued.max.messages.kbytes": 8192,  # bounds prefetch memory regardless of backlog
    "fetch.max.bytes": 16777216,
    # librdkafka waits a whole second (its default) before fetching again once that prefetch
    # queue was full: with a bounded queue, reading a backlog spent most of its time waiting.
    "fetch.queue.backoff.ms": 20,
    "socket.timeout.ms": 10000,
    "isolation.level": "read_committed",
}


def make_consumer(settings: Settings, group_id: str) -> Consumer:
    """A consumer for explicit assignment: no rebalancing, no automatic commits.

    librdkafka's log goes to the ``kafka_etl.librdkafka`` logger, and a failed look-up names
    the cause librdkafka reported (a refused login, an untrusted certificate): see
    connector/librdkafka.py.
    """
    config = {**DEFAULT_SETTINGS, "group.id": group_id, **settings, **MANAGED_SETTINGS}
    try:
        return EventedConsumer(config)
    except KafkaException as exc:
        raise classify(exc, "kafka configuration") from None


@dataclass(frozen=True, slots=True)
class ReadPlan:
    """Where a bounded read starts and stops, per partition, fixed when the run begins."""

    topic: str
    start: dict[int, int]  # first offset to read
    end: dict[int, int]  # high watermark when the run began (exclusive)
    unrecorded: frozenset[int]  # partitions with no checkpoint row yet
    gaps: tuple[Gap, ...]
    base: dict[int, int] = field(default_factory=dict)  # the stored checkpoint, if not start

    def committed_from(self, partition: int) -> int:
        """The checkpoint the first batch moves from (below ``start`` after a skipped gap)."""
        return self.base.get(partition, self.start[partition])

    @property
    def lag(self) -> dict[int, int]:
        return {p: self.end[p] - self.start[p] for p in self.start}

    @property
    def total_lag(self) -> int:
        return sum(self.lag.values())


def partitions(consumer: Consumer, topic: str, timeout: float) -> list[int]:
    try:
        metadata = consumer.list_topics(topic, timeout=timeout)
    except KafkaException as exc:
        raise classify(exc, f"kafka topic {topic}") from None
    described = metadata.topics.get(topic)
    if described is None or described.error is not None or not described.partitions:
        reason = described.error.str() if described is not None and described.error else "unknown"
        msg = f"topic {topic!r} is not available ({reason})"
        raise TerminalError(msg)
    return sorted(described.partitions)


def watermarks(
    consumer: Consumer, topic: str, parts: list[int], timeout: float
) -> dict[int, tuple[int, int]]:
    """``partition -> (log start, high watermark)`` read fresh from the brokers."""
    result = {}
    for p in parts:
        try:
            low, high = consumer.get_watermark_offsets(
                TopicPartition(topic, p), timeout=timeout, cached=False
            )
        except KafkaException as exc:
            raise classify(exc, f"kafka {topic}/{p}") from None
        result[p] = (low, high)
    return result


def plan_read(
    consumer: Consumer,
    topic: str,
    checkpoints: Mapping[int, int],
    *,
    start: str = "earliest",
    on_data_loss: str = "fail",
    timeout: float = 10.0,
) -> ReadPlan:
    """Fix the range of a run: from each checkpoint to each high watermark taken now.

    Partitions without a checkpoint start at the log start, or at the end for ``start: latest``
    when the pipeline has never committed anything. Partitions added to the topic later always
    start at the earliest offset, so their first messages are never skipped.
    """
    parts = partitions(consumer, topic, timeout)
    marks = watermarks(consumer, topic, parts, timeout)
    begin: dict[int, int] = {}
    gaps: list[Gap] = []
    for p in parts:
        low, high = marks[p]
        checkpoint = checkpoints.get(p)
        if checkpoint is None:
            begin[p] = high if (start == "latest" and not checkpoints) else low
        elif checkpoint < low:
            gap = Gap(partition=p, expected=checkpoint, log_start=low)
            if on_data_loss == "fail":
                msg = (
                    f"{topic}/{p}: checkpoint is at offset {checkpoint} but the log starts at"
                    f" {low}:"
                    f" {gap.lost} offsets were deleted before they were loaded (retention)."
                    " Set on_data_loss: skip to continue from the log start, or reset the pipeline"
                )
                raise DataLossError(msg)
            log.warning(
                "%s/%s: skipping %s deleted offsets [%s, %s)", topic, p, gap.lost, checkpoint, low
            )
            gaps.append(gap)
            begin[p] = low
        elif checkpoint > high:
            msg = (
                f"{topic}/{p}: checkpoint {checkpoint} is beyond the end of the log ({high});"
                " was the topic recreated? Reset the pipeline to continue"
            )
            raise TerminalError(msg)
        else:
            begin[p] = checkpoint
    end = {p: max(marks[p][1], begin[p]) for p in parts}
    unrecorded = frozenset(p for p in parts if p not in checkpoints)
    base = {g.partition: g.expected for g in gaps}
    return ReadPlan(topic, begin, end, unrecorded, tuple(gaps), base)


def offsets_for_time(
    consumer: Consumer, topic: str, when: datetime, timeout: float = 10.0
) -> dict[int, int]:
    """The first offset at or after ``when`` per partition (the end offset where none is)."""
    parts = partitions(consumer, topic, timeout)
    millis = int(when.timestamp() * 1000)
    query = [TopicPartition(topic, p, millis) for p in parts]
    try:
        found = consumer.offsets_for_times(query, timeout=timeout)
    except KafkaException as exc:
        raise classify(exc, f"kafka topic {topic}") from None
    marks = watermarks(consumer, topic, parts, timeout)
    return {tp.partition: (tp.offset if tp.offset >= 0 else marks[tp.partition][1]) for tp in found}


def commit_group_offsets(consumer: Consumer, topic: str, offsets: Mapping[int, int]) -> None:
    """Tell the consumer group where the sink is, for standard lag tools. Informational only."""
    if not offsets:
        return
    try:
        consumer.commit(
            offsets=[TopicPartition(topic, p, o) for p, o in offsets.items()], asynchronous=False
        )
    except (KafkaException, KafkaEtlError) as exc:
        log.warning("could not record progress in consumer group (informational only): %s", exc)
