"""The runner joins one source to one sink, in the one order that keeps loads exactly once:

read the checkpoint -> fix the high watermarks -> read a bounded micro-batch -> commit its rows
and its next offsets in one sink transaction -> report (and tell the consumer group).
The CLI and Dagster both call ``run_pipeline``; neither has a loading path of its own. A
multi-topic pipeline is resolved into members (``members``, ``pipelines.topics``), each one
topic into one table, and ``run_members`` runs ``run_pipeline`` for each.
"""

from __future__ import annotations

import logging
import threading
import time
from collections import deque
from collections.abc import Callable, Collection, Iterator
from concurrent.futures import Future
from contextlib import contextmanager
from dataclasses import dataclass, field
from datetime import datetime
from typing import Literal

import pyarrow as pa
from confluent_kafka import Consumer

from connector.batch import Batch, Gap, OffsetRange
from connector.client import (
    CLOSE_TIMEOUT,
    ReadPlan,
    close_consumer,
    commit_group_offsets,
    explain_unreachable,
    make_consumer,
    offsets_for_time,
    partitions,
    plain,
    plan_read,
    watermarks,
)
from connector.lag import PartitionLag
from connector.reader import BoundedReader, RawBatch
from kafka_etl.errors import KafkaEtlError, SourceUnavailableError, TerminalError, classify
from pipelines import topics as topic_rules
from pipelines.ahead import Ahead
from pipelines.config import Pipeline, Project
from pipelines.conflicts import charge_conflicts, set_aside_conflicts
from pipelines.definition import (
    Decoded,
    PipelineDefinition,
    decoded,
    decoder_for,
    error_budget,
    table_spec,
)
from pipelines.process import bulk_allocation, limit_malloc_arenas
from pipelines.shards import Shard, ShardError, check_shard, shard_of, shard_plan
from sinks.base import SchemaChange, Sink, WriteResult

log = logging.getLogger(__name__)
# After the last commit the run has done its work: the lag it then reports waits at most this
# long for the brokers (a partition whose leader just died has none for a few seconds).
_LAG_AFTER_TIMEOUT = 5.0


@dataclass(frozen=True, slots=True)
class Progress:
    """Reported after every committed batch."""

    rows: int
    offsets_done: int
    offsets_total: int


class RunInterrupted(KeyboardInterrupt):
    """A load stopped by a KeyboardInterrupt (or a subclass, such as the CLI's SIGTERM) after
    the writes in flight ended. It is still a KeyboardInterrupt for callers that only know
    that one; ``rows``, ``batches`` and ``committed`` (``partition -> next offset``) are exactly
    what committed before it, ``cause`` is the interrupt itself; ``replay`` for a backfill."""

    def __init__(
        self,
        pipeline: str,
        cause: BaseException,
        rows: int,
        batches: int,
        committed: dict[int, int],
        replay: bool = False,
    ) -> None:
        super().__init__(f"pipeline {pipeline!r} interrupted")
        self.pipeline = pipeline
        self.replay = replay
        self.cause = cause
        self.rows = rows
        self.batches = batches
        self.committed = committed


@dataclass(frozen=True, slots=True)
class RunResult:
    pipeline: str
    topic: str
    table: str
    rows: int
    tombstones: int
    batches: int
    ranges: dict[int, OffsetRange]
    lag_after: dict[int, int]
    gaps: tuple[Gap, ...]
    columns_added: tuple[str, ...]
    seconds: float
    message_bytes: int
    table_rows: int | None  # None: unknown (the database went away after the last commit)
    schema: pa.Schema | None = field(default=None)
    dead_lettered: int = 0
    shard: Shard | None = None  # None: the run covered every partition

    @property
    def rows_per_second(self) -> float:
        return self.rows / self.seconds if self.seconds > 0 else 0.0


