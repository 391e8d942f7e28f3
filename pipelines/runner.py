"""The runner joins one source to one sink, in the one order that keeps loads exactly once:

read the checkpoint -> fix the high watermarks -> read a bounded micro-batch -> commit its rows
and its next offsets in one sink transaction -> report (and tell the consumer group).
The CLI and Dagster both call ``run_pipeline``; neither has a loading path of its own.
"""

from __future__ import annotations

import logging
import time
from collections import deque
from collections.abc import Callable, Iterator
from concurrent.futures import Future
from contextlib import contextmanager
from dataclasses import dataclass, field, replace
from datetime import datetime
from pathlib import Path
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
from connector.dead_letters import rejects_table
from connector.flatten import flatten_structs
from connector.formats import Decoder, build_decoder
from connector.reader import BoundedReader, RawBatch
from connector.types import parse_arrow_type
from kafka_etl.errors import KafkaEtlError, SourceUnavailableError, TerminalError
from kafka_etl.process import bulk_allocation, limit_malloc_arenas
from pipelines.config import Pipeline, Project
from pipelines.conflicts import ErrorBudget, charge_conflicts, set_aside_conflicts
from sinks.base import SchemaChange, Sink, TableSpec, WriteResult
from sinks.factory import open_sink

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
    table_rows: int
    schema: pa.Schema | None = field(default=None)
    dead_lettered: int = 0

    @property
    def rows_per_second(self) -> float:
        return self.rows / self.seconds if self.seconds > 0 else 0.0


@dataclass(frozen=True, slots=True)
class PartitionStatus:
    partition: int
    checkpoint: int | None
    log_start: int
    high_watermark: int

    @property
    def lag(self) -> int:
        start = self.checkpoint if self.checkpoint is not None else self.log_start
        return max(self.high_watermark - start, 0)


@dataclass(slots=True)
class _Tally:
    """What the committed batches of one run added up to."""

    rows: int = 0
    tombstones: int = 0
    dead_lettered: int = 0
    batches: int = 0
    message_bytes: int = 0
    loaded: dict[int, OffsetRange] = field(default_factory=dict)
    added: list[str] = field(default_factory=list)

    def add(self, batch: Batch, written: WriteResult) -> None:
        self.batches += 1
        self.rows += written.rows_written
        self.tombstones += written.tombstones_skipped
        self.dead_lettered += written.rows_dead_lettered
        self.message_bytes += batch.message_bytes
        self.added.extend(written.columns_added)
        for p, r in batch.ranges.items():
            before = self.loaded.get(p)
            self.loaded[p] = OffsetRange(p, before.first if before else r.first, r.next)

    @property
    def next_offsets(self) -> dict[int, int]:
        return {p: r.next for p, r in self.loaded.items()}

    @property
    def offsets_done(self) -> int:
        return sum(r.size for r in self.loaded.values())


def table_spec(pipeline: Pipeline) -> TableSpec:
    return TableSpec(
        pipeline=pipeline.name,
        topic=pipeline.topic,
        table=pipeline.table,
        db_schema=pipeline.db_schema,
        mode=pipeline.mode,
        key=pipeline.key,
        delete_on_tombstone=pipeline.delete_on_tombstone,
        widen_to_string=pipeline.widen_to_string,
    )


def base_dir(project: Project) -> Path | None:
    source = Path(project.source)
    return source.parent.resolve() if source.exists() else None


@contextmanager
def _connections(project: Project, pipeline: Pipeline) -> Iterator[tuple[Sink, Consumer]]:
    sink = open_sink(
        pipeline.target.get_secret_value(),
        table_spec(pipeline),
        base_dir=base_dir(project),
        lock_timeout=pipeline.lock_timeout,
    )
    try:
        settings = project.consumer_settings(pipeline)
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


def decoder_for(pipeline: Pipeline) -> Decoder:
    """The pipeline's decoder: its value and key formats, registry and columns."""
    explicit = None
    if pipeline.columns:
        explicit = pa.schema(
            [pa.field(name, parse_arrow_type(t, name)) for name, t in pipeline.columns.items()]
        )
    registry = pipeline.schema_registry
    return build_decoder(
        pipeline.format,
        pipeline.key_format,
        schema_registry=registry.client_config() if registry is not None else None,
        avro_schema_file=pipeline.avro_schema_file,
        explicit=explicit,
        include_headers=pipeline.include_headers,
    )


