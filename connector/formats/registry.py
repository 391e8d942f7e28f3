"""The Schema Registry as the decoders see it: schemas by id, failures classified once.

A thin wrapper over confluent-kafka's ``SchemaRegistryClient`` (any Confluent-compatible registry;
``mock://`` URLs give its in-memory test client). What can go wrong is sorted here:

* the registry answers that it has no schema with this id (HTTP 404, error code 40403)
  -> ``UnknownSchemaError``: a property of the message, a per-record failure;
* the registry cannot be reached, times out or answers 5xx/429 (after the client's retries)
  -> ``SchemaRegistryUnavailableError`` (transient): the run fails or retries, nothing is
  quarantined;
* anything else (401/403, a 404 without a registry error code: wrong URL)
  -> ``TerminalError``: a configuration problem that retrying will not fix.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

from kafka_etl.errors import TerminalError, TransientError, redact

SCHEMA_NOT_FOUND = 40403
SUBJECT_NOT_FOUND = 40401
VERSION_NOT_FOUND = 40402
_TRANSIENT_STATUS = {408, 425, 429, 500, 502, 503, 504}
MAX_SCHEMA_CHARS = 1_000_000  # a schema is an input: larger ones are refused, not parsed


class SchemaRegistryUnavailableError(TransientError):
    """The schema registry could not be reached or answered with a retriable error."""


class UnknownSchemaError(LookupError):
    """The registry has no schema with this id (the message names one that does not exist)."""


class SchemaRegistry:
    """Schemas by id from one registry; each id is fetched once per process (client cache)."""

    def __init__(self, settings: Mapping[str, Any]) -> None:
        from confluent_kafka.schema_registry import SchemaRegistryClient

        conf = {k: v for k, v in settings.items() if v is not None}
        self.url = redact(str(conf.get("url", "")))
        try:
            self.client = SchemaRegistryClient.new_client(conf)
        except (ValueError, TypeError) as exc:
            msg = f"schema registry {self.url}: {exc}"
            raise TerminalError(msg) from None

    def schema(self, schema_id: int, fmt: str | None = None) -> Any:
        """The ``Schema`` registered under ``schema_id`` (``fmt='serialized'`` for Protobuf)."""
        what = f"schema id {schema_id}"
        schema = self._call(lambda: self.client.get_schema(schema_id, fmt=fmt), what)
        return self._bounded(schema, what)

    def version(self, subject: str, version: int, fmt: str | None = None) -> Any:
        """A referenced schema: ``RegisteredSchema`` of ``subject`` at ``version``."""
        what = f"subject {subject!r} version {version}"
        registered = self._call(lambda: self.client.get_version(subject, version, fmt=fmt), what)
        self._bounded(registered.schema, what)
        return registered

    def _bounded(self, schema: Any, what: str) -> Any:
        size = len(getattr(schema, "schema_str", None) or "")
        if size > MAX_SCHEMA_CHARS:
            msg = (
                f"schema registry {self.url}: {what} is {size:,} characters, more than the"
                f" {MAX_SCHEMA_CHARS:,} kafka-etl accepts"
            )
            raise TerminalError(msg)
        return schema

    def _call(self, fetch: Any, what: str) -> Any:
        from confluent_kafka.schema_registry.error import SchemaRegistryError

        try:
            return fetch()
        except SchemaRegistryError as exc:
            status, code = exc.http_status_code, exc.error_code
            where = f"schema registry {self.url}: {what}"
            if status == 404 and code in (SCHEMA_NOT_FOUND, SUBJECT_NOT_FOUND, VERSION_NOT_FOUND):
                msg = f"{what} is not registered"
                raise UnknownSchemaError(msg) from None
            if status in _TRANSIENT_STATUS:
                msg = f"{where}: HTTP {status} {exc.error_message}"
                raise SchemaRegistryUnavailableError(msg) from None
            msg = (
                f"{where}: HTTP {status} {exc.error_message}"
                " (check the registry URL and credentials)"
            )
            raise TerminalError(msg) from None
        except (OSError, TimeoutError) as exc:
            msg = f"schema registry {self.url}: {what}: {exc or type(exc).__name__}"
            raise SchemaRegistryUnavailableError(msg) from None
        except Exception as exc:
            if _is_transport_error(exc):
                msg = f"schema registry {self.url}: {what}: {exc or type(exc).__name__}"
                raise SchemaRegistryUnavailableError(msg) from None
            raise


def _is_transport_error(exc: BaseException) -> bool:
    """httpx/httpx2 transport errors (connection refused, DNS, TLS, timeouts)."""
    return any(
        cls.__name__ in ("TransportError", "TimeoutException", "NetworkError")
        and cls.__module__.split(".")[0] in ("httpx", "httpx2", "httpcore", "httpcore2")
        for cls in type(exc).__mro__
    )
