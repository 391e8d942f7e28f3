"""What one pipeline definition becomes: its table, its decoder, its sink and its Kafka settings.

The runner, the CLI, the dead-letter replay and the Dagster layer all build these from a
``(project, pipeline)`` pair, so a pipeline is decoded, flattened and written the same way
whichever of them runs it.
"""

from __future__ import annotations

from dataclasses import dataclass, replace
from functools import cached_property
from pathlib import Path

import pyarrow as pa
from sqlalchemy.engine import URL

from connector.batch import Batch
from connector.client import Settings
from connector.dead_letters import rejects_table
from connector.flatten import flatten_structs
from connector.formats import Decoder, build_debezium_decoder, build_decoder
from connector.reader import RawBatch
from connector.types import parse_arrow_type
from pipelines.config import Pipeline, Project
from pipelines.conflicts import ErrorBudget
from sinks.base import Sink, TableSpec
from sinks.factory import open_sink, resolve_target


def table_spec(pipeline: Pipeline) -> TableSpec:
    """The target table of ``pipeline`` as the sinks take it."""
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
    """The folder relative DuckDB/SQLite targets resolve against: the YAML file's."""
    source = Path(project.source)
    return source.parent.resolve() if source.exists() else None


def decoder_for(pipeline: Pipeline) -> Decoder:
    """The pipeline's decoder: its value and key formats, registry and columns."""
    explicit = None
    if pipeline.columns:
        explicit = pa.schema(
            [pa.field(name, parse_arrow_type(t, name)) for name, t in pipeline.columns.items()]
        )
    registry = pipeline.schema_registry
    if pipeline.envelope == "debezium":
        return build_debezium_decoder(
            pipeline.format,
            pipeline.key_format,
            schema_registry=registry.client_config() if registry is not None else None,
            explicit=explicit,
            include_headers=pipeline.include_headers,
            key=None if pipeline.key == ("_key",) else pipeline.key,
            pipeline=pipeline.name,
        )
    return build_decoder(
        pipeline.format,
        pipeline.key_format,
        schema_registry=registry.client_config() if registry is not None else None,
        avro_schema_file=pipeline.avro_schema_file,
        explicit=explicit,
        include_headers=pipeline.include_headers,
    )


def error_budget(pipeline: Pipeline) -> ErrorBudget:
    """The pipeline's budget of bad messages for one run (``pipelines.conflicts``)."""
    return ErrorBudget(pipeline.name, pipeline.max_error_ratio, pipeline.min_messages_for_ratio)


def flattened(pipeline: Pipeline, batch: Batch) -> Batch:
    """``batch`` with its struct columns spread into ``a__b`` columns per ``flatten:``."""
    if not pipeline.flatten:
        return batch
    return replace(batch, rows=flatten_structs(batch.rows, pipeline.flatten, pipeline.name))


@dataclass(frozen=True, slots=True)
class Decoded:
    """One micro-batch decoded and flattened, not yet charged to the run's ``ErrorBudget``.

    ``decoded`` is safe on any thread (it touches nothing of the run's); ``charged`` is the
    part that must run in read order, on one thread: the budget's verdict depends on every
    batch read before this one. A flatten failure waits in ``error`` until the batch is charged,
    so the budget is told of the batch's bad messages first, as when both ran in one go.
    """

    batch: Batch | None
    messages: int
    bad: int = 0
    first: str = ""
    error: Exception | None = None

    def charged(self, budget: ErrorBudget) -> Batch:
        """The batch, once ``budget`` took its messages (``TerminalError`` past the budget)."""
        budget.charge(self.bad, self.messages, self.first)
        if self.error is not None:
            raise self.error
        assert self.batch is not None
        return self.batch


def decoded(pipeline: Pipeline, decoder: Decoder, raw: RawBatch) -> Decoded:
    """Decode one micro-batch per ``on_error`` and flatten it per ``flatten:``, charging
    nothing: ``on_error: fail`` raises the first bad message's error here, ``on_error: dlq``
    carries the bad messages in ``Batch.rejects``. Thread-safe (the decoders are)."""
    if pipeline.on_error == "fail":
        return Decoded(flattened(pipeline, decoder.decode(raw)), len(raw))
    batch, rejects = decoder.decode_tolerant(raw)
    first = str(rejects[0].to_error(raw.topic)) if rejects else ""
    try:
        batch = flattened(pipeline, batch)
    except Exception as exc:  # raised once the budget has been charged, see ``Decoded``
        return Decoded(None, len(raw), len(rejects), first, exc)
    if rejects:
        batch = replace(batch, rejects=rejects_table(raw.topic, rejects))
    return Decoded(batch, len(raw), len(rejects), first)


def decode(
    pipeline: Pipeline, decoder: Decoder, raw: RawBatch, budget: ErrorBudget | None = None
) -> Batch:
    """Decode one micro-batch per ``on_error`` and flatten it per ``flatten:``: the first bad
    message fails the run, or bad messages travel in ``Batch.rejects`` to the dead-letter table,
    unless the run's ``budget`` (a fresh one: this batch is the run) says the problem is
    systematic."""
    budget = budget if budget is not None else error_budget(pipeline)
    return decoded(pipeline, decoder, raw).charged(budget)


@dataclass(frozen=True)
class PipelineDefinition:
    """One pipeline of a project, and everything loading or inspecting it needs."""

    project: Project
    pipeline: Pipeline

    @classmethod
    def of(cls, project: Project, name: str) -> PipelineDefinition:
        """The definition of the pipeline ``name`` (``ConfigError`` naming the known ones)."""
        return cls(project, project.pipeline(name))

    @property
    def name(self) -> str:
        return self.pipeline.name

    @cached_property
    def spec(self) -> TableSpec:
        return table_spec(self.pipeline)

    @cached_property
    def base_dir(self) -> Path | None:
        return base_dir(self.project)

    @cached_property
    def url(self) -> URL:
        """The target URL, relative file paths resolved against the YAML file's folder."""
        return resolve_target(self.pipeline.target.get_secret_value(), self.base_dir)

    @property
    def consumer_settings(self) -> Settings:
        """librdkafka settings, secrets revealed (for librdkafka only, never for display)."""
        return self.project.consumer_settings(self.pipeline)

    def decoder(self) -> Decoder:
        return decoder_for(self.pipeline)

    def error_budget(self) -> ErrorBudget:
        return error_budget(self.pipeline)

    def decode(self, decoder: Decoder, raw: RawBatch, budget: ErrorBudget | None = None) -> Batch:
        """Decode and flatten one batch (see ``decode``)."""
        return decode(self.pipeline, decoder, raw, budget)

    def flattened(self, batch: Batch) -> Batch:
        """``batch`` flattened per ``flatten:`` (see ``flattened``)."""
        return flattened(self.pipeline, batch)

    def open_sink(self, *, lock_timeout: float | None = None) -> Sink:
        """The pipeline's sink, bound to its table; the caller closes it. ``lock_timeout``
        overrides the pipeline's (``0.0``: a reader that must not wait for a DuckDB writer)."""
        p = self.pipeline
        return open_sink(
            p.target.get_secret_value(),
            self.spec,
            base_dir=self.base_dir,
            lock_timeout=p.lock_timeout if lock_timeout is None else lock_timeout,
        )
