"""Offset ranges only grow."""

from __future__ import annotations

import pytest

from connector.batch import Gap, OffsetRange


def test_a_range_knows_its_size_and_prints_half_open() -> None:
    r = OffsetRange(2, 10, 15)
    assert (r.size, str(r)) == (5, "2:[10,15)")


def test_offsets_never_go_backwards() -> None:
    with pytest.raises(ValueError, match="offsets must grow"):
        OffsetRange(0, 10, 9)


def test_a_gap_counts_the_lost_offsets() -> None:
    assert Gap(partition=1, expected=100, log_start=150).lost == 50