@dataclass(slots=True)
class _Tally:
    """What the committed batches of one run added up to.

    Added to by the writer threads right after each commit, so an interrupt of the reading
    thread at any moment cannot lose a committed batch from the count. With two writes in
    flight the later one may be added first: ranges merge by their bounds, not their order.
    """

    rows: int = 0
    tombstones: int = 0
    dead_lettered: int = 0
    batches: int = 0
    message_bytes: int = 0
    loaded: dict[int, OffsetRange] = field(default_factory=dict)
    added: list[str] = field(default_factory=list)
    lock: threading.Lock = field(default_factory=threading.Lock)

    def add(self, batch: Batch, written: WriteResult) -> None:
        with self.lock:
            self._add(batch, written)

    def _add(self, batch: Batch, written: WriteResult) -> None:
        self.batches += 1
        self.rows += written.rows_written
        self.tombstones += written.tombstones_skipped
        self.dead_lettered += written.rows_dead_lettered
        self.message_bytes += batch.message_bytes
        self.added.extend(written.columns_added)
        for p, r in batch.ranges.items():
            before = self.loaded.get(p)
            if before is None:
                self.loaded[p] = r
            else:
                self.loaded[p] = OffsetRange(
                    p, min(before.first, r.first), max(before.next, r.next)
                )

    @property
    def next_offsets(self) -> dict[int, int]:
        with self.lock:
            return {p: r.next for p, r in self.loaded.items()}

    @property
    def offsets_done(self) -> int:
        with self.lock:  # a writer thread may be adding a partition meanwhile
            return sum(r.size for r in self.loaded.values())


@contextmanager
def _connections(project: Project, pipeline: Pipeline) -> Iterator[tuple[Sink, Consumer]]:
    definition = PipelineDefinition(project, pipeline)
    sink = definition.open_sink()
    try:
        settings = definition.consumer_settings
        consumer = make_consumer(settings, pipeline.consumer_group)
        unreachable = False
        try:
            yield sink, consumer
        except SourceUnavailableError as exc:
            unreachable = True
            raise explain_unreachable(exc, settings) from None
        finally:
            # With the cluster gone, close() only waits for commits that cannot complete.
            close_consumer(consumer, timeout=1.0 if unreachable else CLOSE_TIMEOUT)
    finally:
        sink.close()


def _single(project: Project, name: str | Pipeline) -> Pipeline:
    """The pipeline to load as one topic into one table: a member (from ``members``) as it is,
    a single-topic pipeline by name; a multi-topic one by name is refused (see ``run_members``)."""
    if isinstance(name, Pipeline):
        return name
    pipeline = project.pipeline(name)
    if pipeline.multi_topic:
        msg = (
            f"pipeline {name!r} reads several topics ({pipeline.topics_shown}); load it with"
            " run_members (or one of its members)"
        )
        raise TerminalError(msg)
    return pipeline


def members(
    project: Project, name: str, *, topic: str | None = None, tables: Collection[str] | None = None
) -> list[Pipeline]:
    """The pipeline resolved now into its members, each a single-topic ``Pipeline`` (a
    single-topic pipeline is its own one member). A pattern lists the cluster's topics, bounded
    in time (``pipelines.topics``). ``topic`` keeps that member only (``TerminalError`` if the
    pipeline has none of that name); ``tables`` keeps the members loading into those tables."""
    pipeline = project.pipeline(name)
    if not pipeline.multi_topic:
        found = [topic_rules.Member(pipeline.topic, pipeline.table)]
    elif pipeline.topic_pattern is None:
        found = topic_rules.resolve(pipeline, None)
    else:
        settings = PipelineDefinition(project, pipeline).consumer_settings
        consumer = make_consumer(settings, pipeline.consumer_group)
        try:
            found = topic_rules.resolve(pipeline, consumer)
        except SourceUnavailableError as exc:
            raise explain_unreachable(exc, settings) from None
        finally:
            close_consumer(consumer, timeout=1.0)
    if topic is not None:
        kept = [m for m in found if m.topic == topic]
        if not kept:
            known = ", ".join(m.topic for m in found) or "none"
            msg = f"pipeline {name!r} reads no topic {topic!r} (its topics now: {known})"
            raise TerminalError(msg)
        found = kept
    if tables is not None:
        found = [m for m in found if m.table in tables]
    return [pipeline.member(m) if pipeline.multi_topic else pipeline for m in found]


