"""Process-wide tuning of a run is undone when the run ends."""

from __future__ import annotations

import gc
import sys

import pytest

from pipelines.process import bulk_allocation, limit_malloc_arenas


def test_bulk_allocation_restores_the_collector_even_after_an_error() -> None:
    before = gc.get_threshold()
    with pytest.raises(RuntimeError), bulk_allocation():
        assert gc.get_threshold()[0] >= 50_000
        assert gc.get_freeze_count() > 0
        assert gc.get_threshold()[1:] == before[1:]
        raise RuntimeError("the run failed")
    assert gc.get_threshold() == before
    assert gc.get_freeze_count() == 0


@pytest.mark.skipif(not sys.platform.startswith("linux"), reason="glibc only")
def test_malloc_arenas_can_be_capped_on_glibc_and_twice() -> None:
    assert limit_malloc_arenas() is True
    assert limit_malloc_arenas() is True
