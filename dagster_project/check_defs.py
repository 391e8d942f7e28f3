"""The checks as their own op: they judge the table and Kafka, not the load that ran before.

``offset_continuity`` and ``freshness`` used to be evaluated inside the load's op, so a load that
failed on one bad message turned continuity red and freshness into "execution failed" over a
table that was intact. Here they are a ``multi_asset_check`` of their own (one per pool, in that
pool, so a check never opens a DuckDB file while a Dagster load writes it), run by the
``<name>_checks`` job on its own schedule or from the asset's *Checks* tab.
"""

from collections.abc import Iterator, Sequence

from dagster import (
    AssetCheckExecutionContext,
    AssetCheckKey,
    AssetCheckResult,
    AssetChecksDefinition,
    AssetCheckSeverity,
    MetadataValue,
    multi_asset_check,
)

from dagster_project import checks
from dagster_project.members import expand, member_units
from dagster_project.resource import KafkaEtlResource
from dagster_project.translator import KafkaEtlTranslator, PipelineTranslatorData
from kafka_etl.errors import ConfigError, KafkaEtlError
from pipelines.config import Project


def kafka_etl_checks(
    *,
    project: Project,
    pipelines: Sequence[str] | None = None,
    translator: KafkaEtlTranslator | None = None,
    units: list[PipelineTranslatorData] | None = None,
) -> AssetChecksDefinition:
    """The checks of ``pipelines`` (all of the file's by default), subsettable, read from the
    table and Kafka; the pipelines must share a pool, as for ``kafka_etl_assets`` (and, as
    there, ``units`` already resolved are not listed again)."""
    translator = translator or KafkaEtlTranslator()
    datas = units if units is not None else expand(project, pipelines)
    pools = {d.pool for d in datas}
    if len(pools) != 1:
        msg = (
            f"{project.source}: checks of pipelines {', '.join(d.ref for d in datas)} need one"
            " target each"
        )
        raise ConfigError(msg)
    by_key = {}
    specs = []
    for data in datas:
        key = translator.get_asset_spec(data).key
        by_key[key] = data.ref
        specs += checks.check_specs(key, data)

    @multi_asset_check(
        name="kafka_etl__" + "__".join(d.job_prefix for d in datas) + "__checks",
        specs=specs,
        can_subset=True,
        pool=datas[0].pool,
        description="Continuity and freshness read from the table and Kafka, not from a run.",
    )
    def _checks(
        context: AssetCheckExecutionContext, kafka_etl: KafkaEtlResource
    ) -> Iterator[AssetCheckResult]:
        for key in sorted(context.selected_asset_check_keys, key=lambda k: k.to_user_string()):
            yield evaluate(key, kafka_etl, by_key[key.asset_key])

    return _checks


def evaluate(key: AssetCheckKey, kafka_etl: KafkaEtlResource, name: str) -> AssetCheckResult:
    """One check; a table or broker that cannot be read is a warning that says so, not a pass."""
    try:
        data = kafka_etl.pipeline_data(name)
        if data.shared:  # per topic, one result for the table (``checks.merged``)
            members = member_units(data)
            return checks.merged(key, [(m.pipeline.topic, _one(key, m)) for m in members])
        return _one(key, data)
    except KafkaEtlError as exc:
        if not exc.transient:
            raise
        return AssetCheckResult(
            check_name=key.name,
            asset_key=key.asset_key,
            passed=False,
            severity=AssetCheckSeverity.WARN,
            description=(
                f"Not checked this time: {exc} (a writer may hold the table; the next"
                " scheduled check tries again)"
            ),
            metadata={"checked": MetadataValue.bool(False)},
        )


def _one(key: AssetCheckKey, data: PipelineTranslatorData) -> AssetCheckResult:
    if key.name == checks.FRESHNESS:
        return checks.freshness(key.asset_key, data)
    return checks.offset_continuity(key.asset_key, data)
