"""The Schema Registry as the decoders see it: schemas by id, failures classified once.

A thin wrapper over confluent-kafka's ``SchemaRegistryClient`` (any Confluent-compatible registry;
``mock://`` URLs give its in-memory test client). What can go wrong is sorted here:

* the registry answers that it has no schema with this id (HTTP 404, error code 40403)
  -> ``UnknownSchemaError``: a property of the message, a per-record failure;
* the registry cannot be reached, times out or answers 5xx/429 (after the client's retries)
  -> ``SchemaRegistryUnavailableError`` (transient): the run fails or retries, nothing is
  quarantined;
* a TLS handshake that fails for a reason of configuration (certificate not trusted or not for
  this host, a client certificate refused or missing, an http:// server behind https://), 401 or
  403 (wrong or missing ``basic.auth.user.info``), a 404 without a registry error code (wrong
  URL), TLS files that cannot be loaded
  -> ``TerminalError`` naming the cause and the setting: retrying will not fix it.

Messages name the user of ``basic.auth.user.info``, never its password.
"""

from __future__ import annotations

import os
import ssl
from collections.abc import Mapping
from typing import Any
from urllib.parse import unquote, urlsplit

from kafka_etl.errors import KafkaEtlError, TerminalError, TransientError, redact

SCHEMA_NOT_FOUND = 40403
SUBJECT_NOT_FOUND = 40401
VERSION_NOT_FOUND = 40402
_TRANSIENT_STATUS = {408, 425, 429, 500, 502, 503, 504}
MAX_SCHEMA_CHARS = 1_000_000  # a schema is an input: larger ones are refused, not parsed
_TLS_FILES = ("ssl.ca.location", "ssl.certificate.location", "ssl.key.location")
# OpenSSL's X509_V_ERR_* codes for a certificate that is valid but not for the host in the URL,
# and for one that has expired or is not yet valid.
_X509_HOST_MISMATCH = {62, 64}
_X509_DATES = {9, 10}
# Alerts a TLS server sends when it refuses the client's certificate (OpenSSL reason names).
_CLIENT_CERT_REFUSED = (
    "ALERT_BAD_CERTIFICATE",
    "ALERT_UNKNOWN_CA",
    "ALERT_CERTIFICATE_UNKNOWN",
    "ALERT_UNSUPPORTED_CERTIFICATE",
    "ALERT_DECRYPT_ERROR",
    "ALERT_ACCESS_DENIED",
)


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
        self._tls = {k: str(conf[k]) for k in _TLS_FILES if k in conf}
        self._user = _basic_auth_user(conf)
        try:
            self.client = SchemaRegistryClient.new_client(conf)
        except (ValueError, TypeError) as exc:
            msg = f"schema registry {self.url}: {exc}"
            raise TerminalError(msg) from None
        except OSError as exc:  # ssl.SSLError too: a CA, certificate or key that does not load
            msg = f"schema registry {self.url}: {self._unloadable(exc)}"
            raise TerminalError(msg) from None

    def _unloadable(self, exc: OSError) -> str:
        for name, path in self._tls.items():
            if not os.path.exists(path):
                return f"{name}={path}: no such file"
        files = ", ".join(f"{k}={v}" for k, v in self._tls.items())
        reason = getattr(exc, "reason", None) or exc.strerror or str(exc)
        return f"cannot load the TLS files ({files}): {reason}"

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
            if status == 401:
                why = (
                    f"wrong basic.auth.user.info (user {self._user!r})"
                    if self._user is not None
                    else "the registry needs credentials: set basic.auth.user.info"
                )
                msg = f"{where}: 401 Unauthorized: {why}"
                raise TerminalError(msg) from None
            if status == 403:
                who = f"user {self._user!r}" if self._user is not None else "an anonymous client"
                msg = f"{where}: 403 Forbidden: {who} may not read schemas"
                raise TerminalError(msg) from None
            msg = (
                f"{where}: HTTP {status} {exc.error_message}"
                " (check the registry URL and credentials)"
            )
            raise TerminalError(msg) from None
        except Exception as exc:
            if isinstance(exc, OSError | TimeoutError) or _is_transport_error(exc):
                raise self._unreachable(exc, what) from None
            raise

    def _unreachable(self, exc: BaseException, what: str) -> KafkaEtlError:
        """A request that got no answer: a TLS problem of configuration is terminal, the rest
        (refused, reset, timed out, a handshake cut short) is worth a retry."""
        where = f"schema registry {self.url}: {what}"
        tls = _ssl_error(exc)
        if isinstance(tls, ssl.SSLCertVerificationError):
            code, text = tls.verify_code, tls.verify_message or tls.reason or str(tls)
            if code in _X509_HOST_MISMATCH:
                why = f"TLS certificate is not for this host ({text})"
            elif code in _X509_DATES:
                why = f"TLS certificate is not valid now ({text})"
            else:
                ca = self._tls.get("ssl.ca.location")
                trusted = f"ssl.ca.location={ca}" if ca else "ssl.ca.location not set"
                why = f"TLS certificate not trusted ({trusted}): {text}"
            return TerminalError(f"{where}: {why}")
        reason = (getattr(tls, "reason", None) or "") if tls is not None else ""
        if reason in ("WRONG_VERSION_NUMBER", "HTTP_REQUEST", "PACKET_LENGTH_TOO_LONG"):
            why = "TLS handshake failed: the server does not speak TLS (an http:// URL?)"
            return TerminalError(f"{where}: {why}")
        if reason.endswith("ALERT_CERTIFICATE_REQUIRED"):
            why = "TLS handshake failed: the registry requires a client certificate"
            return TerminalError(f"{where}: {why} (ssl.certificate.location, ssl.key.location)")
        if reason.endswith(_CLIENT_CERT_REFUSED):
            cert = self._tls.get("ssl.certificate.location")
            sent = f"ssl.certificate.location={cert}" if cert else "none was sent"
            why = f"TLS handshake failed: the registry refused the client certificate ({sent})"
            return TerminalError(f"{where}: {why}")
        text = redact(str(exc).strip().splitlines()[0] if str(exc).strip() else "")
        return SchemaRegistryUnavailableError(f"{where}: {text or type(exc).__name__}")


def _basic_auth_user(conf: Mapping[str, Any]) -> str | None:
    """The user name of the registry's basic auth (setting or URL user info), or None."""
    info = conf.get("basic.auth.user.info")
    if info:
        return str(info).split(":", 1)[0]
    first = str(conf.get("url", "")).split(",")[0].strip()
    try:
        user = urlsplit(first).username
    except ValueError:
        return None
    return unquote(user) if user else None


def _ssl_error(exc: BaseException) -> ssl.SSLError | None:
    """The ``ssl.SSLError`` behind an httpx/httpcore transport error, if there is one."""
    seen: set[int] = set()
    current: BaseException | None = exc
    while current is not None and id(current) not in seen:
        if isinstance(current, ssl.SSLError):
            return current
        seen.add(id(current))
        current = current.__cause__ or current.__context__
    return None


def _is_transport_error(exc: BaseException) -> bool:
    """httpx/httpx2 transport errors (connection refused, DNS, TLS, timeouts)."""
    return any(
        cls.__name__ in ("TransportError", "TimeoutException", "NetworkError")
        and cls.__module__.split(".")[0] in ("httpx", "httpx2", "httpcore", "httpcore2")
        for cls in type(exc).__mro__
    )
