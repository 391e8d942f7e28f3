"""How the CLI ranks exit codes and reads DuckDB's lock holder; the rest runs as a subprocess
in tests/integration/test_cli_*.py."""

from __future__ import annotations

from pipelines.exits import OK, TERMINAL, TRANSIENT, worse
from sinks.duckdb.sink import _LOCK_HOLDER, _holder


def test_a_terminal_failure_is_worse_than_a_transient_one() -> None:
    assert worse(OK, TRANSIENT) == TRANSIENT
    assert worse(TRANSIENT, TERMINAL) == TERMINAL
    assert worse(TERMINAL, TRANSIENT) == TERMINAL
    assert worse(OK, OK) == OK


def test_the_lock_holder_is_read_from_duckdbs_message() -> None:
    message = (
        'IO Error: Could not set lock on file "/w/a.duckdb": Conflicting lock is held in'
        " /opt/my tools/python3.11 (PID 4242) by user etl. See also https://duckdb.org/docs"
    )
    found = _LOCK_HOLDER.search(message)
    assert found is not None
    assert _holder(found) == "process 4242 (python3.11)"
    bare = _LOCK_HOLDER.search("Conflicting lock is held in (PID 7)")
    assert bare is not None and _holder(bare) == "process 7"
