"""``merge_results``: the shards' results of one run as one result of the whole pipeline;
``merge_topics``: the topics of a shared table as one."""

from __future__ import annotations

import dataclasses

import pyarrow as pa
import pytest

from connector.batch import Gap, OffsetRange
from pipelines.runner import RunResult
from pipelines.shard_results import merge_results, merge_topics
from pipelines.shards import Shard


def _result(shard: Shard, parts: dict[int, tuple[int, int]], **extra: object) -> RunResult:
    base = RunResult(
        pipeline="events",
        topic="t",
        table="events",
        rows=sum(b - a for a, b in parts.values()),
        tombstones=1,
        batches=len(parts),
        ranges={p: OffsetRange(p, a, b) for p, (a, b) in parts.items()},
        lag_after={p: 0 for p in parts},
        gaps=(),
        columns_added=(),
        seconds=1.0,
        message_bytes=100,
        table_rows=None,
        shard=shard,
    )
    return dataclasses.replace(base, **extra)  # type: ignore[arg-type]


def test_counts_add_up_ranges_and_lag_merge_and_the_slowest_shard_sets_the_time() -> None:
    wide = pa.schema([("a", pa.int64()), ("b", pa.string())])
    results = [
        _result(
            Shard(0, 2),
            {0: (0, 10), 2: (5, 7)},
            seconds=2.5,
            table_rows=12,
            columns_added=("b",),
            schema=pa.schema([("a", pa.int64())]),
        ),
        _result(
            Shard(1, 2),
            {1: (3, 4)},
            lag_after={1: 6, 3: 2},
            table_rows=13,
            gaps=(Gap(3, 0, 4),),
            columns_added=("b",),
            schema=wide,
            dead_lettered=2,
        ),
    ]
    merged = merge_results(results)
    assert (merged.rows, merged.tombstones, merged.batches) == (13, 2, 3)
    assert list(merged.ranges) == [0, 1, 2]
    assert merged.lag_after == {0: 0, 1: 6, 2: 0, 3: 2}
    assert (merged.seconds, merged.message_bytes, merged.dead_lettered) == (2.5, 200, 2)
    assert merged.table_rows == 13  # counted by the shard that finished last
    assert merged.columns_added == ("b",) and merged.schema == wide
    assert merged.gaps == (Gap(3, 0, 4),) and merged.shard is None


def test_an_unknown_table_count_stays_unknown_and_other_pipelines_do_not_merge() -> None:
    one = _result(Shard(0, 2), {0: (0, 1)}, table_rows=1)
    two = _result(Shard(1, 2), {1: (0, 1)})
    assert merge_results([one, two]).table_rows is None
    with pytest.raises(ValueError, match="other pipelines"):
        merge_results([one, dataclasses.replace(two, pipeline="other")])
    with pytest.raises(ValueError, match="at least one"):
        merge_results([])


def test_the_topics_of_a_shared_table_add_up_their_counts_and_times() -> None:
    a = _result(Shard(0, 1), {0: (0, 10)}, table_rows=10, seconds=1.5)
    b = _result(Shard(0, 1), {0: (0, 4)}, topic="u", table_rows=14, seconds=0.5)
    merged = merge_topics([a, b])
    assert (merged.topic, merged.rows, merged.batches, merged.seconds) == ("t, u", 14, 2, 2.0)
    assert merged.table_rows == 14  # counted after the last topic's last commit
    assert merged.ranges == {} and merged.lag_after == {}  # partition 0 of two topics: per topic
    with pytest.raises(ValueError, match="other pipelines"):
        merge_topics([a, dataclasses.replace(b, table="other")])
    with pytest.raises(ValueError, match="other pipelines"):
        merge_results([a, b])  # shards are of one topic
