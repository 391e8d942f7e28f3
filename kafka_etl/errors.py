"""The one place where failures are named and classified as transient or terminal.

Every error a user can cause or meet carries a one-line message that says where it came from
(file, pipeline, field, or topic/partition/offset). ``classify`` maps library exceptions
(librdkafka, DuckDB, SQLAlchemy drivers) onto this taxonomy, so retry decisions are made here
and nowhere else. Record-level problems are ``RecordError``; infrastructure problems are
``TransientError`` and never quarantine data.
"""

from __future__ import annotations

import re


class KafkaEtlError(Exception):
    """Base class; ``str(err)`` is a complete one-line message for users."""

    transient = False


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
    """A batch's column type cannot be stored in the existing table column."""


class CheckpointConflictError(TerminalError):
    """Another writer moved the checkpoint while this run was loading; nothing was committed."""


class DataLossError(TerminalError):
    """The checkpoint points below the log start: retention deleted offsets never loaded."""


class SourceUnavailableError(TransientError):
    """The Kafka cluster could not be reached or answered with a retriable error."""


class SinkUnavailableError(TransientError):
    """The target database could not be reached or is locked by another process."""


_URL_PASSWORD = re.compile(r"(://[^:/@\s]+:)[^@\s]+@")


def redact(text: str) -> str:
    """Hide passwords embedded in connection URLs (``user:secret@host`` -> ``user:***@host``)."""
    return _URL_PASSWORD.sub(r"\1***@", text)


def first_line(exc: BaseException) -> str:
    """A library exception's first line, with connection passwords hidden."""
    text = str(exc).strip().splitlines()
    return redact(text[0] if text else type(exc).__name__)


def classify(exc: BaseException, where: str) -> KafkaEtlError:
    """Turn any exception raised while talking to Kafka or a database into our taxonomy.

    ``where`` names the side (``"kafka"`` or the redacted target URL) for the message.
    Unknown exceptions are returned as-is wrapped in nothing: callers re-raise them, because an
    exception we cannot classify is a bug and deserves its traceback.
    """
    if isinstance(exc, KafkaEtlError):
        return exc
    message = f"{where}: {first_line(exc)}"
    module = type(exc).__module__.split(".")[0]
    name = type(exc).__name__
    if module == "cimpl" or module == "confluent_kafka":
        return _classify_kafka(exc, message)
    if module == "duckdb":
        if name in {"IOException", "ConnectionException"} or "lock" in str(exc).lower():
            return SinkUnavailableError(message)
        if name == "TransactionException":
            return CheckpointConflictError(message)
        return TerminalError(message)
    if module == "sqlalchemy":
        if name in {"OperationalError", "InterfaceError", "DisconnectionError", "TimeoutError"}:
            return SinkUnavailableError(message)
        return TerminalError(message)
    if isinstance(exc, ConnectionError | TimeoutError):
        return TransientError(message)
    raise exc


def _classify_kafka(exc: BaseException, message: str) -> KafkaEtlError:
    args = getattr(exc, "args", ())
    kafka_error = args[0] if args else None
    retriable = getattr(kafka_error, "retriable", None)
    if callable(retriable) and retriable():
        return SourceUnavailableError(message)
    fatal = getattr(kafka_error, "fatal", None)
    if callable(fatal) and fatal():
        return TerminalError(message)
    code = getattr(kafka_error, "code", None)
    if callable(code):
        from confluent_kafka import KafkaError

        transient_codes = {
            KafkaError._TRANSPORT,
            KafkaError._ALL_BROKERS_DOWN,
            KafkaError._TIMED_OUT,
            KafkaError.REQUEST_TIMED_OUT,
            KafkaError.LEADER_NOT_AVAILABLE,
            KafkaError.NOT_LEADER_FOR_PARTITION,
        }
        if code() in transient_codes:
            return SourceUnavailableError(message)
    return TerminalError(message)
