"""The one place where failures are named and classified as transient or terminal.

Every error a user can cause or meet carries a one-line message that says where it came from
(file, pipeline, field, or topic/partition/offset). ``classify`` maps library exceptions
(librdkafka, DuckDB, SQLAlchemy drivers) onto this taxonomy, so retry decisions are made here
and nowhere else. Record-level problems are ``RecordError``; infrastructure problems are
``TransientError`` and never quarantine data.
"""

from __future__ import annotations

from dataclasses import dataclass

from kafka_etl.secrets import redact as redact  # the one redaction function, also from here


class KafkaEtlError(Exception):
    """Base class; ``str(err)`` is a complete one-line message for users, secrets masked."""

    transient = False

    def __str__(self) -> str:
        return redact(super().__str__())


class TerminalError(KafkaEtlError):
    """Retrying the same run will not help: configuration, data or a conflicting writer."""


class TransientError(KafkaEtlError):
    """Infrastructure is unavailable for now; the run may be retried, nothing was committed."""

    transient = True


class ConfigError(TerminalError):
    """A pipeline definition is invalid."""


class RecordError(TerminalError):
    """One message cannot be decoded or does not fit its table."""

    def __init__(self, topic: str, partition: int, offset: int, reason: str) -> None:
        self.topic = topic
        self.partition = partition
        self.offset = offset
        self.reason = reason
        super().__init__(f"{topic}/{partition}@{offset}: {reason}")


class SchemaConflictError(TerminalError):
    """A batch's column type cannot be stored in the existing table column.

    ``field`` names the batch's column when the conflict is about one column's values (so the
    messages that carry a value for it can be set aside with ``on_schema_conflict: dlq``).
    """

    def __init__(self, message: str, field: str | None = None) -> None:
        super().__init__(message)
        self.field = field


class CheckpointConflictError(TerminalError):
    """Another writer moved the checkpoint while this run was loading; nothing was committed."""


class DataLossError(TerminalError):
    """The checkpoint points below the log start: retention deleted offsets never loaded."""


class SourceUnavailableError(TransientError):
    """The Kafka cluster could not be reached or answered with a retriable error."""


class SinkUnavailableError(TransientError):
    """The target database could not be reached or is locked by another process."""


class StorageFullError(SinkUnavailableError):
    """The target ran out of disk space (or quota); the failed transaction committed nothing.

    Transient, like PostgreSQL's own SQLSTATE class 53 (insufficient resources) and SMTP's 452
    (insufficient system storage): once space is freed, running again loads exactly once,
    because the rows and their checkpoints were rolled back together.
    """


@dataclass(frozen=True, slots=True)
class KafkaCause:
    """What librdkafka reported while a call failed, in a sentence (connector/librdkafka.py).

    A failed call says only "Broker transport failure" or "timed out"; the client's recorded
    events say why (a refused login, an untrusted certificate, a refused connection). It rides
    on the library's exception as ``exc.cause``; ``terminal`` causes are not worth a retry.
    """

    message: str
    terminal: bool
    #: No broker took a TCP connection at all: retrying beyond a short grace only delays the
    #: one line a scheduler acts on (exit 75).
    unreachable: bool = False


def first_line(exc: BaseException) -> str:
    """A library exception's first line, with connection passwords hidden."""
    text = str(exc).strip().splitlines()
    return redact(text[0] if text else type(exc).__name__)


def classify(exc: BaseException, where: str, *, work: str | None = None) -> KafkaEtlError:
    """Turn any exception raised while talking to Kafka or a database into our taxonomy.

    ``where`` names the side (``"kafka"`` or the redacted target URL) for the message;
    ``work`` names what the failed transaction held (``"this batch"``), for the messages that
    can say it committed nothing. Unknown exceptions are returned as-is wrapped in nothing:
    callers re-raise them, because an exception we cannot classify is a bug and deserves its
    traceback.
    """
    if isinstance(exc, KafkaEtlError):
        return exc
    message = f"{where}: {first_line(exc)}"
    module = type(exc).__module__.split(".")[0]
    name = type(exc).__name__
    if module == "cimpl" or module == "confluent_kafka":
        return _classify_kafka(exc, where, message)
    if _storage_full(exc):
        rolled_back = f"; nothing from {work} was committed" if work else ""
        return StorageFullError(f"{where}: no space left on device{rolled_back}")
    if module in ("duckdb", "_duckdb"):  # duckdb 2 raises from its C module, _duckdb
        if name in {"IOException", "ConnectionException"} or "lock" in str(exc).lower():
            return SinkUnavailableError(message)
        if name == "TransactionException":
            return CheckpointConflictError(message)
        return TerminalError(message)
    if module == "sqlalchemy":
        driver_error = getattr(exc, "orig", None)
        if driver_error is not None:
            verdict = _database_transient(driver_error)
            if verdict is not None:
                return SinkUnavailableError(message) if verdict else TerminalError(message)
        if name in {"OperationalError", "InterfaceError", "DisconnectionError", "TimeoutError"}:
            return SinkUnavailableError(message)
        return TerminalError(message)
    if module in {"psycopg", "pymysql", "sqlite3"}:  # raised by a driver used directly (COPY)
        verdict = _database_transient(exc)
        return SinkUnavailableError(message) if verdict else TerminalError(message)
    if isinstance(exc, ConnectionError | TimeoutError):
        return TransientError(message)
    raise exc


