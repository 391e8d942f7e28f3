"""What a run loaded, in a line that stays readable at hundreds of partitions."""

from __future__ import annotations

from collections.abc import Mapping

from connector.batch import OffsetRange

#: Up to this many partitions the summary lists each range; beyond, it sums them up (``-v``
#: lists them all).
LISTED_PARTITIONS = 8


def loaded_offsets(
    ranges: Mapping[int, OffsetRange], *, verbose: bool = False, empty: str = "nothing new"
) -> str:
    """``0:[0,10), 1:[5,9)``, or for many partitions ``1,234 in 500 partitions (0-499; 2-3
    per partition; -v lists them)``."""
    loaded = [r for _, r in sorted(ranges.items())]
    if not loaded:
        return empty
    if verbose or len(loaded) <= LISTED_PARTITIONS:
        return ", ".join(str(r) for r in loaded)
    sizes = [r.size for r in loaded]
    spread = f"{min(sizes):,}" if min(sizes) == max(sizes) else f"{min(sizes):,}-{max(sizes):,}"
    return (
        f"{sum(sizes):,} in {len(loaded):,} partitions ({_partitions(loaded)}; {spread} per"
        " partition; -v lists them)"
    )


def _partitions(loaded: list[OffsetRange]) -> str:
    """``0-499``, or ``0-3, 7, 9-12`` where some are missing (ranges of consecutive ones)."""
    parts = [r.partition for r in loaded]
    runs: list[str] = []
    start = prev = parts[0]
    for p in [*parts[1:], None]:
        if p is not None and p == prev + 1:
            prev = p
            continue
        runs.append(str(start) if start == prev else f"{start}-{prev}")
        if p is not None:
            start = prev = p
    if len(runs) > 6:
        return f"{parts[0]}-{parts[-1]}, {len(parts):,} of them"
    return ", ".join(runs)
