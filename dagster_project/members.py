"""Multi-topic pipelines in Dagster: one asset per table, so one unit per member.

A pipeline with ``topics``/``topic_pattern`` and a templated table (``{topic}``,
``{topic_tail}``) becomes one ``PipelineTranslatorData`` per member, named by its *ref*
``<pipeline>::<topic>`` wherever the Dagster layer names a pipeline (asset metadata, checks,
sensors, the resource's look-ups). A ref needs no Kafka look-up to turn back into its member:
the table is the template applied to the topic (``pipelines.topics.table_for``).

A pattern's topics are listed when the definitions load, bounded by ``LOAD_TIMEOUT``. If Kafka
cannot be reached then, the members are the topics the checkpoint table already records for
the pipeline (what earlier loads created); the assets' descriptions say so, and the code
location loads. A topic created later appears once the definitions are reloaded.

A multi-topic pipeline into one shared table (no placeholder, rows told apart by ``_topic``)
is ONE unit named by the pipeline (``PipelineTranslatorData.shared``), one asset: its topics
(listed as above, for the topic assets it depends on) are listed again by each load, check and
sensor (``member_units``, the runner's ``members``, as ``kafka-etl run NAME``). A load runs each
member with its own read plan and transactions, then records one materialization
(``metadata.members_event``); each check runs per topic and the asset's result is all of them
(``check_defs.evaluate``); the lag and observation sensors sum the topics' lag. A replay of a
day or a time range replays every topic; a replay of offsets is refused (one line), as
offsets belong to one topic.
"""

from __future__ import annotations

import logging
from collections.abc import Iterable
from pathlib import Path

import sqlalchemy as sa

from connector.client import close_consumer, make_consumer
from dagster_project.translator import PipelineTranslatorData
from kafka_etl.errors import ConfigError, KafkaEtlError
from pipelines import runner
from pipelines import topics as topic_rules
from pipelines.config import Pipeline, Project
from pipelines.definition import PipelineDefinition
from sinks.checkpoints import statement_table

log = logging.getLogger(__name__)

SEPARATOR = "::"
#: Listing a pattern's topics while the definitions load gives up after this many seconds.
LOAD_TIMEOUT = 5.0
FALLBACK_NOTE = (
    "Kafka was unreachable when these definitions loaded: the topics are those the checkpoint"
    " table records for the pipeline; reload the code location to pick up new ones."
)


def ref_of(name: str, topic: str) -> str:
    return f"{name}{SEPARATOR}{topic}"


def unit_data(project: Project, ref: str, note: str = "") -> PipelineTranslatorData:
    """The unit a ref names: a single-topic pipeline by name, or ``pipeline::topic``."""
    name, _, topic = ref.partition(SEPARATOR)
    pipeline = project.pipeline(name)
    if not topic:
        return PipelineTranslatorData(project, pipeline)
    if not pipeline.multi_topic:
        msg = f"{project.source}: pipeline {name!r} reads one topic, not {topic!r}"
        raise ConfigError(msg)
    member = topic_rules.Member(topic, topic_rules.table_for(pipeline.table, topic))
    return PipelineTranslatorData(project, pipeline.member(member), member=True, note=note)


def expand(project: Project, names: Iterable[str] | None) -> list[PipelineTranslatorData]:
    """The units of ``names`` (refs or pipeline names; default: every pipeline of the file),
    each multi-topic pipeline resolved into its members now."""
    found: list[PipelineTranslatorData] = []
    for name in sorted(project.pipelines) if names is None else names:
        pipeline = project.pipeline(name.partition(SEPARATOR)[0])
        if SEPARATOR in name or not pipeline.multi_topic:
            found.append(unit_data(project, name))
            continue
        topics, note = _topics(project, pipeline)
        if not topic_rules.placeholders(pipeline.table):
            found.append(PipelineTranslatorData(project, pipeline, note=note, topics=tuple(topics)))
            continue
        found += [unit_data(project, ref_of(name, t), note) for t in topics]
    return found


def member_units(data: PipelineTranslatorData) -> list[PipelineTranslatorData]:
    """The members of a shared unit listed now, as ``kafka-etl run NAME`` lists them (a
    pattern asks Kafka, bounded; ``TransientError`` naming the brokers when they are down)."""
    found = runner.members(data.project, data.pipeline.name)
    return [PipelineTranslatorData(data.project, m, member=True) for m in found]


def _topics(project: Project, pipeline: Pipeline) -> tuple[list[str], str]:
    if pipeline.topic_pattern is None:
        return list(pipeline.topic_list), ""
    settings = project.consumer_settings(pipeline)
    try:
        consumer = make_consumer(settings, pipeline.consumer_group)
        try:
            members = topic_rules.resolve(pipeline, consumer, timeout=LOAD_TIMEOUT)
        finally:
            close_consumer(consumer, timeout=1.0)
        return [m.topic for m in members], ""
    except KafkaEtlError as exc:
        if not exc.transient:
            raise
        recorded = recorded_topics(project, pipeline)
        log.warning(
            "kafka-etl: pipeline %r: the topics of pattern %r could not be listed (%s); using"
            " the %d recorded in the checkpoint table",
            pipeline.name,
            pipeline.topic_pattern,
            exc,
            len(recorded),
        )
        return recorded, FALLBACK_NOTE


def recorded_topics(project: Project, pipeline: Pipeline) -> list[str]:
    """The topics the checkpoint table records for ``pipeline`` that its pattern matches
    (none when the target cannot be read without waiting, or was never created)."""
    assert pipeline.topic_pattern is not None
    stand_in = pipeline.member(topic_rules.Member("", topic_rules.table_for(pipeline.table, "t")))
    data = PipelineDefinition(project, stand_in)
    database = data.url.database or ":memory:"
    if data.url.get_backend_name() in ("duckdb", "sqlite") and not Path(database).exists():
        return []
    c = statement_table(None if data.url.get_backend_name() == "duckdb" else pipeline.db_schema).c
    query = sa.select(c.topic).where(c.pipeline == pipeline.name).distinct()
    try:
        with data.open_sink(lock_timeout=0.0) as sink:
            names = [str(row[0]) for row in sink.select(query)]
    except KafkaEtlError as exc:
        log.warning("kafka-etl: pipeline %r: no checkpoint table to read: %s", pipeline.name, exc)
        return []
    return topic_rules.matching(pipeline.topic_pattern, names)
