"""Shards: one pipeline's partitions split into disjoint sets that separate processes load.

The assignment is one rule: partition ``p`` belongs to shard ``p % N`` of ``N``. Shards are
numbered from 0, so ``--shard K/N`` takes ``K`` in ``0 .. N-1``. The rule is stable as
partitions are added (a new partition joins one shard; no existing partition moves) and a
partition never belongs to two shards, so two shards never write the same partition's
checkpoint. Changing ``N`` moves partitions between shards; each keeps its checkpoint, which is
per partition, so the new shards continue exactly where the old ones stopped.
"""

from __future__ import annotations

import re
from collections.abc import Iterable
from dataclasses import dataclass
from typing import TYPE_CHECKING

if TYPE_CHECKING:  # at run time only shard_plan needs it: the CLI parses --shard without Kafka
    from connector.client import ReadPlan

_SHARD = re.compile(r"\s*(\d+)\s*/\s*(\d+)\s*")


class ShardError(ValueError):
    """A shard that cannot be: its message is one line, fit for a usage error."""


def shard_of(partition: int, count: int) -> int:
    """The shard (0-based) that partition ``partition`` belongs to, of ``count``."""
    return partition % count


@dataclass(frozen=True, slots=True)
class Shard:
    """Shard ``index`` of ``count`` (0-based): the partitions ``p`` with ``p % count == index``."""

    index: int
    count: int

    def __post_init__(self) -> None:
        if self.count < 1:
            msg = f"shard {self.index}/{self.count}: the number of shards is at least 1"
            raise ShardError(msg)
        if not 0 <= self.index < self.count:
            msg = (
                f"shard {self.index}/{self.count}: shards are numbered 0 to {self.count - 1}"
                f" (K/N with 0 <= K < N)"
            )
            raise ShardError(msg)

    def owns(self, partition: int) -> bool:
        return shard_of(partition, self.count) == self.index

    def select(self, partitions: Iterable[int]) -> list[int]:
        """The partitions of ``partitions`` this shard owns, sorted."""
        return sorted(p for p in partitions if self.owns(p))

    def __str__(self) -> str:
        return f"{self.index}/{self.count}"


def parse_shard(text: str) -> Shard:
    """``"K/N"`` as a ``Shard``; ``ShardError`` with one line for anything else."""
    found = _SHARD.fullmatch(text)
    if found is None:
        msg = f"{text!r} is not K/N (shard K of N, numbered from 0, e.g. 0/4)"
        raise ShardError(msg)
    return Shard(int(found.group(1)), int(found.group(2)))


def check_shard(shard: Shard, declared: int | None, pipeline: str) -> None:
    """Refuse a shard of another split than the pipeline's ``shards: N`` (None: not set)."""
    if declared is not None and shard.count != declared:
        msg = (
            f"pipeline {pipeline!r} has shards: {declared}, so its shards are 0/{declared} to"
            f" {declared - 1}/{declared}, not {shard}"
        )
        raise ShardError(msg)


def shard_plan(plan: ReadPlan, shard: Shard) -> ReadPlan:
    """``plan`` restricted to the partitions ``shard`` owns."""
    from connector.client import ReadPlan

    owned = set(shard.select(plan.start))
    return ReadPlan(
        plan.topic,
        {p: o for p, o in plan.start.items() if p in owned},
        {p: o for p, o in plan.end.items() if p in owned},
        frozenset(p for p in plan.unrecorded if p in owned),
        tuple(g for g in plan.gaps if g.partition in owned),
        {p: o for p, o in plan.base.items() if p in owned},
    )
