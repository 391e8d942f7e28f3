"""How a pipeline from the YAML file becomes Dagster asset specs; subclass to rename.

Shaped like dagster-dlt's ``DagsterDltTranslator``: one ``get_asset_spec(data)`` that users
override, usually as ``super().get_asset_spec(data).replace_attributes(key=..., group_name=...)``.
"""

from __future__ import annotations

import hashlib
from dataclasses import dataclass, field
from datetime import timedelta
from pathlib import Path

from dagster import AssetKey, AssetSpec, FreshnessPolicy

from pipelines.checks import dagster_name
from pipelines.config import Pipeline
from pipelines.definition import PipelineDefinition
from pipelines.topics import Member
from sinks.capabilities import Capabilities, capabilities

META_PIPELINE = "kafka_etl/pipeline"
META_TOPIC = "kafka_etl/topic"
META_TARGET = "kafka_etl/target"
META_MODE = "kafka_etl/mode"


@dataclass(frozen=True)
class PipelineTranslatorData(PipelineDefinition):
    """One pipeline and the file it came from: what a translator needs to name things, on top
    of what the definition opens (``open_sink``, ``consumer_settings``, ``spec``). With
    ``member``, ``pipeline`` is one topic of a multi-topic pipeline (``dagster_project.members``)
    and ``note`` what the asset description adds about how it was found. A multi-topic
    pipeline into one shared table is one unit (``shared``); ``topics`` are its topics as
    listed when the definitions loaded (a load lists them again: ``members.member_units``)."""

    member: bool = False
    note: str = ""
    topics: tuple[str, ...] = ()

    @property
    def shared(self) -> bool:
        """Several topics into one table (``topics``/``topic_pattern`` with no placeholder)."""
        return self.pipeline.multi_topic and not self.member

    def listed_members(self) -> list[PipelineTranslatorData]:
        """A shared unit's members as listed when the definitions loaded (``topics``)."""
        return [
            PipelineTranslatorData(
                self.project,
                self.pipeline.member(Member(t, self.pipeline.table)),
                member=True,
                note=self.note,
            )
            for t in self.topics
        ]

    @property
    def ref(self) -> str:
        """How the Dagster layer names this unit: the pipeline, or ``pipeline::topic``."""
        return f"{self.pipeline.name}::{self.pipeline.topic}" if self.member else self.pipeline.name

    @property
    def backend(self) -> str:
        return self.url.get_backend_name()

    @property
    def caps(self) -> Capabilities:
        return capabilities(self.backend)

    @property
    def database(self) -> str:
        """The database name: a DuckDB/SQLite file's stem, else the URL's database."""
        name = self.url.database or ""
        return Path(name).stem if self.caps.file_database else name

    @property
    def table_name(self) -> str:
        """Fully qualified ``database.schema.table`` (``dagster/table_name``)."""
        schema = self.pipeline.db_schema or self.caps.default_schema
        parts = [self.database, schema, self.pipeline.table]
        return ".".join(p for p in parts if p)

    @property
    def pool(self) -> str:
        """The concurrency pool of every op that writes or reads this pipeline's table.

        DuckDB allows one process per file, readers included: one pool per file. Other
        databases take concurrent writers, so only runs of the same pipeline are serialised.
        """
        if self.caps.one_process_per_file:
            path = str(Path(self.url.database or ":memory:").resolve())
            digest = hashlib.sha256(path.encode()).hexdigest()[:10]
            return f"kafka_etl/duckdb/{dagster_name(Path(path).stem)}-{digest}"
        return f"kafka_etl/pipeline/{self.pipeline.name}"

    @property
    def job_prefix(self) -> str:
        """Jobs and sensors are named after the pipeline (a member: and its table)."""
        if self.member:
            return dagster_name(f"{self.pipeline.name}__{self.pipeline.table}")
        return dagster_name(self.pipeline.name)


@dataclass(frozen=True)
class KafkaEtlTranslator:
    """Default naming: key = ``[*key_prefix, schema?, table]``, group = target database.

    ``topic_key_prefix`` names the upstream Kafka topic assets; set ``topic_assets=False`` to
    leave topics out of the asset graph.
    """

    key_prefix: tuple[str, ...] = ()
    topic_key_prefix: tuple[str, ...] = ("kafka",)
    topic_assets: bool = True
    extra_kinds: frozenset[str] = field(default_factory=frozenset)

    def get_asset_spec(self, data: PipelineTranslatorData) -> AssetSpec:
        p = data.pipeline
        path = [*self.key_prefix, *([p.db_schema] if p.db_schema else []), p.table]
        return AssetSpec(
            key=AssetKey(path),
            description=self.describe(data),
            group_name=dagster_name(data.database) if data.database else "kafka_etl",
            kinds={"kafka", data.caps.kind, *self.extra_kinds},
            owners=list(p.owners),  # checked by the Pipeline model (pipelines/checks.py)
            deps=[t.key for t in self.get_topic_specs(data)],
            metadata={
                META_TOPIC: p.topics_shown,
                META_TARGET: p.safe_target,
                META_MODE: p.mode,
                "dagster/table_name": data.table_name,
            },
            tags={"kafka_etl/pipeline": dagster_name(p.name)},
            freshness_policy=freshness_policy(p),
        )

    def get_topic_spec(self, data: PipelineTranslatorData) -> AssetSpec | None:
        """The Kafka topic as an external upstream asset, or None to leave it out (and for a
        shared unit, which has several: ``get_topic_specs``)."""
        if not self.topic_assets or data.shared:
            return None
        return AssetSpec(
            key=AssetKey([*self.topic_key_prefix, data.pipeline.topic]),
            description=f"Kafka topic `{data.pipeline.topic}` (external, read by kafka-etl).",
            group_name="kafka",
            kinds={"kafka"},
        )

    def get_topic_specs(self, data: PipelineTranslatorData) -> list[AssetSpec]:
        """The topic assets a unit reads: its one topic, or each topic of a shared table."""
        units = data.listed_members() if data.shared else [data]
        return [s for u in units if (s := self.get_topic_spec(u)) is not None]

    def describe(self, data: PipelineTranslatorData) -> str:
        p = data.pipeline
        shown = ", ".join(f"`{t}`" for t in data.topics) or p.topics_shown
        topics = f"s {shown}" if data.shared else f" `{p.topic}`"
        text = (
            f"Kafka topic{topics} → table `{data.spec.display_name}` in {data.backend}"
            f" ({p.mode} mode, exactly once)."
        )
        text = f"{text}\n\n{data.note}" if data.note else text
        return f"{text}\n\n{p.description}" if p.description else text


def freshness_policy(pipeline: Pipeline) -> FreshnessPolicy | None:
    """``max_lag_minutes`` as a time-window policy (Dagster's floor is one minute)."""
    if pipeline.max_lag_minutes is None:
        return None
    return FreshnessPolicy.time_window(
        fail_window=timedelta(minutes=max(pipeline.max_lag_minutes, 1))
    )