def run_pipeline(
    project: Project,
    name: str,
    *,
    on_start: Callable[[ReadPlan], None] | None = None,
    on_progress: Callable[[Progress], None] | None = None,
) -> RunResult:
    """Load everything up to the high watermarks taken now; return what was committed."""
    pipeline = project.pipeline(name)
    started = time.monotonic()
    limit_malloc_arenas()  # before the consumer's and the writer's threads exist
    with _connections(project, pipeline) as (sink, consumer):
        plan = plan_read(
            consumer,
            pipeline.topic,
            sink.read_checkpoints(),
            start=pipeline.start,
            on_data_loss=pipeline.on_data_loss,
        )
        return _load(pipeline, sink, consumer, plan, started, False, on_start, on_progress)


def replay_pipeline(
    project: Project,
    name: str,
    *,
    since: datetime | None = None,
    until: datetime | None = None,
    offsets: dict[int, tuple[int, int]] | None = None,
    on_start: Callable[[ReadPlan], None] | None = None,
    on_progress: Callable[[Progress], None] | None = None,
) -> RunResult:
    """Rewrite one already-loaded range of the topic, by time or by offsets per partition.

    Only offsets below the checkpoint are replayed (the rest belongs to the next normal run),
    and the checkpoint never moves. Append tables get the range deleted and inserted again in
    one transaction per batch; upsert tables get the offset-guarded upsert.
    """
    pipeline = project.pipeline(name)
    started = time.monotonic()
    limit_malloc_arenas()
    with _connections(project, pipeline) as (sink, consumer):
        plan = plan_replay(consumer, pipeline.topic, sink.read_checkpoints(), since, until, offsets)
        return _load(pipeline, sink, consumer, plan, started, True, on_start, on_progress)


def plan_replay(
    consumer: Consumer,
    topic: str,
    checkpoints: dict[int, int],
    since: datetime | None,
    until: datetime | None,
    offsets: dict[int, tuple[int, int]] | None,
) -> ReadPlan:
    parts = partitions(consumer, topic, 10.0)
    marks = watermarks(consumer, topic, parts, timeout=10.0)
    if offsets is not None:
        unknown = sorted(set(offsets) - set(parts))
        if unknown:
            msg = f"topic {topic!r} has no partition {unknown[0]} (partitions: {parts})"
            raise TerminalError(msg)
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

    def prepare(raw: RawBatch) -> tuple[Batch, RawBatch | None]:
        """Decode (and flatten) one batch; runs on the reading thread, ahead of the writer."""
        batch = decode(pipeline, decoder, raw, budget)
        if pipeline.flatten:
            batch = replace(
                batch, rows=flatten_structs(batch.rows, pipeline.flatten, pipeline.name)
            )
        # Only schema conflicts need the undecoded messages again, at write time.
        return batch, raw if pipeline.on_schema_conflict == "dlq" else None

    def fitter(raw: RawBatch) -> Callable[[Batch], Batch]:
        """Sets aside the batch's schema conflicts, against the table as the previous batch
        leaves it (the sink's writer calls it once that is known)."""

        def fit(batch: Batch) -> Batch:
            fitted = set_aside_conflicts(sink.table_schema(), batch, raw, spec)
            charge_conflicts(budget, batch, fitted)
            return fitted

        return fit

    def committed(done: tuple[Batch, WriteResult]) -> None:
        tally.add(*done)
        if not replay:
            commit_group_offsets(consumer, pipeline.topic, tally.next_offsets)
        if on_progress is not None:
            on_progress(Progress(tally.rows, tally.offsets_done, plan.total_lag))

    # Reading and decoding the next batch (this thread) overlap the sink transactions of the
    # batches submitted before, up to ``writer.depth`` of them (PostgreSQL: 2, each on its own
    # connection; otherwise 1). The sink's writer commits them strictly in order, and their
    # results are taken in order, so a failure stops the run with nothing skipped. When
    # reading or decoding fails, the batches in flight are waited for first: a failure of
    # theirs happened earlier and is the one reported.
    with bulk_allocation(), sink.writes() as writer:
        in_flight: deque[Future[tuple[Batch, WriteResult]]] = deque()
        try:
            for raw in reader:
                batch, conflicts = prepare(raw)
                del raw  # not kept alive while the next batch is read
                _drain(in_flight, committed, keep=writer.depth - 1)
                fit = fitter(conflicts) if conflicts is not None else None
                in_flight.append(writer.submit(batch, replay=replay, fit=fit))
                del batch, conflicts, fit
        finally:
            _drain(in_flight, committed)
    lag_after = _lag_after(sink, consumer, pipeline.topic, sorted(plan.end))
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
        table_rows=sink.row_count(),
        schema=sink.table_schema(),
        dead_lettered=tally.dead_lettered,
    )