@dataclass(frozen=True, slots=True)
class MembersResult:
    """One run of every member of a pipeline: what each committed, and the time spent finding
    the members (listing the cluster's topics for a pattern)."""

    pipeline: str
    members: tuple[Pipeline, ...]
    results: tuple[RunResult, ...]  # one per member, in the same order
    planning_seconds: float
    seconds: float
    shard: Shard | None = None

    @property
    def rows(self) -> int:
        return sum(r.rows for r in self.results)

    @property
    def topics(self) -> int:
        return len(self.results)

    @property
    def partitions(self) -> int:
        return sum(len(r.ranges) for r in self.results)

    @property
    def tables(self) -> tuple[str, ...]:
        return tuple(dict.fromkeys(r.table for r in self.results))

    @property
    def rows_per_second(self) -> float:
        return self.rows / self.seconds if self.seconds > 0 else 0.0


def run_members(
    project: Project,
    name: str,
    *,
    shard: Shard | None = None,
    topic: str | None = None,
    tables: Collection[str] | None = None,
    on_start: Callable[[ReadPlan], None] | None = None,
    on_progress: Callable[[Progress], None] | None = None,
) -> MembersResult:
    """``run_pipeline`` for every member of the pipeline (or those of ``topic``/``tables``),
    one after the other, each with its own read plan and transactions. The shard split applies
    per topic: partition p of every topic is in shard p % N. A failure stops at that member;
    the members before it committed (and the next run continues each from its checkpoint)."""
    started = time.monotonic()
    pipeline = project.pipeline(name)
    _check_shard(pipeline, shard)
    found = members(project, name, topic=topic, tables=tables)
    planned = time.monotonic() - started
    results = tuple(
        run_pipeline(project, m, shard=shard, on_start=on_start, on_progress=on_progress)
        for m in found
    )
    return MembersResult(name, tuple(found), results, planned, time.monotonic() - started, shard)


def run_pipeline(
    project: Project,
    name: str | Pipeline,
    *,
    shard: Shard | None = None,
    on_start: Callable[[ReadPlan], None] | None = None,
    on_progress: Callable[[Progress], None] | None = None,
) -> RunResult:
    """Load everything up to the high watermarks taken now; return what was committed.

    With ``shard``, only the partitions that shard owns (``pipelines.shards``): the plan, the
    checkpoints moved and the consumer group's offsets committed are theirs alone. The shard
    is a pipeline of its own for ``start: latest``: its partitions start at the end while it
    has no checkpoint, whatever the other shards committed. ``name`` may be a member of a
    multi-topic pipeline (``members``).
    """
    pipeline = _single(project, name)
    _check_shard(pipeline, shard)
    started = time.monotonic()
    limit_malloc_arenas()  # before the consumer's and the writer's threads exist
    with _connections(project, pipeline) as (sink, consumer):
        checkpoints = sink.read_checkpoints()
        if shard is not None:
            checkpoints = {p: o for p, o in checkpoints.items() if shard.owns(p)}
        # Only the shard's own partitions are looked up and planned.
        plan = plan_read(
            consumer,
            pipeline.topic,
            checkpoints,
            start=pipeline.start,
            on_data_loss=pipeline.on_data_loss,
            owns=shard.owns if shard is not None else None,
        )
        if shard is not None:
            plan = _owned(plan, shard)
        return _load(pipeline, sink, consumer, plan, started, False, on_start, on_progress, shard)


