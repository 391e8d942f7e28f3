"""What a run reports after its last commit is best effort: it never fails a complete load."""

from __future__ import annotations

import logging

import pytest
import sqlalchemy as sa

from pipelines.runner import _table_after
from sinks.base import TableSpec


class _GoneDatabase:
    """A sink whose database went away right after the run's last commit."""

    spec = TableSpec(pipeline="ev", topic="t", table="events")

    def row_count(self) -> int:
        raise sa.exc.OperationalError("SELECT count(*)", {}, ConnectionError("server closed"))

    def table_schema(self) -> None:
        raise AssertionError("not reached")


class _Bug(_GoneDatabase):
    def row_count(self) -> int:
        raise ZeroDivisionError


def test_a_database_gone_after_the_last_commit_leaves_the_table_unknown(
    caplog: pytest.LogCaptureFixture,
) -> None:
    with caplog.at_level(logging.WARNING):
        assert _table_after(_GoneDatabase()) == (None, None)  # type: ignore[arg-type]
    assert "the table after the run is unknown: events: (builtins.ConnectionError)" in caplog.text


def test_a_bug_after_the_last_commit_still_shows_its_traceback() -> None:
    with pytest.raises(ZeroDivisionError):
        _table_after(_Bug())  # type: ignore[arg-type]
