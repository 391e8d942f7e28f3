"""Consumer construction and the look-ups a bounded read needs, each with a bounded timeout."""

from __future__ import annotations

import logging
import re
import socket
import threading
import time
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from datetime import datetime
from typing import TypeVar

from confluent_kafka import (
    OFFSET_BEGINNING,
    OFFSET_END,
    Consumer,
    KafkaError,
    KafkaException,
    TopicPartition,
)

from connector.batch import Gap
from connector.librdkafka import EventedConsumer, given_up
from connector.names import ISOLATION_LEVEL, MANAGED_SETTINGS
from kafka_etl.errors import (
    DataLossError,
    KafkaCause,
    KafkaEtlError,
    SourceUnavailableError,
    TerminalError,
    classify,
)

log = logging.getLogger(__name__)

Settings = Mapping[str, str | int | float | bool]

# Look-ups at the start of a run (topic metadata, watermarks) retry transient errors for up to
# this many seconds in all: a partition leader that just died is replaced within seconds, and a
# cluster that stays unreachable for this long ends the run (exit 75) instead of hanging it.
LOOKUP_DEADLINE = 30.0
_ATTEMPT_TIMEOUT = 10.0  # one look-up attempt; librdkafka waits it out when nothing answers
_RETRY_PAUSE = 0.5
# close() delivers the group commits still in flight, so lag tools see the last batch; with the
# coordinator unreachable librdkafka retries them without end, so a close is given this long.
CLOSE_TIMEOUT = 10.0


def _log_commit(error: KafkaError | None, offsets: list[TopicPartition]) -> None:
    """``on_commit``: the group's offsets are informational, so a failed commit is only logged
    (at INFO: shown with ``-v``, never a line beside a run's own outcome), once for a run of
    failures with the same cause (every batch fails alike while the coordinator is unreachable)."""
    failed = [tp for tp in offsets if tp.error is not None]
    if error is None and not failed:
        _commit_failure.clear()
        return
    first = error if error is not None else failed[0].error
    reason = first.str() if first is not None else "unknown"
    if _commit_failure == [reason]:
        return
    _commit_failure[:] = [reason]
    where = ", ".join(f"{tp.topic}/{tp.partition}@{tp.offset}" for tp in offsets)
    log.info(
        "could not record progress in consumer group (informational only; %s): %s", where, reason
    )


_commit_failure: list[str] = []  # the cause of the failures ``_log_commit`` last reported


# Set on every consumer after the user's settings, with ``connector.names.MANAGED_SETTINGS``.
_CALLBACKS: dict[str, Callable[..., None]] = {
    "on_commit": _log_commit,  # group commits are asynchronous (``commit_group_offsets``)
}

DEFAULT_SETTINGS: dict[str, str | int | float | bool] = {
    "queued.max.messages.kbytes": 8192,  # bounds prefetch memory regardless of backlog
    "fetch.max.bytes": 16777216,
    # librdkafka waits a whole second (its default) before fetching again once that prefetch
    # queue was full: with a bounded queue, reading a backlog spent most of its time waiting.
    "fetch.queue.backoff.ms": 20,
    "socket.timeout.ms": 10000,
    "isolation.level": ISOLATION_LEVEL,
    # close() waits this long for a group coordinator it never found (librdkafka's default is
    # 45 s). The group is never joined (partitions are assigned), so it bounds nothing else.
    "session.timeout.ms": 6000,
}


def make_consumer(settings: Settings, group_id: str) -> Consumer:
    """A consumer for explicit assignment: no rebalancing, no automatic commits.

    librdkafka's log goes to the ``kafka_etl.librdkafka`` logger, and a failed look-up names
    the cause librdkafka reported (a refused login, an untrusted certificate): see
    connector/librdkafka.py.
    """
    config = {
        **DEFAULT_SETTINGS,
        "group.id": group_id,
        **settings,
        **MANAGED_SETTINGS,
        **_CALLBACKS,
    }
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


T = TypeVar("T")


def _retrying(what: str, timeout: float, attempt: Callable[[float], T]) -> T:
    """``attempt(seconds)`` until it succeeds, a terminal error, or ``timeout`` s in all (a
    cluster nobody listens at is given up on sooner: ``librdkafka.given_up``)."""
    began = time.monotonic()
    deadline = began + timeout
    while True:
        left = deadline - time.monotonic()
        try:
            return attempt(max(min(left, _ATTEMPT_TIMEOUT), 0.1))
        except KafkaException as exc:
            # A look-up of several partitions names the ones that failed (``list_offsets``).
            error = classify(exc, getattr(exc, "where", what))
            cause = getattr(exc, "cause", None)
        if not error.transient or deadline - time.monotonic() < _RETRY_PAUSE:
            raise error
        if given_up(cause if isinstance(cause, KafkaCause) else None, began):
            raise error
        log.debug("%s; retrying", error)
        time.sleep(_RETRY_PAUSE)