def _check_shard(pipeline: Pipeline, shard: Shard | None) -> None:
    if shard is None:
        return
    try:
        check_shard(shard, pipeline.declared_shards, pipeline.name)
    except ShardError as exc:
        raise TerminalError(str(exc)) from None


def _owned(plan: ReadPlan, shard: Shard) -> ReadPlan:
    owned = shard_plan(plan, shard)
    if not owned.start:
        log.warning(
            "warning: shard %s owns no partition of topic %s (partitions: %s); nothing to load",
            shard,
            plan.topic,
            _listed(sorted(plan.start)),
        )
    return owned


def replay_pipeline(
    project: Project,
    name: str | Pipeline,
    *,
    since: datetime | None = None,
    until: datetime | None = None,
    offsets: dict[int, tuple[int, int]] | None = None,
    shard: Shard | None = None,
    on_start: Callable[[ReadPlan], None] | None = None,
    on_progress: Callable[[Progress], None] | None = None,
) -> RunResult:
    """Rewrite one already-loaded range of the topic, by time or by offsets per partition.

    Only offsets below the checkpoint are replayed (the rest belongs to the next normal run),
    and the checkpoint never moves. Append tables get the range deleted and inserted again in
    one transaction per batch; upsert tables get the offset-guarded upsert. With ``shard``,
    only the partitions that shard owns are replayed. ``name`` may be a member (``members``).
    """
    pipeline = _single(project, name)
    _check_shard(pipeline, shard)
    started = time.monotonic()
    limit_malloc_arenas()
    with _connections(project, pipeline) as (sink, consumer):
        plan = plan_replay(
            consumer, pipeline.topic, sink.read_checkpoints(), since, until, offsets, shard
        )
        return _load(pipeline, sink, consumer, plan, started, True, on_start, on_progress, shard)


def plan_replay(
    consumer: Consumer,
    topic: str,
    checkpoints: dict[int, int],
    since: datetime | None,
    until: datetime | None,
    offsets: dict[int, tuple[int, int]] | None,
    shard: Shard | None = None,
) -> ReadPlan:
    parts = partitions(consumer, topic, 10.0)
    if offsets is not None:
        unknown = sorted(set(offsets) - set(parts))
        if unknown:
            msg = f"topic {topic!r} has no partition {unknown[0]} (partitions: {parts})"
            raise TerminalError(msg)
    if shard is not None:
        parts = shard.select(parts)
        other = sorted(set(offsets or ()) - set(parts))
        if other:
            msg = (
                f"{topic}/{other[0]} belongs to shard {shard_of(other[0], shard.count)}/"
                f"{shard.count}, not to shard {shard}"
            )
            raise TerminalError(msg)
    marks = watermarks(consumer, topic, parts, timeout=10.0)
    if offsets is not None:
        wanted = offsets
    else:
        if since is None or until is None or until <= since:
            msg = "a replay by time needs a start before its end"
            raise TerminalError(msg)
        lower = offsets_for_time(consumer, topic, since)
        upper = offsets_for_time(consumer, topic, until)
        wanted = {p: (lower[p], upper[p]) for p in parts}
    start: dict[int, int] = {}
    end: dict[int, int] = {}
    gaps = []
    for p, (first, stop) in sorted(wanted.items()):
        if first > stop:
            msg = f"{topic}/{p}: replay range [{first}, {stop}) is reversed"
            raise TerminalError(msg)
        low = marks[p][0]
        if first < low:
            gaps.append(Gap(partition=p, expected=first, log_start=low))
        begin = max(first, low)
        start[p] = begin
        end[p] = max(begin, min(stop, checkpoints.get(p, begin)))
    return ReadPlan(topic, start, end, frozenset(), tuple(gaps))


