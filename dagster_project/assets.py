"""Asset factories: pipelines as assets (``kafka_etl_assets``); the replays' run config.

``kafka_etl_assets`` follows dagster-dlt's ``dlt_assets``: it returns a ``multi_asset``
decorator (``can_subset=True``) whose body calls the resource::

    @kafka_etl_assets(project=load_project("pipelines.yaml"))
    def warehouse(context: AssetExecutionContext, kafka_etl: KafkaEtlResource):
        yield from kafka_etl.run(context)

The op is in a concurrency ``pool`` shared by everything that touches the same target (see
``PipelineTranslatorData.pool``). The asset checks are a separate op (``check_defs``), so a
failed load never decides their outcome.
"""

from collections.abc import Callable, Iterable, Mapping, Sequence
from typing import Any

from dagster import (
    AssetExecutionContext,
    AssetsDefinition,
    AssetSpec,
    Config,
    multi_asset,
)
from pydantic import Field

from dagster_project.members import expand
from dagster_project.resource import KafkaEtlResource
from dagster_project.translator import META_PIPELINE, KafkaEtlTranslator, PipelineTranslatorData
from kafka_etl.errors import ConfigError
from pipelines.config import Project
from pipelines.ranges import RangeNames


def pipeline_data(
    project: Project, pipelines: Iterable[str] | None
) -> list[PipelineTranslatorData]:
    """The units of ``pipelines`` (names or member refs; default: all of the file's), each
    multi-topic pipeline as one unit per member (``dagster_project.members``)."""
    return expand(project, pipelines)


def build_kafka_etl_asset_specs(
    project: Project,
    pipelines: Iterable[str] | None = None,
    translator: KafkaEtlTranslator | None = None,
) -> list[AssetSpec]:
    """One spec per pipeline (all of the file's by default), named by ``translator``."""
    return _specs(pipeline_data(project, pipelines), translator or KafkaEtlTranslator())


def _specs(datas: list[PipelineTranslatorData], translator: KafkaEtlTranslator) -> list[AssetSpec]:
    return [
        # skippable: a load that finds nothing new records an observation, no materialization
        translator.get_asset_spec(data)
        .merge_attributes(metadata={META_PIPELINE: data.ref})
        .replace_attributes(skippable=True)
        for data in datas
    ]


def kafka_etl_assets(
    *,
    project: Project,
    pipelines: Sequence[str] | None = None,
    translator: KafkaEtlTranslator | None = None,
    name: str | None = None,
    pool: str | None = None,
    op_tags: Mapping[str, Any] | None = None,
    units: list[PipelineTranslatorData] | None = None,
) -> Callable[[Callable[..., Any]], AssetsDefinition]:
    """A subsettable ``multi_asset`` over ``pipelines``, in one pool (checks: ``check_defs``).

    The pipelines must share a target pool (one DuckDB file, or a single pipeline on a SQL
    database); ``build_definitions`` groups them that way (and passes its ``units``, already
    resolved, so a pattern is listed once per load of the definitions).
    """
    translator = translator or KafkaEtlTranslator()
    datas = units if units is not None else pipeline_data(project, pipelines)
    if not datas:
        msg = f"{project.source}: no pipelines to build assets for"
        raise ConfigError(msg)
    specs = _specs(datas, translator)
    pools = sorted({d.pool for d in datas})
    if pool is None and len(pools) > 1:
        names = ", ".join(d.ref for d in datas)
        msg = (
            f"{project.source}: pipelines {names} write to different targets; build one"
            " kafka_etl_assets per target (or pass pool=...)"
        )
        raise ConfigError(msg)
    return multi_asset(
        name=name or "kafka_etl__" + "__".join(d.job_prefix for d in datas),
        specs=specs,
        can_subset=True,
        pool=pool or pools[0],
        op_tags=op_tags,
    )


DAGSTER_NAMES = RangeNames("'from'", "'to'", "'partition'", "'from_offset'", "'to_offset'")


class ReplayConfig(Config):
    """A replay range for a Launchpad run; leave empty to replay the run's partition (day)."""

    day: str | None = Field(default=None, description="A day, YYYY-MM-DD (schedule_timezone)")
    from_: str | None = Field(
        default=None, alias="from", description="ISO-8601 start, inclusive (2026-11-01T00:00Z)"
    )
    to: str | None = Field(default=None, description="ISO-8601 end, exclusive")
    partition: int | None = Field(default=None, description="Kafka partition (with offsets)")
    from_offset: int | None = Field(default=None, description="First offset, inclusive")
    to_offset: int | None = Field(default=None, description="Last offset, exclusive")


def by_pool(datas: Iterable[PipelineTranslatorData]) -> dict[str, list[PipelineTranslatorData]]:
    groups: dict[str, list[PipelineTranslatorData]] = {}
    for data in datas:
        groups.setdefault(data.pool, []).append(data)
    return groups


def load_assets(
    project: Project, translator: KafkaEtlTranslator, datas: list[PipelineTranslatorData]
) -> AssetsDefinition:
    """The standard body: ``kafka_etl.run(context)`` over one pool's pipelines."""

    @kafka_etl_assets(project=project, translator=translator, units=datas)
    def _load(context: AssetExecutionContext, kafka_etl: KafkaEtlResource) -> Any:
        yield from kafka_etl.run(context)

    return _load


def dedupe(specs: Iterable[AssetSpec | None]) -> list[AssetSpec]:
    seen: dict[Any, AssetSpec] = {}
    for spec in specs:
        if spec is not None:
            seen.setdefault(spec.key, spec)
    return list(seen.values())
