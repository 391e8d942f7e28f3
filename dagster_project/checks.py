"""Asset checks: offset continuity and freshness of a pipeline's table.

Both read the table through the pipeline's sink: its checkpoints, and the SQLAlchemy-built
queries of ``tables``, which it runs; so they work for DuckDB and SQL targets alike. Both run
inside the asset's own op, hence in its concurrency pool (DuckDB admits no second process while
a writer holds the file).
"""

from __future__ import annotations

import time
from collections import Counter
from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Any

from confluent_kafka import Consumer
from dagster import (
    AssetCheckKey,
    AssetCheckResult,
    AssetCheckSeverity,
    AssetCheckSpec,
    AssetKey,
    MetadataValue,
    TableColumn,
    TableRecord,
    TableSchema,
)

from connector.client import ReadPlan, make_consumer, partitions, watermarks
from connector.lag import PartitionLag, first_timestamps
from connector.reader import BoundedReader
from dagster_project.tables import (
    PartitionStats,
    data_table,
    duplicate_groups,
    missing_ranges,
    partition_stats,
    rows_at_or_after,
)
from dagster_project.translator import PipelineTranslatorData
from sinks.base import SinkInspection

CONTINUITY = "offset_continuity"
FRESHNESS = "freshness"
EXAMPLES = 20  # offending offsets listed in a check's metadata
MAX_HOLES = 1000  # holes per partition looked up in Kafka
MAX_VERIFY_OFFSETS = 100_000  # offsets read back from Kafka to explain holes


_LAG_SCHEMA = TableSchema(
    columns=[
        TableColumn("partition", "int"),
        TableColumn("position", "int", description="next offset to load (checkpoint)"),
        TableColumn("high_watermark", "int", description="Kafka's next offset to write"),
        TableColumn("lag", "int", description="messages not loaded yet"),
    ]
)


def check_specs(key: AssetKey, data: PipelineTranslatorData) -> list[AssetCheckSpec]:
    p = data.pipeline
    per_topic = " Run per topic of the shared table; passed when every topic passes."
    shared = per_topic if data.shared else ""
    specs = [
        AssetCheckSpec(
            CONTINUITY,
            asset=key,
            description=(
                "No duplicate and no missing (_partition, _offset) between the first stored"
                " offset of each partition and its checkpoint. Offsets Kafka itself has no"
                " message for (transaction markers, compaction, retention) and tombstones are"
                " listed, not failed."
                if p.mode == "append"
                else f"No two rows with the same key ({', '.join(p.key)}) and no row beyond"
                " the checkpoint (upsert tables keep one row per key, so offsets have holes)."
            )
            + shared,
        )
    ]
    if p.max_lag_minutes is not None:
        specs.append(
            AssetCheckSpec(
                FRESHNESS,
                asset=key,
                description=(
                    f"The oldest message not yet loaded is at most {p.max_lag_minutes:g}"
                    " minutes old (max_lag_minutes)."
                )
                + shared,
            )
        )
    return specs


def merged(key: AssetCheckKey, parts: Sequence[tuple[str, AssetCheckResult]]) -> AssetCheckResult:
    """A shared table's one result of a check from its topics' (topic, result): passed when
    every topic passed, the worst severity of those that did not; each topic's description on
    its own line, its metadata under ``<topic>/``."""
    failed = [r for _, r in parts if not r.passed]
    metadata: dict[str, Any] = {"topics": MetadataValue.int(len(parts))}
    for topic, result in parts:
        metadata |= {f"{topic}/{k}": v for k, v in result.metadata.items()}
    severe = any(r.severity == AssetCheckSeverity.ERROR for r in failed)
    return AssetCheckResult(
        check_name=key.name,
        asset_key=key.asset_key,
        passed=not failed,
        severity=AssetCheckSeverity.ERROR if severe or not failed else AssetCheckSeverity.WARN,
        description="\n".join(f"topic {t}: {r.description}" for t, r in parts)
        or "No topic matches the pipeline yet.",
        metadata=metadata,
    )


@dataclass
class _Holes:
    """Offsets missing from the table, explained by reading them back from Kafka."""

    missing: list[tuple[int, int, int]] = field(default_factory=list)  # Kafka has the message
    listed: list[tuple[int, int, int, str]] = field(default_factory=list)  # p, first, next, why
    counts: Counter[str] = field(default_factory=Counter)
    unverified: int = 0