def _load(
    pipeline: Pipeline,
    sink: Sink,
    consumer: Consumer,
    plan: ReadPlan,
    started: float,
    replay: bool,
    on_start: Callable[[ReadPlan], None] | None,
    on_progress: Callable[[Progress], None] | None,
    shard: Shard | None = None,
) -> RunResult:
    if on_start is not None:
        on_start(plan)
    decoder = decoder_for(pipeline)
    reader = BoundedReader(
        consumer,
        plan,
        max_rows=pipeline.batch_max_rows,
        max_bytes=pipeline.batch_max_bytes,
        include_headers=pipeline.include_headers,
    )
    tally = _Tally()
    spec = table_spec(pipeline)
    budget = error_budget(pipeline)

    def prepare(raw: RawBatch) -> tuple[Decoded, RawBatch | None]:
        """Decode (and flatten) one batch, ahead of the writer: on a decoding thread, or on
        the reading thread with ``decode_threads: 1``. Charges nothing (see ``taken``)."""
        # Only schema conflicts need the undecoded messages again, at write time.
        conflicts = raw if pipeline.on_schema_conflict == "dlq" else None
        return decoded(pipeline, decoder, raw), conflicts

    def taken(done: tuple[Decoded, RawBatch | None]) -> tuple[Batch, RawBatch | None]:
        """A decoded batch, charged to the run's budget: on the reading thread, in read order,
        so the budget counts exactly the batches before it, whatever order they decoded in."""
        return done[0].charged(budget), done[1]

    def fitter(raw: RawBatch) -> Callable[[Batch], Batch]:
        """Sets aside the batch's schema conflicts, against the table as the previous batch
        leaves it (the sink's writer calls it once that is known)."""

        def fit(batch: Batch) -> Batch:
            fitted = set_aside_conflicts(sink.table_schema(), batch, raw, spec)
            charge_conflicts(budget, batch, fitted)
            return fitted

        return fit

    def committed(done: tuple[Batch, WriteResult]) -> None:
        # The partitions of this run's plan only: a shard never moves another shard's group
        # offsets (a commit names its partitions, and the broker keeps the others as they are).
        if not replay:
            commit_group_offsets(consumer, pipeline.topic, tally.next_offsets)
        if on_progress is not None:
            on_progress(Progress(tally.rows, tally.offsets_done, plan.total_lag))

    # Reading the next batch (this thread) and decoding the ones read before (up to
    # ``decode_threads`` of them at once, on as many threads) overlap the sink transactions of
    # the batches submitted before, up to ``writer.depth`` of them (PostgreSQL: 2, each on its
    # own connection; otherwise 1). Decoded batches are taken in read order and charged to the
    # run's budget then, the sink's writer commits them strictly in that order, and their
    # results are taken in order, so a failure stops the run with nothing skipped: a bad
    # message fails the run when its batch's turn comes, after every batch read before it was
    # submitted and before any read after it is. When reading or decoding fails, the batches in
    # flight are waited for first: a failure of theirs happened earlier and is the one reported.
    #
    # An interrupt (Ctrl-C, or the CLI's SIGTERM) reaches this thread only; the writes in flight
    # run on, each to its commit or its rollback, and the writer waits for them (one batch's
    # write at most) before ``RunInterrupted`` reports exactly what committed. The tally is
    # added to on the writer's threads, right after each commit, for that reason. Batches still
    # decoding are waited for too (the ones not started are dropped), so no thread outlives it.
    try:
        with (
            bulk_allocation(),
            sink.writes() as writer,
            Ahead(prepare, pipeline.decode_threads, "kafka-etl-decode") as decoding,
        ):
            in_flight: deque[Future[tuple[Batch, WriteResult]]] = deque()

            def submit() -> None:
                batch, conflicts = taken(decoding.take())
                _drain(in_flight, committed, keep=writer.depth - 1)
                fit = fitter(conflicts) if conflicts is not None else None
                in_flight.append(writer.submit(batch, replay=replay, fit=fit, written=tally.add))

            try:
                for raw in reader:
                    decoding.submit(raw)
                    del raw  # not kept alive while the next batch is read
                    if decoding.full:
                        submit()
                while decoding:
                    submit()
            finally:
                _drain(in_flight, committed)
    except KeyboardInterrupt as exc:
        raise RunInterrupted(
            pipeline.name, exc, tally.rows, tally.batches, tally.next_offsets, replay
        ) from exc
    lag_after = _lag_after(sink, consumer, pipeline.topic, sorted(plan.end))
    table_rows, schema = _table_after(sink)
    return RunResult(
        pipeline=pipeline.name,
        topic=pipeline.topic,
        table=table_spec(pipeline).display_name,
        rows=tally.rows,
        tombstones=tally.tombstones,
        batches=tally.batches,
        ranges={p: r for p, r in sorted(tally.loaded.items()) if r.size},
        lag_after=lag_after,
        gaps=plan.gaps,
        columns_added=tuple(tally.added),
        seconds=time.monotonic() - started,
        message_bytes=tally.message_bytes,
        table_rows=table_rows,
        schema=schema,
        dead_lettered=tally.dead_lettered,
        shard=shard,
    )