# PostgreSQL SQLSTATE classes and codes worth a retry: connection, transaction rollback
# (serialization failure, deadlock), insufficient resources, operator intervention, lock timeout.
_PG_TRANSIENT_CLASSES = ("08", "40", "53", "57")
_PG_TRANSIENT_CODES = {"55P03", "55006"}
# libpq reports a refused login without a SQLSTATE; retrying it cannot help.
_PG_CONNECT_REFUSALS = (
    "authentication failed",
    "pg_hba.conf",
    "does not exist",
    "permission denied",
)
# PostgreSQL: unique_violation, deadlock_detected. What a run that lost a race with another
# writer of the same rows sees before its checkpoint's compare-and-set can (``raced``).
_PG_RACE_CODES = frozenset({"23505", "40P01"})
# MySQL/MariaDB error numbers worth a retry: lock wait timeout, deadlock, "record has changed
# since last read" (MariaDB snapshot isolation), too many connections, server shutdown,
# connection lost or refused, killed connection, idle disconnect.
_MYSQL_TRANSIENT = {1020, 1040, 1053, 1205, 1213, 1927, 2002, 2003, 2006, 2013, 2055, 4031}
# SQLite primary result codes: BUSY and LOCKED (another connection holds the lock).
_SQLITE_TRANSIENT = {5, 6}


# Out of space: PostgreSQL's disk_full; MySQL/MariaDB's "disk full" and "table is full";
# SQLite's SQLITE_FULL. DuckDB and the rest say it in words (strerror of ENOSPC or EDQUOT).
_PG_STORAGE_FULL = "53100"
_MYSQL_STORAGE_FULL = {1021, 1114}
_SQLITE_FULL = 13
_STORAGE_FULL_WORDS = ("no space left on device", "disk quota exceeded")


def _storage_full(exc: BaseException) -> bool:
    """Did a database fail because its disk (or the user's quota) is full? DuckDB keeps saying
    so after a fatal write error: every later call repeats the original error."""
    driver_error = getattr(exc, "orig", None) or exc
    if getattr(driver_error, "sqlstate", None) == _PG_STORAGE_FULL:
        return True
    module = type(driver_error).__module__.split(".")[0]
    args = getattr(driver_error, "args", ())
    if module == "pymysql" and args and args[0] in _MYSQL_STORAGE_FULL:
        return True
    code = getattr(driver_error, "sqlite_errorcode", None)
    if module == "sqlite3" and isinstance(code, int) and code & 0xFF == _SQLITE_FULL:
        return True
    text = str(exc).lower()
    return any(words in text for words in _STORAGE_FULL_WORDS)


# What the database rolled back whole to break a deadlock or a serialization conflict:
# PostgreSQL's serialization_failure and deadlock_detected; MySQL/MariaDB's deadlock and "record
# has changed since last read". Nothing of the transaction stayed, so it can simply run again.
_PG_ROLLED_BACK = frozenset({"40001", "40P01"})
_MYSQL_ROLLED_BACK = frozenset({1213, 1020})


def rolled_back(exc: BaseException) -> bool:
    """Was the transaction rolled back by the database to break a deadlock or a serialization
    conflict (and not by a failure of its own)? Such a transaction may be run again as it was."""
    seen: set[int] = set()
    error: BaseException | None = exc
    while error is not None and id(error) not in seen:
        seen.add(id(error))
        driver_error = getattr(error, "orig", error)
        if getattr(driver_error, "sqlstate", None) in _PG_ROLLED_BACK:
            return True
        if type(driver_error).__module__.split(".")[0] == "pymysql":
            args = getattr(driver_error, "args", ())
            if args and args[0] in _MYSQL_ROLLED_BACK:
                return True
        error = error.__cause__
    return False


def raced(exc: BaseException) -> bool:
    """Did a database statement fail on a duplicate key or a deadlock (PostgreSQL)? For an
    append whose checkpoint moves last, either means another writer loaded the same offsets."""
    driver_error = getattr(exc, "orig", exc)
    return getattr(driver_error, "sqlstate", None) in _PG_RACE_CODES