def offset_continuity(key: AssetKey, data: PipelineTranslatorData) -> AssetCheckResult:
    p = data.pipeline
    t = data_table(p.table, p.db_schema, *p.key)
    holes = _Holes()
    gaps: dict[int, list[tuple[int, int]]] = {}
    with data.open_sink() as sink:
        checkpoints = sink.read_checkpoints()
        if sink.table_schema() is None:
            return AssetCheckResult(
                check_name=CONTINUITY,
                asset_key=key,
                passed=True,
                description="The table does not exist yet.",
            )
        stats = partition_stats(sink, t, p.topic)
        unrecorded = [s for s in stats if s.partition not in checkpoints]
        beyond = rows_at_or_after(sink, t, p.topic, checkpoints) + sum(s.rows for s in unrecorded)
        identity = ["_partition", "_offset"] if p.mode == "append" else list(p.key)
        duplicates, dup_examples = duplicate_groups(sink, t, p.topic, identity, EXAMPLES)
        if p.mode == "append":
            gaps = {s.partition: _holes(sink, t, p.topic, s, checkpoints) for s in stats}
            gaps = {part: ranges for part, ranges in gaps.items() if ranges}
    if gaps:  # Kafka is read with the database closed: a DuckDB file is free meanwhile
        holes = _explain(data, gaps)
    passed = not duplicates and not holes.missing and not beyond and not holes.unverified
    missing_offsets = sum(b - a for _, a, b in holes.missing)
    metadata: dict[str, Any] = {
        "partitions": MetadataValue.int(len(stats)),
        "rows": MetadataValue.int(sum(s.rows for s in stats)),
        "duplicate_groups": MetadataValue.int(duplicates),
        "missing_offsets": MetadataValue.int(missing_offsets),
        "rows_beyond_checkpoint": MetadataValue.int(beyond),
        "kafka_gaps": MetadataValue.int(sum(holes.counts.values())),
        "kafka_gaps_by_reason": MetadataValue.json(dict(holes.counts)),
        "checkpoints": MetadataValue.json({str(k): v for k, v in sorted(checkpoints.items())}),
    }
    if dup_examples:
        metadata["duplicate_examples"] = MetadataValue.json(
            [{**dict(zip(identity, r[:-1], strict=True)), "count": r[-1]} for r in dup_examples]
        )
    if holes.missing:
        metadata["missing_examples"] = MetadataValue.json(
            [{"partition": q, "first": a, "next": b} for q, a, b in holes.missing][:EXAMPLES]
        )
    if holes.listed:
        metadata["kafka_gaps_listed"] = MetadataValue.json(
            [
                {"partition": q, "first": a, "next": b, "reason": why}
                for q, a, b, why in holes.listed
            ][:EXAMPLES]
        )
    if holes.unverified:
        metadata["unverified_offsets"] = MetadataValue.int(holes.unverified)
    problems = []
    if duplicates:
        problems.append(f"{duplicates} duplicated {'/'.join(identity)} value(s)")
    if missing_offsets:
        problems.append(f"{missing_offsets} offset(s) Kafka has but the table lacks")
    if beyond:
        problems.append(f"{beyond} row(s) at or beyond the checkpoint")
    if holes.unverified:
        problems.append(f"{holes.unverified} missing offset(s) too many to look up in Kafka")
    only_unverified = problems and not (duplicates or missing_offsets or beyond)
    return AssetCheckResult(
        check_name=CONTINUITY,
        asset_key=key,
        passed=passed,
        severity=AssetCheckSeverity.WARN if only_unverified else AssetCheckSeverity.ERROR,
        description="; ".join(problems) if problems else "Every offset is stored exactly once.",
        metadata=metadata,
    )


def _holes(
    sink: SinkInspection, t: Any, topic: str, s: PartitionStats, checkpoints: dict[int, int]
) -> list[tuple[int, int]]:
    checkpoint = checkpoints.get(s.partition)
    if checkpoint is None:
        return []
    last = min(s.last, checkpoint - 1)
    dense = s.last < checkpoint and s.distinct_offsets == s.last - s.first + 1
    ranges = [] if dense else missing_ranges(sink, t, topic, s.partition, checkpoint, MAX_HOLES)
    if last + 1 < checkpoint:
        ranges.append((last + 1, checkpoint))
    return ranges