def _lag_after(sink: Sink, consumer: Consumer, topic: str, parts: list[int]) -> dict[int, int]:
    """Offsets left to load per partition once the run committed everything. Best effort: the
    load is complete whatever this finds, so a broker that does not answer now leaves the lag
    unknown (``{}``, with a warning) and never fails the run."""
    try:
        after = watermarks(consumer, topic, parts, timeout=_LAG_AFTER_TIMEOUT)
        checkpoints = sink.read_checkpoints()
    except KafkaEtlError as exc:
        log.warning("warning: lag after the run is unknown: %s", plain(exc))
        return {}
    return {p: PartitionLag(p, checkpoints.get(p), *after[p]).lag for p in after}


def _table_after(sink: Sink) -> tuple[int | None, pa.Schema | None]:
    """The table's row count and columns once the run committed everything. Best effort, like
    ``_lag_after``: a database that went away after the last commit leaves them unknown."""
    try:
        return sink.row_count(), sink.table_schema()
    except Exception as exc:  # classify re-raises what it cannot name: that is a bug
        error = classify(exc, sink.spec.display_name)
        log.warning("warning: the table after the run is unknown: %s", error)
        return None, None


def _drain(
    in_flight: deque[Future[tuple[Batch, WriteResult]]],
    committed: Callable[[tuple[Batch, WriteResult]], None],
    keep: int = 0,
) -> None:
    """Take the results of the writes in flight, in order, until ``keep`` are left. On a
    failure every write in flight is waited for and the first failure is raised. (A later
    write fails too where it shares a partition with the failed one, see ``sinks.inflight``;
    where it does not, it may have committed, which is as correct, and counted in the tally.)"""
    while len(in_flight) > keep:
        try:
            done = in_flight.popleft().result()
        except BaseException:
            for later in in_flight:
                later.exception()  # wait, and ignore: the first failure is the one to report
            in_flight.clear()
            raise
        committed(done)


def pipeline_schema(
    project: Project, name: str | Pipeline
) -> tuple[pa.Schema | None, list[SchemaChange]]:
    """The target table's current columns (None before the first load) and the history of
    the changes kafka-etl applied to them."""
    sink = PipelineDefinition(project, _single(project, name)).open_sink()
    try:
        return sink.table_schema(), sink.schema_history()
    finally:
        sink.close()


def pipeline_status(project: Project, name: str | Pipeline) -> list[PartitionLag]:
    """Checkpoint, log start, high watermark and lag for every partition of the topic."""
    pipeline = _single(project, name)
    with _connections(project, pipeline) as (sink, consumer):
        checkpoints = sink.read_checkpoints()
        marks = watermarks(
            consumer, pipeline.topic, partitions(consumer, pipeline.topic, 10.0), timeout=10.0
        )
    return [
        PartitionLag(p, checkpoints.get(p), low, high) for p, (low, high) in sorted(marks.items())
    ]