def _lag_after(sink: Sink, consumer: Consumer, topic: str, parts: list[int]) -> dict[int, int]:
    """Offsets left to load per partition once the run committed everything. Best effort: the
    load is complete whatever this finds, so a broker that does not answer now leaves the lag
    unknown (``{}``, with a warning) and never fails the run."""
    try:
        after = watermarks(consumer, topic, parts, timeout=_LAG_AFTER_TIMEOUT)
        checkpoints = sink.read_checkpoints()
    except KafkaEtlError as exc:
        log.warning("kafka-etl: warning: lag after the run is unknown: %s", plain(exc))
        return {}
    return {p: max(after[p][1] - checkpoints.get(p, after[p][0]), 0) for p in after}


def _drain(
    in_flight: deque[Future[tuple[Batch, WriteResult]]],
    committed: Callable[[tuple[Batch, WriteResult]], None],
    keep: int = 0,
) -> None:
    """Take the results of the writes in flight, in order, until ``keep`` are left. On a
    failure every write in flight is waited for and the first failure is raised. (A later
    write fails too where it shares a partition with the failed one, see ``sinks.inflight``; where
    it does not, it may have committed, which is as correct and only goes unreported.)"""
    while len(in_flight) > keep:
        try:
            done = in_flight.popleft().result()
        except BaseException:
            for later in in_flight:
                later.exception()  # wait, and ignore: the first failure is the one to report
            in_flight.clear()
            raise
        committed(done)


def error_budget(pipeline: Pipeline) -> ErrorBudget:
    """The pipeline's budget of bad messages for one run (``pipelines.conflicts``)."""
    return ErrorBudget(pipeline.name, pipeline.max_error_ratio, pipeline.min_messages_for_ratio)


def decode(
    pipeline: Pipeline, decoder: Decoder, raw: RawBatch, budget: ErrorBudget | None = None
) -> Batch:
    """Decode one micro-batch per ``on_error``: the first bad message fails the run, or bad
    messages travel in ``Batch.rejects`` to the dead-letter table, unless the run's
    ``budget`` (a fresh one: this batch is the run) says the problem is systematic."""
    budget = budget if budget is not None else error_budget(pipeline)
    if pipeline.on_error == "fail":
        batch = decoder.decode(raw)
        budget.charge(0, len(raw))
        return batch
    batch, rejects = decoder.decode_tolerant(raw)
    budget.charge(len(rejects), len(raw), str(rejects[0].to_error(raw.topic)) if rejects else "")
    if not rejects:
        return batch
    return replace(batch, rejects=rejects_table(raw.topic, rejects))


def pipeline_schema(project: Project, name: str) -> tuple[pa.Schema | None, list[SchemaChange]]:
    """The target table's current columns (None before the first load) and the history of
    the changes kafka-etl applied to them."""
    pipeline = project.pipeline(name)
    sink = open_sink(
        pipeline.target.get_secret_value(),
        table_spec(pipeline),
        base_dir=base_dir(project),
        lock_timeout=pipeline.lock_timeout,
    )
    try:
        return sink.table_schema(), sink.schema_history()
    finally:
        sink.close()


def pipeline_status(project: Project, name: str) -> list[PartitionStatus]:
    """Checkpoint, log start, high watermark and lag for every partition of the topic."""
    pipeline = project.pipeline(name)
    with _connections(project, pipeline) as (sink, consumer):
        checkpoints = sink.read_checkpoints()
        marks = watermarks(
            consumer, pipeline.topic, partitions(consumer, pipeline.topic, 10.0), timeout=10.0
        )
    return [
        PartitionStatus(p, checkpoints.get(p), low, high)
        for p, (low, high) in sorted(marks.items())
    ]


ResetTarget = Literal["earliest", "latest"] | datetime


def reset_pipeline(project: Project, name: str, to: ResetTarget) -> tuple[dict[int, int], int]:
    """Move the checkpoints; returns the new offsets and the number of rows deleted."""
    pipeline = project.pipeline(name)
    with _connections(project, pipeline) as (sink, consumer):
        if isinstance(to, datetime):
            offsets = offsets_for_time(consumer, pipeline.topic, to)
        else:
            parts = partitions(consumer, pipeline.topic, 10.0)
            marks = watermarks(consumer, pipeline.topic, parts, timeout=10.0)
            offsets = {p: marks[p][0] if to == "earliest" else marks[p][1] for p in parts}
        deleted = sink.reset(offsets)
        commit_group_offsets(consumer, pipeline.topic, offsets)
    return offsets, deleted
