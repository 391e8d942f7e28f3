"""A sharded pipeline's asset: N shard ops that the executor runs in parallel, then one merge.

``shards: N`` on a pipeline makes its table asset a graph: op ``<name>_shard_K_of_N`` loads
shard ``K/N`` through the same runner as ``kafka-etl run NAME --shard K/N`` (its partitions,
its checkpoints, committed with its rows), and ``<name>_merge`` turns the N results into the one
materialization (rows, batches and offsets summed, per-partition ranges and lag merged), or an
observation when no shard loaded anything. A failed shard fails the run with its one-line cause;
the other shards' commits stay, so a rerun (or "re-execute from failure") loads only what is
left, exactly once. A shared table's shard op (``dagster_project.members``) loads that shard of
each of its topics; its materialization then has the summed counts, not the per-topic
partitions of an unsharded shared table.

Pools: two runs of one shard never overlap. On databases that take concurrent writers each
shard has its own pool (``kafka_etl/pipeline/<name>/shard-K-of-N``), so a pool never serialises
the shards of one run. On DuckDB, one writer per file, the shards stay in the file's pool: with
``granularity: op`` they take turns, with ``granularity: run`` (dagster.yaml) they start
together and take turns on the file lock (``lock_timeout``).
"""

from collections.abc import Sequence
from typing import Any

from dagster import (
    AssetIn,
    AssetObservation,
    AssetOut,
    AssetsDefinition,
    AssetSpec,
    In,
    MaterializeResult,
    Nothing,
    OpDefinition,
    OpExecutionContext,
    Out,
    Output,
    graph_multi_asset,
    op,
)

from dagster_project.metadata import load_event
from dagster_project.resource import KafkaEtlResource
from dagster_project.translator import PipelineTranslatorData
from pipelines.runner import RunResult
from pipelines.shard_results import merge_results
from pipelines.shards import Shard

TAG_SHARD = "kafka_etl/shard"


def is_sharded(data: PipelineTranslatorData) -> bool:
    return data.pipeline.shards > 1


def shard_pool(data: PipelineTranslatorData, shard: Shard) -> str:
    """The pool of one shard's op (see the module docstring)."""
    if data.caps.one_process_per_file:
        return data.pool
    return f"{data.pool}/shard-{shard.index}-of-{shard.count}"


def shard_op(data: PipelineTranslatorData, shard: Shard) -> OpDefinition:
    name = data.ref  # the pipeline, or pipeline::topic for one topic of a templated pipeline

    @op(
        name=f"{data.job_prefix}_shard_{shard.index}_of_{shard.count}",
        description=f"Load shard {shard} of pipeline {name!r} (partitions p % {shard.count}"
        f" == {shard.index}).",
        out=Out(RunResult, io_manager_key="io_manager"),
        pool=shard_pool(data, shard),
        tags={TAG_SHARD: str(shard)},
    )
    def _shard(context: OpExecutionContext, kafka_etl: KafkaEtlResource) -> RunResult:
        result = kafka_etl.run_shard(context, name, shard)
        context.log.info(
            f"pipeline {name!r} shard {shard}: {result.rows:,} rows,"
            f" {', '.join(str(r) for r in result.ranges.values()) or 'nothing new'}"
        )
        return result

    return _shard


def merge_op(data: PipelineTranslatorData, spec: AssetSpec) -> OpDefinition:
    name = data.ref
    # The upstream assets (the topic) come in as Nothing inputs: ordering only, no value.
    upstream = {f"upstream_{i}": In(Nothing) for i, _ in enumerate(spec.deps)}

    @op(
        name=f"{data.job_prefix}_merge",
        description=f"One materialization of {spec.key.to_user_string()} from the shards' loads.",
        ins={"results": In(list[RunResult]), **upstream},
        out=Out(is_required=False),
    )
    def _merge(
        context: OpExecutionContext,
        kafka_etl: KafkaEtlResource,
        results: list[RunResult],
        **_upstream: Any,
    ) -> Any:
        event = shard_event(kafka_etl, name, spec, results)
        if isinstance(event, AssetObservation):
            context.log_event(event)
            return
        yield Output(None, metadata=dict(event.metadata or {}))

    return _merge


def shard_event(
    kafka_etl: KafkaEtlResource, name: str, spec: AssetSpec, results: Sequence[RunResult]
) -> MaterializeResult | AssetObservation:
    """The asset's event for the merged result (the table side read once, after every shard)."""
    data = kafka_etl.pipeline_data(name)
    return load_event(spec.key, data, merge_results(results))


def sharded_load_asset(data: PipelineTranslatorData, spec: AssetSpec) -> AssetsDefinition:
    """The graph-backed asset of a pipeline with ``shards: N`` (N > 1)."""
    count = data.pipeline.shards
    shards = [shard_op(data, Shard(k, count)) for k in range(count)]
    merge = merge_op(data, spec)
    ins = {
        f"upstream_{i}": AssetIn(key=dep.asset_key, dagster_type=Nothing)
        for i, dep in enumerate(spec.deps)
    }

    @graph_multi_asset(
        name=f"kafka_etl__{data.job_prefix}",
        outs={"table": AssetOut.from_spec(spec.replace_attributes(deps=[]), is_required=False)},
        ins=ins,
    )
    def _sharded(**upstream: Any) -> Any:
        return merge([load() for load in shards], **upstream)

    return _sharded