ResetTarget = Literal["earliest", "latest"] | datetime | int


@dataclass(frozen=True, slots=True)
class ResetMove:
    """One partition's move in a reset: from its checkpoint (None: never loaded) to ``offset``;
    ``rows`` is what the reset deletes there (rows at or after ``offset``, append mode)."""

    partition: int
    checkpoint: int | None
    offset: int
    rows: int
    topic: str = ""


def plan_reset(
    project: Project,
    name: str | Pipeline,
    to: ResetTarget,
    partition: int | None = None,
) -> list[ResetMove]:
    """What ``reset_pipeline`` would do, changing nothing: each partition's move and the rows
    it would delete (counted by the reset's own deletes, rolled back)."""
    pipeline = _single(project, name)
    with _connections(project, pipeline) as (sink, consumer):
        offsets = _reset_offsets(consumer, pipeline.topic, to, partition)
        checkpoints = sink.read_checkpoints(for_reset=True)
        return [
            ResetMove(p, checkpoints.get(p), o, sink.reset({p: o}, dry_run=True), pipeline.topic)
            for p, o in sorted(offsets.items())
        ]


def reset_pipeline(
    project: Project,
    name: str | Pipeline,
    to: ResetTarget,
    partition: int | None = None,
    *,
    planned: list[ResetMove] | None = None,
) -> tuple[dict[int, int], int]:
    """Move the checkpoints of every partition (or of ``partition`` only) to ``to``; returns
    the new offsets and the number of rows deleted.

    With ``planned`` (from ``plan_reset``, e.g. confirmed by a user), the reset is refused if
    a checkpoint moved since, so it never deletes more than was shown.
    """
    pipeline = _single(project, name)
    name = pipeline.name
    with _connections(project, pipeline) as (sink, consumer):
        offsets = _reset_offsets(consumer, pipeline.topic, to, partition)
        if planned is not None:
            now = sink.read_checkpoints(for_reset=True)
            moved = [m for m in planned if now.get(m.partition) != m.checkpoint]
            if moved or {m.partition: m.offset for m in planned} != offsets:
                msg = (
                    f"pipeline {name!r}: the checkpoints or the log moved since the reset was"
                    " planned (another run?); nothing was changed, run the reset again"
                )
                raise TerminalError(msg)
        deleted = sink.reset(offsets)
        commit_group_offsets(consumer, pipeline.topic, offsets)
    return offsets, deleted


def _reset_offsets(
    consumer: Consumer, topic: str, to: ResetTarget, partition: int | None
) -> dict[int, int]:
    """Where a reset moves each partition; an offset outside the log is refused."""
    parts = partitions(consumer, topic, 10.0)
    if partition is not None and partition not in parts:
        msg = f"topic {topic!r} has no partition {partition} (partitions: {_listed(parts)})"
        raise TerminalError(msg)
    wanted = parts if partition is None else [partition]
    if isinstance(to, datetime):
        found = offsets_for_time(consumer, topic, to)
        return {p: found[p] for p in wanted}
    marks = watermarks(consumer, topic, wanted, timeout=10.0)
    if to == "earliest" or to == "latest":
        return {p: marks[p][0] if to == "earliest" else marks[p][1] for p in wanted}
    if partition is None:
        msg = "a reset to an offset needs a partition"
        raise TerminalError(msg)
    low, high = marks[partition]
    if to > high:
        msg = (
            f"{topic}/{partition}: offset {to} is beyond the end of the log (high watermark {high})"
        )
        raise TerminalError(msg)
    if to < low:
        msg = (
            f"{topic}/{partition}: offset {to} is below the log start {low}"
            " (retention deleted the offsets before it)"
        )
        raise TerminalError(msg)
    return {partition: to}


def _listed(parts: list[int]) -> str:
    return ", ".join(map(str, parts)) if len(parts) <= 10 else f"0-{max(parts)}"
