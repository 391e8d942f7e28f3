"""Database errors are classified by the server's own code (kafka_etl.errors.classify)."""

from __future__ import annotations

import sqlite3

import duckdb
import psycopg
import pymysql
import pytest
import sqlalchemy as sa

from kafka_etl.errors import (
    CheckpointConflictError,
    SinkUnavailableError,
    StorageFullError,
    TerminalError,
    classify,
    rolled_back,
)


def wrapped(orig: BaseException, kind: type[sa.exc.DBAPIError]) -> sa.exc.DBAPIError:
    return kind("INSERT ...", None, orig)


def sqlite_error(message: str, code: int) -> sqlite3.OperationalError:
    error = sqlite3.OperationalError(message)
    error.sqlite_errorcode = code
    return error


@pytest.mark.parametrize(
    ("orig", "transient"),
    [
        (pymysql.err.OperationalError(1213, "Deadlock found"), True),
        (pymysql.err.OperationalError(1205, "Lock wait timeout exceeded"), True),
        (pymysql.err.OperationalError(2003, "Can't connect to MySQL server"), True),
        (pymysql.err.OperationalError(1054, "Unknown column 'x'"), False),
        (pymysql.err.OperationalError(1045, "Access denied for user"), False),
        (psycopg.errors.DeadlockDetected("deadlock detected"), True),
        (psycopg.errors.SerializationFailure("could not serialize"), True),
        (psycopg.errors.UndefinedColumn("column does not exist"), False),
        (psycopg.OperationalError("connection failed: Connection refused"), True),
        (
            psycopg.OperationalError(
                'connection failed: FATAL:  password authentication failed for user "u"'
            ),
            False,
        ),
        (sqlite_error("database is locked", 5), True),
        (sqlite_error("no such table: t", 1), False),
    ],
    ids=lambda v: type(v).__name__ if isinstance(v, BaseException) else str(v),
)
def test_driver_errors_are_transient_only_when_a_retry_can_help(
    orig: BaseException, transient: bool
) -> None:
    for error in (wrapped(orig, sa.exc.OperationalError), orig):
        verdict = classify(error, "postgresql+psycopg://u:***@h/db")
        expected = SinkUnavailableError if transient else TerminalError
        assert type(verdict) is expected, (error, verdict)
        assert str(verdict).startswith("postgresql+psycopg://u:***@h/db: ")


def test_the_message_is_one_line_without_a_password() -> None:
    orig = psycopg.OperationalError(
        "connection to postgresql://app:hunter2@db:5432/x failed\nDETAIL: more"
    )
    verdict = classify(wrapped(orig, sa.exc.OperationalError), "target")
    assert "hunter2" not in str(verdict)
    assert "\n" not in str(verdict)


@pytest.mark.parametrize(
    ("target", "message"),
    [
        ("mssql+pyodbc://app:hunter2@db/x", "the database driver 'pyodbc' is not installed"),
        ("nosuch://app:hunter2@db/x", "SQLAlchemy has no dialect 'nosuch'"),
    ],
)
def test_a_missing_driver_or_dialect_is_a_one_line_config_error(target: str, message: str) -> None:
    from kafka_etl.errors import ConfigError
    from sinks.base import TableSpec
    from sinks.sql.sink import SqlSink

    with pytest.raises(ConfigError) as caught:
        SqlSink(sa.make_url(target), TableSpec("p", "t", "t"))
    assert message in str(caught.value)
    assert "hunter2" not in str(caught.value) and "app:***@db" in str(caught.value)


@pytest.mark.parametrize(
    "orig",
    [
        psycopg.errors.DiskFull('could not extend file "base/1/2": No space left on device'),
        pymysql.err.OperationalError(1021, "Disk full (/tmp/#sql_1.MAI); waiting for someone"),
        pymysql.err.OperationalError(1114, "The table 'events' is full"),
        sqlite_error("database or disk is full", 13),
        duckdb.IOException('Could not write file "/w.duckdb.wal": No space left on device'),
        duckdb.TransactionException(
            'Failed to commit: Could not write file "/w.duckdb.wal": No space left on device'
        ),
        duckdb.FatalException(
            "Failed: database has been invalidated because of a previous fatal error.\nOriginal"
            ' error: "Could not write file "/w.duckdb": Disk quota exceeded"'
        ),
    ],
    ids=lambda v: type(v).__name__,
)
def test_a_full_disk_says_so_and_is_transient(orig: BaseException) -> None:
    for error in (wrapped(orig, sa.exc.OperationalError), orig):
        verdict = classify(error, "target", work="this batch")
        assert isinstance(verdict, StorageFullError), (error, verdict)
        assert verdict.transient
        assert str(verdict) == (
            "target: no space left on device; nothing from this batch was committed"
        )
    assert str(classify(orig, "target")) == "target: no space left on device"


@pytest.mark.parametrize(
    ("orig", "again"),
    [
        (pymysql.err.OperationalError(1213, "Deadlock found"), True),
        (pymysql.err.OperationalError(1020, "Record has changed since last read"), True),
        (pymysql.err.OperationalError(1205, "Lock wait timeout exceeded"), False),
        (pymysql.err.IntegrityError(1062, "Duplicate entry"), False),
        (psycopg.errors.DeadlockDetected("deadlock detected"), True),
        (psycopg.errors.SerializationFailure("could not serialize"), True),
        (psycopg.errors.UniqueViolation("duplicate key"), False),
        (psycopg.OperationalError("connection failed: Connection refused"), False),
    ],
    ids=lambda v: getattr(v, "sqlstate", None) or str(getattr(v, "args", [""])[0]),
)
def test_a_transaction_the_database_rolled_back_to_break_a_deadlock_runs_again(
    orig: BaseException, again: bool
) -> None:
    assert rolled_back(wrapped(orig, sa.exc.OperationalError)) is again
    # Also when a sink already translated it (the deadlock stays the cause).
    translated = CheckpointConflictError("checkpoint moved")
    translated.__cause__ = wrapped(orig, sa.exc.OperationalError)
    assert rolled_back(translated) is again