def _explain(data: PipelineTranslatorData, gaps: dict[int, list[tuple[int, int]]]) -> _Holes:
    """Read the holes back from Kafka: a message with a value there is a row the table lost."""
    p = data.pipeline
    holes = _Holes()
    consumer = make_consumer(data.consumer_settings, p.consumer_group)
    try:
        marks = watermarks(consumer, p.topic, sorted(gaps), timeout=10.0)
        queue: dict[int, list[tuple[int, int]]] = {}
        budget = MAX_VERIFY_OFFSETS
        for part, ranges in sorted(gaps.items()):
            low = marks[part][0]
            for a, b in ranges:
                if a < low:
                    holes.listed.append((part, a, min(b, low), "deleted by retention"))
                    holes.counts["deleted by retention"] += min(b, low) - a
                    a = min(b, low)
                if a >= b:
                    continue
                if b - a > budget:
                    holes.unverified += b - a
                    continue
                budget -= b - a
                queue.setdefault(part, []).append((a, b))
        _read_back(consumer, p.topic, queue, holes)
    finally:
        consumer.close()
    return holes


def _read_back(
    consumer: Consumer, topic: str, queue: dict[int, list[tuple[int, int]]], holes: _Holes
) -> None:
    for round_ in range(max((len(v) for v in queue.values()), default=0)):
        ranges = {part: rs[round_] for part, rs in queue.items() if round_ < len(rs)}
        plan = ReadPlan(
            topic,
            {part: a for part, (a, _) in ranges.items()},
            {part: b for part, (_, b) in ranges.items()},
            frozenset(),
            (),
        )
        seen: dict[int, dict[int, bool]] = {part: {} for part in ranges}  # offset -> has value
        for raw in BoundedReader(consumer, plan, idle_timeout=15.0):
            for part, offset, value in zip(
                raw.partitions.tolist(), raw.offsets.tolist(), raw.values, strict=True
            ):
                seen[part][offset] = value is not None
        for part, (a, b) in sorted(ranges.items()):
            _classify(part, a, b, seen[part], holes)


def _classify(part: int, a: int, b: int, seen: dict[int, bool], holes: _Holes) -> None:
    """Split ``[a, b)`` into runs of one kind and file each run."""
    run_start, run_kind = a, None
    for offset in range(a, b + 1):
        kind = None
        if offset < b:
            kind = "row" if seen.get(offset) else ("tombstone" if offset in seen else "no message")
        if kind != run_kind:
            if run_kind == "row":
                holes.missing.append((part, run_start, offset))
            elif run_kind is not None:
                reason = (
                    "tombstone (null value, skipped in append mode)"
                    if run_kind == "tombstone"
                    else "no message in Kafka (transaction marker, aborted or compacted)"
                )
                holes.listed.append((part, run_start, offset, reason))
                holes.counts[reason] += offset - run_start
            run_start, run_kind = offset, kind


def freshness(
    key: AssetKey, data: PipelineTranslatorData, *, now: float | None = None
) -> AssetCheckResult:
    """Age of the oldest message not yet loaded, against ``max_lag_minutes``."""
    p = data.pipeline
    limit = p.max_lag_minutes or 0.0
    with data.open_sink() as sink:
        checkpoints = sink.read_checkpoints()
    consumer = make_consumer(data.consumer_settings, p.consumer_group)
    try:
        parts = partitions(consumer, p.topic, 10.0)
        marks = watermarks(consumer, p.topic, parts, timeout=10.0)
        never_ran = not checkpoints and p.start == "latest"
        positions = {
            q: marks[q][1] if never_ran else max(checkpoints.get(q, low), low)
            for q, (low, _) in marks.items()
        }
        ends = {q: high for q, (_, high) in marks.items()}
        stamps = first_timestamps(consumer, p.topic, positions, ends, timeout=10.0)
    finally:
        consumer.close()
    lag = {q: PartitionLag(q, positions[q], *marks[q]).lag for q in parts}
    clock = time.time() if now is None else now
    age = max((clock * 1000 - ts) / 60_000 for ts in stamps.values()) if stamps else 0.0
    passed = age <= limit
    return AssetCheckResult(
        check_name=FRESHNESS,
        asset_key=key,
        passed=passed,
        description=(
            f"Oldest unloaded message is {age:.1f} min old (limit {limit:g} min)"
            if stamps
            else "Nothing waiting to be loaded."
        ),
        metadata={
            "lag": MetadataValue.int(sum(lag.values())),
            "lag_by_partition": MetadataValue.table(
                [
                    TableRecord(
                        {
                            "partition": q,
                            "position": positions[q],
                            "high_watermark": ends[q],
                            "lag": lag[q],
                        }
                    )
                    for q in sorted(lag)
                ],
                schema=_LAG_SCHEMA,
            ),
            "oldest_unloaded_age_minutes": MetadataValue.float(round(age, 2)),
            "max_lag_minutes": MetadataValue.float(float(limit)),
        },
    )
