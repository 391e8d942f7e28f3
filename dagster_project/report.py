"""Loads that ran outside Dagster (the ``kafka-etl run`` CLI), recorded in the Dagster instance.

``report_load`` writes a runless materialization with the same metadata as a Dagster-run load
(or an observation, for a load that found nothing new), so the asset never says "Never
materialized" over a loaded table. Asset keys are the default translator's: a code location
with a custom translator or ``key_prefix`` gets no CLI events under its own keys.
"""

from __future__ import annotations

from dagster import AssetMaterialization, AssetObservation, DagsterInstance, MaterializeResult

from dagster_project.metadata import load_event
from dagster_project.translator import KafkaEtlTranslator, PipelineTranslatorData
from pipelines.config import Pipeline, Project
from pipelines.runner import RunResult

SOURCE_TAG = "kafka_etl/source"


def report_load(
    project: Project,
    name: str | Pipeline,
    result: RunResult,
    instance: DagsterInstance | None = None,
) -> None:
    """Record ``result`` in ``instance`` (default: the one ``$DAGSTER_HOME`` names); ``name``
    may be a member of a multi-topic pipeline (its table's asset)."""
    pipeline = name if isinstance(name, Pipeline) else project.pipeline(name)
    data = PipelineTranslatorData(project, pipeline)
    key = KafkaEtlTranslator().get_asset_spec(data).key
    event = load_event(key, data, result)
    tags = {SOURCE_TAG: "cli"}
    recorded: AssetMaterialization | AssetObservation
    if isinstance(event, MaterializeResult):
        recorded = AssetMaterialization(
            asset_key=key,
            description="Loaded by `kafka-etl run` (outside Dagster).",
            metadata=dict(event.metadata or {}),
            tags=tags,
        )
    else:
        recorded = AssetObservation(
            asset_key=key,
            description="`kafka-etl run` found nothing new.",
            metadata=event.metadata,
            tags=tags,
        )
    (instance or DagsterInstance.get()).report_runless_asset_event(recorded)
