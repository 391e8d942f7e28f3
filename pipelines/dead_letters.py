"""``kafka-etl dlq``: list a pipeline's dead letters, or decode them again after a fix.

Replaying dead letters decodes (and flattens) the stored raw messages with the pipeline's
current definition (``pipelines.definition``); those that now decode move into the table
(inserted, and deleted from ``<table>__dlq``, in one transaction). The checkpoint does not
move: those offsets were already accounted for.
"""

from __future__ import annotations

from dataclasses import dataclass

import pyarrow as pa

from connector.dead_letters import raw_batch
from pipelines.config import Pipeline, Project
from pipelines.definition import PipelineDefinition


@dataclass(frozen=True, slots=True)
class DeadLetterReplay:
    """What ``replay_dead_letters`` did."""

    examined: int
    moved: int
    still_failing: int


def _definition(project: Project, name: str | Pipeline) -> PipelineDefinition:
    """A pipeline by name, or a member of a multi-topic pipeline (``runner.members``)."""
    if isinstance(name, Pipeline):
        return PipelineDefinition(project, name)
    return PipelineDefinition.of(project, name)


def list_dead_letters(project: Project, name: str | Pipeline, limit: int | None = None) -> pa.Table:
    """The pipeline's dead letters in partition and offset order (at most ``limit``)."""
    with _definition(project, name).open_sink() as sink:
        return sink.read_dead_letters(limit)


def replay_dead_letters(project: Project, name: str | Pipeline) -> DeadLetterReplay:
    """Decode every dead letter again; move those that now succeed into the table."""
    definition = _definition(project, name)
    decoder = definition.decoder()
    with definition.open_sink() as sink:
        letters = sink.read_dead_letters()
        if letters.num_rows == 0:
            return DeadLetterReplay(0, 0, 0)
        batch, rejects = decoder.decode_tolerant(raw_batch(definition.pipeline.topic, letters))
        # Flattened as the runner flattens, so the rows land in the table's ``a__b`` columns.
        batch = definition.flattened(batch)
        moved = sink.resolve_dead_letters(batch) if len(rejects) < letters.num_rows else 0
        return DeadLetterReplay(letters.num_rows, moved, letters.num_rows - moved)