def partitions(consumer: Consumer, topic: str, timeout: float) -> list[int]:
    """The topic's partitions; transient errors are retried for up to ``timeout`` s in all."""
    metadata = _retrying(
        f"kafka topic {topic}", timeout, lambda t: consumer.list_topics(topic, timeout=t)
    )
    described = metadata.topics.get(topic)
    if described is None or described.error is not None or not described.partitions:
        reason = described.error.str() if described is not None and described.error else "unknown"
        msg = f"topic {topic!r} is not available ({reason})"
        raise TerminalError(msg)
    return sorted(described.partitions)


def topic_names(consumer: Consumer, timeout: float) -> list[str]:
    """Every topic of the cluster, sorted; transient errors are retried for up to ``timeout`` s."""
    metadata = _retrying("kafka topics", timeout, lambda t: consumer.list_topics(timeout=t))
    return sorted(name for name, t in metadata.topics.items() if t.error is None)


def watermarks(
    consumer: Consumer, topic: str, parts: list[int], timeout: float
) -> dict[int, tuple[int, int]]:
    """``partition -> (log start, high watermark)`` read fresh from the brokers, retrying
    transient errors (a leader moving) for up to ``timeout`` s for all partitions together.

    Two round trips whatever the partition count: one ListOffsets request per partition leader
    for the log starts, then one for the high watermarks (``list_offsets``). The high watermark
    is what ``get_watermark_offsets`` gives: the same request, at the consumer's isolation level.
    """
    if not parts:
        return {}
    deadline = time.monotonic() + timeout
    low = list_offsets(consumer, topic, parts, OFFSET_BEGINNING, timeout)
    high = list_offsets(consumer, topic, parts, OFFSET_END, max(deadline - time.monotonic(), 0.1))
    return {p: (low[p], high[p]) for p in parts}


def list_offsets(
    consumer: Consumer, topic: str, parts: list[int], query: int, timeout: float
) -> dict[int, int]:
    """``partition -> offset`` for ``query`` on every partition of ``parts`` at once: a
    timestamp in ms (the first offset at or after it, -1 where there is none), or
    ``OFFSET_BEGINNING`` / ``OFFSET_END`` for the log start / the high watermark.

    librdkafka sends one ListOffsets request per partition leader (``offsets_for_times``), so
    the cost is a round trip, not one per partition. A partition whose leader is not known
    yet is asked again, alone with any others that failed, until ``timeout`` s in all; the
    error names it (``kafka topic/partition: ...``).
    """
    found: dict[int, int] = {}

    def attempt(seconds: float) -> dict[int, int]:
        pending = [p for p in parts if p not in found]
        asked = [TopicPartition(topic, p, query) for p in pending]
        try:
            answered = consumer.offsets_for_times(asked, timeout=seconds)
        except KafkaException as exc:
            error = exc.args[0] if exc.args else None
            if isinstance(error, KafkaError) and error.code() == KafkaError._UNKNOWN_PARTITION:
                exc = _leader_unknown(exc, error)  # none of the partitions asked has one
            exc.where = _where(topic, pending)  # type: ignore[attr-defined]
            raise exc from None
        failed: dict[int, KafkaError] = {}
        for tp in answered:
            if tp.error is None:
                found[tp.partition] = int(tp.offset)
            else:
                failed[tp.partition] = tp.error
        unanswered = [p for p in pending if p not in found]
        if unanswered:
            # Only the leader look-up fails per partition (a broker's error fails the call).
            first = next(iter(failed.values()), KafkaError(KafkaError._NOENT, "no answer"))
            leaderless = _leader_unknown(KafkaException(first), first)
            leaderless.where = _where(topic, unanswered)  # type: ignore[attr-defined]
            raise leaderless
        return found

    return _retrying(f"kafka topic {topic}", timeout, attempt)


def _leader_unknown(exc: KafkaException, error: KafkaError) -> KafkaException:
    """The topic's metadata listed the partition: what is unknown is its leader, for now (a
    transient error, whatever librdkafka's code for it)."""
    leaderless = KafkaException(
        KafkaError(KafkaError.LEADER_NOT_AVAILABLE, f"{error.str()} (no leader known)")
    )
    if hasattr(exc, "cause"):
        leaderless.cause = exc.cause  # type: ignore[attr-defined]
    return leaderless


def _where(topic: str, parts: list[int]) -> str:
    """``kafka topic/3``, ``kafka topic/0-999`` or ``kafka topic/4 and 2 more partitions``."""
    if len(parts) == 1:
        return f"kafka {topic}/{parts[0]}"
    ordered = sorted(parts)
    if ordered == list(range(ordered[0], ordered[-1] + 1)):
        return f"kafka {topic}/{ordered[0]}-{ordered[-1]}"
    return f"kafka {topic}/{ordered[0]} and {len(ordered) - 1} more partitions"


