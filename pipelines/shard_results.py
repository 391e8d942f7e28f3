"""One ``RunResult`` for a pipeline from the results of its shards (disjoint partitions).

The shards of one run own disjoint partitions (``pipelines.shards``), so per-partition figures
(ranges, lag) are a union, counts are sums, and the run took as long as its slowest shard.
"""

from __future__ import annotations

from collections.abc import Sequence

from pipelines.runner import RunResult


def merge_results(results: Sequence[RunResult]) -> RunResult:
    """The shards' results as one run of the whole pipeline (``shard`` None)."""
    if not results:
        msg = "merge_results needs at least one shard's result"
        raise ValueError(msg)
    first = results[0]
    others = {(r.pipeline, r.topic, r.table) for r in results} - {
        (first.pipeline, first.topic, first.table)
    }
    if others:
        msg = f"pipeline {first.pipeline!r}: cannot merge the results of other pipelines {others}"
        raise ValueError(msg)
    ranges = {p: r for res in results for p, r in res.ranges.items()}
    lag_after = {p: n for res in results for p, n in res.lag_after.items()}
    known_rows = [r.table_rows for r in results if r.table_rows is not None]
    schemas = [r.schema for r in results if r.schema is not None]
    added: dict[str, None] = {c: None for r in results for c in r.columns_added}
    return RunResult(
        pipeline=first.pipeline,
        topic=first.topic,
        table=first.table,
        rows=sum(r.rows for r in results),
        tombstones=sum(r.tombstones for r in results),
        batches=sum(r.batches for r in results),
        ranges=dict(sorted(ranges.items())),
        lag_after=dict(sorted(lag_after.items())),
        gaps=tuple(g for r in results for g in r.gaps),
        columns_added=tuple(added),
        seconds=max(r.seconds for r in results),
        message_bytes=sum(r.message_bytes for r in results),
        # each shard counted the table after its own last commit: the latest count is the largest
        table_rows=max(known_rows) if len(known_rows) == len(results) else None,
        schema=max(schemas, key=len) if schemas else None,  # the widest: columns only get added
        dead_lettered=sum(r.dead_lettered for r in results),
        shard=None,
    )