def _database_transient(driver_error: BaseException) -> bool | None:
    """Is a DB-API driver's error worth a retry? None if the driver is not one we know.

    Decided by the database's own error code, not the DB-API class: PyMySQL raises
    ``OperationalError`` for most server errors (an unknown column too), sqlite3 for a missing
    table as well as for a locked file.
    """
    module = type(driver_error).__module__.split(".")[0]
    if module == "psycopg":
        state = getattr(driver_error, "sqlstate", None)
        if not state:  # connecting failed (no SQLSTATE then) or the connection broke
            text = str(driver_error).lower()
            if any(marker in text for marker in _PG_CONNECT_REFUSALS):
                return False
            return type(driver_error).__name__ in {"OperationalError", "InterfaceError"}
        return state[:2] in _PG_TRANSIENT_CLASSES or state in _PG_TRANSIENT_CODES
    if module == "pymysql":
        args = getattr(driver_error, "args", ())
        code = args[0] if args and isinstance(args[0], int) else None
        if code is None:
            return type(driver_error).__name__ in {"OperationalError", "InterfaceError"}
        return code in _MYSQL_TRANSIENT
    if module == "sqlite3":
        code = getattr(driver_error, "sqlite_errorcode", None)
        if code is None:
            return "locked" in str(driver_error).lower()
        return code & 0xFF in _SQLITE_TRANSIENT
    return None


def _classify_kafka(exc: BaseException, where: str, message: str) -> KafkaEtlError:
    args = getattr(exc, "args", ())
    kafka_error = args[0] if args else None
    cause = getattr(exc, "cause", None)
    if isinstance(cause, KafkaCause) and _generic_kafka_failure(kafka_error):
        error = TerminalError if cause.terminal else SourceUnavailableError
        return error(f"{where}: {cause.message}")
    retriable = getattr(kafka_error, "retriable", None)
    if callable(retriable) and retriable():
        return SourceUnavailableError(message)
    fatal = getattr(kafka_error, "fatal", None)
    if callable(fatal) and fatal():
        return TerminalError(message)
    code = getattr(kafka_error, "code", None)
    if callable(code) and code() in _KAFKA_TRANSIENT_CODES:
        return SourceUnavailableError(message)
    return TerminalError(message)


def _generic_kafka_failure(kafka_error: object) -> bool:
    """Does this error only say that the brokers could not be talked to, not why?"""
    code = getattr(kafka_error, "code", None)
    if not callable(code):
        return False
    from confluent_kafka import KafkaError

    return code() in {
        KafkaError._TRANSPORT,
        KafkaError._ALL_BROKERS_DOWN,
        KafkaError._TIMED_OUT,
        KafkaError.REQUEST_TIMED_OUT,
        KafkaError._AUTHENTICATION,
        KafkaError._SSL,
        KafkaError.SASL_AUTHENTICATION_FAILED,
    }


# librdkafka's local codes (negative) and broker codes that mean "the cluster is unreachable, or
# a partition's leader or the group's coordinator is moving": a broker died or restarted, and a
# leader election or a reconnect settles it within seconds. Not every one is ``retriable()``:
# a look-up sent to a broker that then died fails with ``_DESTROY_BROKER``, which is not.
_KAFKA_TRANSIENT_CODES = frozenset(
    {
        -195,  # _TRANSPORT: the connection broke or was refused
        -187,  # _ALL_BROKERS_DOWN
        -185,  # _TIMED_OUT
        -166,  # _TIMED_OUT_QUEUE
        -193,  # _RESOLVE: the bootstrap host name did not resolve (DNS may be down)
        -137,  # _DESTROY_BROKER: the broker handle went away with the request in flight
        -180,  # _WAIT_COORD: no group coordinator known yet
        -182,  # _NODE_UPDATE: a broker's address changed
        -164,  # _WAIT_CACHE: metadata not known yet
        5,  # LEADER_NOT_AVAILABLE
        6,  # NOT_LEADER_OR_FOLLOWER
        7,  # REQUEST_TIMED_OUT
        8,  # BROKER_NOT_AVAILABLE
        9,  # REPLICA_NOT_AVAILABLE
        13,  # NETWORK_EXCEPTION
        14,  # COORDINATOR_LOAD_IN_PROGRESS
        15,  # COORDINATOR_NOT_AVAILABLE
        16,  # NOT_COORDINATOR
        19,  # NOT_ENOUGH_REPLICAS
        56,  # KAFKA_STORAGE_ERROR: one log directory failed; its partitions move
        74,  # FENCED_LEADER_EPOCH
        75,  # UNKNOWN_LEADER_EPOCH
        78,  # OFFSET_NOT_AVAILABLE: a new leader has not yet caught up its high watermark
    }
)