def plan_read(
    consumer: Consumer,
    topic: str,
    checkpoints: Mapping[int, int],
    *,
    start: str = "earliest",
    on_data_loss: str = "fail",
    timeout: float = LOOKUP_DEADLINE,
    owns: Callable[[int], bool] | None = None,
) -> ReadPlan:
    """Fix the range of a run: from each checkpoint to each high watermark taken now.

    ``owns`` narrows the run to the partitions it accepts (a shard's): only theirs are looked
    up, so another shard's partition without a leader cannot delay or fail this one.

    Partitions without a checkpoint start at the log start, or at the end for ``start: latest``
    when the pipeline has never committed anything. Partitions added to the topic later always
    start at the earliest offset, so their first messages are never skipped. The look-ups
    retry transient errors for ``timeout`` s in all.
    """
    deadline = time.monotonic() + timeout
    parts = partitions(consumer, topic, timeout)
    if owns is not None:
        parts = [p for p in parts if owns(p)]
    marks = watermarks(consumer, topic, parts, max(deadline - time.monotonic(), 0.1))
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
    found = list_offsets(consumer, topic, parts, int(when.timestamp() * 1000), timeout)
    missing = [p for p in parts if found[p] < 0]
    ends = list_offsets(consumer, topic, missing, OFFSET_END, timeout) if missing else {}
    return {p: ends.get(p, found[p]) for p in parts}


def commit_group_offsets(consumer: Consumer, topic: str, offsets: Mapping[int, int]) -> None:
    """Tell the consumer group where the sink is, for standard lag tools. Informational only:
    asynchronous, so an unreachable coordinator never blocks a load; failures are logged by
    ``on_commit`` when ``consume()`` or ``close()`` serves the result."""
    if not offsets:
        return
    try:
        consumer.commit(
            offsets=[TopicPartition(topic, p, o) for p, o in offsets.items()], asynchronous=True
        )
    except (KafkaException, KafkaEtlError) as exc:
        log.warning("could not record progress in consumer group (informational only): %s", exc)


def close_consumer(consumer: Consumer, timeout: float = CLOSE_TIMEOUT) -> None:
    """``consumer.close()``, abandoned after ``timeout`` s: it waits for the informational group
    commits in flight, which never end while the coordinator is unreachable. The abandoned
    close goes on in a daemon thread (the handle is freed if it ever returns, or at exit)."""
    closer = threading.Thread(target=consumer.close, name="kafka-etl-close", daemon=True)
    closer.start()
    closer.join(timeout)
    if closer.is_alive():
        log.info(
            "kafka consumer did not close within %.0fs (the group's informational offsets may"
            " lag behind the checkpoint); leaving it",
            timeout,
        )


def explain_unreachable(error: SourceUnavailableError, settings: Settings) -> KafkaEtlError:
    """``error``, reworded as "cannot reach Kafka at HOST:PORT: REASON (...)" when no bootstrap
    address accepts a TCP connection: the cause a user can act on, which librdkafka's own
    errors ("Local: Broker transport failure") do not name."""
    if "cannot reach Kafka" in str(error):  # librdkafka's own events said so already
        return error
    servers = str(settings.get("bootstrap.servers", ""))
    reasons = []
    for address in filter(None, (a.strip() for a in servers.split(","))):
        reason = _tcp_reason(address)
        if reason is None:
            return error  # a broker is listening: the original error says more
        reasons.append(reason)
    if not reasons:
        return error
    reason = (
        reasons[0]
        if len(set(reasons)) == 1
        else "; ".join(
            f"{a.strip()}: {r}" for a, r in zip(servers.split(","), reasons, strict=False)
        )
    )
    return SourceUnavailableError(f"cannot reach Kafka at {servers}: {reason} ({plain(error)})")


_KAFKA_ERROR_REPR = re.compile(r'KafkaError\{code=\w+,val=-?\d+,str="(.*)"\}')


def plain(error: BaseException) -> str:
    """An error's message with librdkafka's ``KafkaError{code=…,str="…"}`` reduced to its text."""
    return _KAFKA_ERROR_REPR.sub(r"\1", str(error))


def _tcp_reason(address: str, timeout: float = 2.0) -> str | None:
    """Why ``host:port`` takes no TCP connection, or None if it does."""
    hostport = address.rsplit("://", 1)[-1]
    host, _, port = hostport.rpartition(":")
    host = host.strip("[]")
    try:
        with socket.create_connection((host, int(port)), timeout=timeout):
            return None
    except ValueError:
        return None  # not host:port; leave it to librdkafka's message
    except socket.gaierror as exc:
        return f"cannot resolve {host} ({exc.strerror})"
    except TimeoutError:
        return f"no answer within {timeout:.0f}s"
    except ConnectionRefusedError:
        return "connection refused"
    except OSError as exc:
        return (exc.strerror or str(exc)).lower()
