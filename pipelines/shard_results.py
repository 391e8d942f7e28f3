"""One ``RunResult`` from several: the shards of one run, or the topics of a shared table.

The shards of one run own disjoint partitions (``pipelines.shards``), so per-partition figures
(ranges, lag) are a union, counts are sums, and the run took as long as its slowest shard.

The members of a multi-topic pipeline into one shared table (``merge_topics``) ran one after
the other, each topic with its own partitions: counts are sums, the time is their sum, the
table's row count the last one's, and per-partition figures stay with each topic's result
(partition 0 of two topics is two partitions).
"""

from __future__ import annotations

from collections.abc import Sequence

from connector.batch import OffsetRange
from pipelines.runner import RunResult


def merge_results(results: Sequence[RunResult]) -> RunResult:
    """The shards' results as one run of the whole pipeline (``shard`` None)."""
    _check(results, same_topic=True)
    known_rows = [r.table_rows for r in results if r.table_rows is not None]
    return _merge(
        results,
        topic=results[0].topic,
        ranges={p: r for res in results for p, r in res.ranges.items()},
        lag_after={p: n for res in results for p, n in res.lag_after.items()},
        seconds=max(r.seconds for r in results),
        # each shard counted the table after its own last commit: the latest count is the largest
        table_rows=max(known_rows) if len(known_rows) == len(results) else None,
    )


def merge_topics(results: Sequence[RunResult]) -> RunResult:
    """The members' results (one per topic, in the order they ran) as one run of their shared
    table: ``topic`` lists the topics; ``ranges`` and ``lag_after`` are empty (see above)."""
    _check(results, same_topic=False)
    return _merge(
        results,
        topic=", ".join(r.topic for r in results),
        ranges={},
        lag_after={},
        seconds=sum(r.seconds for r in results),
        table_rows=results[-1].table_rows,  # counted after the last commit of all
    )


def _check(results: Sequence[RunResult], *, same_topic: bool) -> None:
    if not results:
        msg = "merging results needs at least one"
        raise ValueError(msg)
    first = results[0]

    def unit(r: RunResult) -> tuple[str, ...]:
        return (r.pipeline, r.topic, r.table) if same_topic else (r.pipeline, r.table)

    others = {unit(r) for r in results} - {unit(first)}
    if others:
        msg = f"pipeline {first.pipeline!r}: cannot merge the results of other pipelines {others}"
        raise ValueError(msg)


def _merge(
    results: Sequence[RunResult],
    *,
    topic: str,
    ranges: dict[int, OffsetRange],
    lag_after: dict[int, int],
    seconds: float,
    table_rows: int | None,
) -> RunResult:
    first = results[0]
    schemas = [r.schema for r in results if r.schema is not None]
    added: dict[str, None] = {c: None for r in results for c in r.columns_added}
    return RunResult(
        pipeline=first.pipeline,
        topic=topic,
        table=first.table,
        rows=sum(r.rows for r in results),
        tombstones=sum(r.tombstones for r in results),
        batches=sum(r.batches for r in results),
        ranges=dict(sorted(ranges.items())),
        lag_after=dict(sorted(lag_after.items())),
        gaps=tuple(g for r in results for g in r.gaps),
        columns_added=tuple(added),
        seconds=seconds,
        message_bytes=sum(r.message_bytes for r in results),
        table_rows=table_rows,
        schema=max(schemas, key=len) if schemas else None,  # the widest: columns only get added
        dead_lettered=sum(r.dead_lettered for r in results),
        shard=None,
    )
