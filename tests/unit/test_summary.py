"""The run summary's offsets stay one readable line at hundreds of partitions."""

from __future__ import annotations

from connector.batch import OffsetRange
from pipelines.summary import LISTED_PARTITIONS, loaded_offsets


def ranges(*spans: tuple[int, int, int]) -> dict[int, OffsetRange]:
    return {p: OffsetRange(p, first, nxt) for p, first, nxt in spans}


def test_few_partitions_are_listed_and_nothing_says_so() -> None:
    assert loaded_offsets(ranges((1, 5, 9), (0, 0, 10))) == "0:[0,10), 1:[5,9)"
    assert loaded_offsets({}) == "nothing new"
    assert loaded_offsets({}, empty="nothing loaded in that range") == (
        "nothing loaded in that range"
    )


def test_many_partitions_are_summed_up_unless_verbose() -> None:
    many = ranges(*((p, 100, 100 + 2 + p % 2) for p in range(500)))
    line = loaded_offsets(many)
    assert line == "1,250 in 500 partitions (0-499; 2-3 per partition; -v lists them)"
    listed = loaded_offsets(many, verbose=True)
    assert listed.count("[") == 500 and listed.startswith("0:[100,102), 1:[100,103)")


def test_gaps_in_the_partitions_are_shown_as_runs_or_bounded() -> None:
    some = ranges(*((p, 0, 4) for p in [*range(4), 7, *range(9, 13)]))
    assert len(some) > LISTED_PARTITIONS
    assert (
        loaded_offsets(some) == "36 in 9 partitions (0-3, 7, 9-12; 4 per partition; -v lists them)"
    )
    scattered = ranges(*((p, 0, 1) for p in range(0, 40, 2)))
    assert loaded_offsets(scattered) == (
        "20 in 20 partitions (0-38, 20 of them; 1 per partition; -v lists them)"
    )
