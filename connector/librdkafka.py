"""librdkafka's log and error events: into Python logging, de-duplicated, and read back to name
the real cause when a Kafka call fails.

librdkafka retries a refused login or an untrusted certificate every few milliseconds and writes
a line each time (``%3|…|FAIL|rdkafka#consumer-1| …``), while the call that needed the broker
ends only as "Broker transport failure". Every client kafka-etl creates gets, through
``client_settings``, a ``logger`` and an ``error_cb`` bound to one ``ClientEvents``:

- the lines go to the ``kafka_etl.librdkafka`` logger (a ``NullHandler`` keeps them off stderr
  unless the application configures logging, as ``kafka-etl -v`` does), each repeat of the same
  line within ``DEDUPE_SECONDS`` dropped;
- the events are remembered, so a failed call can say "SASL authentication failed for user
  'etl'" instead (``ClientEvents.cause``). Authentication and TLS causes are terminal.

librdkafka hands both to Python only while the client is polled, so ``ClientEvents.annotate``
serves them (``poll(0)`` on a client with no assignment) before reading them.
"""

from __future__ import annotations

import contextlib
import logging
import re
import threading
import time
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

from confluent_kafka import Consumer, KafkaError, KafkaException

from kafka_etl.errors import KafkaCause

LOG = logging.getLogger("kafka_etl.librdkafka")
LOG.addHandler(logging.NullHandler())  # never Python's last-resort handler on stderr
DEDUPE_SECONDS = 10.0
# How long start-up look-ups keep trying while no broker address takes a connection at all:
# long enough for a broker that is restarting, short enough that "Kafka is down" is said soon.
UNREACHABLE_GRACE = 8.0

# "sasl_ssl://127.0.0.1:9094/bootstrap: " or "127.0.0.1:9092/1: " before librdkafka's reason.
_BROKER = re.compile(r"(?:^|\s)(?:[a-z_]+://)?(\[[^\]]+\]:\d+|[^\s/\[\]]+:\d+)/(?:\w+):\s")
_AFTER = re.compile(
    r"\s*\(after \d+ms in state ([A-Z_]+)(?:, \d+ identical error\(s\) suppressed)?\)"
)
_THREAD = re.compile(r"^\[thrd:[^\]]*\]:\s*")


class DedupeFilter(logging.Filter):
    """Drops a log line identical (ignoring librdkafka's timings) to one passed in the last
    ``seconds``; librdkafka repeats a failing connection's reason on every retry."""

    def __init__(self, seconds: float = DEDUPE_SECONDS) -> None:
        super().__init__()
        self._seconds = seconds
        self._seen: dict[tuple[int, str], float] = {}

    def filter(self, record: logging.LogRecord) -> bool:
        key = (record.levelno, _AFTER.sub("", record.getMessage()))
        now = time.monotonic()
        last = self._seen.get(key)
        if last is not None and now - last < self._seconds:
            return False
        if len(self._seen) > 1000:
            self._seen = {k: t for k, t in self._seen.items() if now - t < self._seconds}
        self._seen[key] = now
        return True


class _LevelGate(logging.Filter):
    """The client's logger records everything for ``ClientEvents``; pass on only what the
    shared ``kafka_etl.librdkafka`` logger is enabled for."""

    def filter(self, record: logging.LogRecord) -> bool:
        return LOG.isEnabledFor(record.levelno)


@dataclass(frozen=True, slots=True)
class _Event:
    code: int | None  # a KafkaError code from error_cb; None for a log line
    text: str  # librdkafka's reason, without thread and timing decorations
    state: str  # the connection's state when it failed (APIVERSION_QUERY, AUTH_REQ, ...)


class ClientEvents(logging.Filter):
    """What one client's librdkafka reported, to name the cause of a failed call."""

    def __init__(self, settings: Mapping[str, Any]) -> None:
        super().__init__()
        self._settings = dict(settings)
        self._lock = threading.Lock()
        self._events: list[_Event] = []
        # Some call got its answer: the brokers speak this client's security.protocol.
        self._answered = False
        self.logger = logging.Logger(LOG.name, logging.DEBUG)  # one per client, not registered
        self.logger.parent = LOG
        for f in (self, _LevelGate(), DedupeFilter()):
            self.logger.addFilter(f)

    # librdkafka -> us ----------------------------------------------------------------------

    def filter(self, record: logging.LogRecord) -> bool:
        text = record.args[-1] if isinstance(record.args, tuple) and record.args else None
        self._add(None, str(text) if text is not None else record.getMessage())
        return True

    def on_error(self, error: KafkaError) -> None:
        self._add(error.code(), error.str())  # librdkafka logged it too: no line of our own

    def _add(self, code: int | None, text: str) -> None:
        text = _THREAD.sub("", text)
        state = m.group(1) if (m := _AFTER.search(text)) else ""
        event = _Event(code, _AFTER.sub("", text).strip(), state)
        with self._lock:
            self._events.append(event)
            if len(self._events) > 200:
                del self._events[:100]

    # us -> the user ------------------------------------------------------------------------

    def forget(self) -> None:
        """A call succeeded: what failed before it no longer explains a later failure."""
        with self._lock:
            self._events.clear()
            self._answered = True

    def annotate(self, exc: KafkaException, client: Any) -> None:
        """Attach the real cause (``exc.cause``, a ``KafkaCause``) to a failed call's error."""
        with contextlib.suppress(Exception):  # a closed client: keep what was recorded
            if not client.assignment():  # serve queued logs and errors; no message can come
                client.poll(0)
        cause = self.cause()
        if cause is not None:
            exc.cause = cause  # type: ignore[attr-defined]

    def cause(self) -> KafkaCause | None:
        """The most telling recorded reason: the last terminal one, else the last one."""
        with self._lock:
            events = list(self._events)
        found = [c for e in events if (c := self._explain(e)) is not None]
        terminal = [c for c in found if c.terminal]
        return terminal[-1] if terminal else (found[-1] if found else None)

    def _explain(self, event: _Event) -> KafkaCause | None:
        text = event.text
        broker = _broker(text)
        at = f" at {broker}" if broker else ""
        reason = _BROKER.sub(" ", f" {text}", count=1).strip() if broker else text
        low = reason.lower()
        protocol = str(self._settings.get("security.protocol", "plaintext")).upper()
        if "sasl" in low and ("authentication" in low or "handshake" in low):
            return self._sasl(low, reason, at)
        if "ssl" in low and ("handshake" in low or "alert" in low or "certificate" in low):
            return self._tls(low, reason, at)
        if "disconnected" in low and ("apiversion" in low or event.state == "APIVERSION_QUERY"):
            if self._answered:
                # The same protocol got answers before: a broker going down (killed while a
                # reconnect was half-open), not a listener that expects another protocol.
                return KafkaCause(
                    f"{broker or 'the broker'} closed the connection (is it restarting?)",
                    terminal=False,
                    unreachable=True,
                )
            msg = (
                f"{broker or 'the broker'} closed the connection before answering: the listener"
                f" probably expects another security.protocol than {protocol} (TLS or SASL?)"
            )
            return KafkaCause(msg, terminal=True)
        if "connection refused" in low:
            return KafkaCause(
                f"cannot reach Kafka{at}: connection refused", terminal=False, unreachable=True
            )
        if event.code in (KafkaError._RESOLVE,) or "failed to resolve" in low:
            return KafkaCause(f"cannot reach Kafka{at}: {reason}", terminal=False, unreachable=True)
        return None

    def _sasl(self, low: str, reason: str, at: str) -> KafkaCause:
        user = self._settings.get("sasl.username")
        mechanism = self._settings.get("sasl.mechanism") or self._settings.get(
            "sasl.mechanisms", "GSSAPI"
        )
        who = f" for user {user!r}" if user else ""
        if "supported mechanisms:" in low:
            offered = low.rsplit("supported mechanisms:", 1)[1].strip().upper()
            if not offered:
                msg = (
                    f"SASL handshake failed{at}: the listener does not take SASL (is it a"
                    " PLAINTEXT or SSL listener? check the port and security.protocol)"
                )
            else:
                msg = (
                    f"SASL handshake failed{at}: the broker offers {offered},"
                    f" not sasl.mechanism={mechanism}"
                )
            return KafkaCause(msg, terminal=True)
        why = "wrong username or password" if "invalid credentials" in low else reason
        return KafkaCause(f"SASL authentication failed{who} ({mechanism}){at}: {why}", True)

    def _tls(self, low: str, reason: str, at: str) -> KafkaCause:
        ca = self._settings.get("ssl.ca.location")
        cert = self._settings.get("ssl.certificate.location")
        if "certificate verify failed" in low or "could not be verified" in low:
            where = f"ssl.ca.location={ca}" if ca else "ssl.ca.location is not set"
            why = f"broker certificate not trusted ({where})"
        elif "plaintext broker listener" in low or "ssl connection closed by peer" in low:
            why = (
                "the listener does not speak TLS (a PLAINTEXT or SASL_PLAINTEXT listener?"
                " check the port and security.protocol)"
            )
        elif "bad certificate" in low or "certificate required" in low or "unknown ca" in low:
            given = f"ssl.certificate.location={cert}" if cert else "no ssl.certificate.location"
            why = f"the broker rejected the client certificate ({given})"
        else:
            why = reason
        return KafkaCause(f"TLS handshake failed{at}: {why}", terminal=True)


def _broker(text: str) -> str | None:
    m = _BROKER.search(f" {text}")
    return m.group(1) if m else None


def client_settings(settings: Mapping[str, Any]) -> tuple[dict[str, Any], ClientEvents]:
    """``settings`` plus a ``logger`` and ``error_cb`` that record into a new ``ClientEvents``."""
    events = ClientEvents(settings)
    return {**settings, "logger": events.logger, "error_cb": events.on_error}, events


def logged(settings: Mapping[str, Any]) -> dict[str, Any]:
    """``settings`` for any other client (an AdminClient, a Producer): its log goes the same
    way, to ``kafka_etl.librdkafka``, de-duplicated, off stderr unless logging is set up."""
    return client_settings(settings)[0]


class EventedConsumer(Consumer):
    """A ``Consumer`` whose failed look-ups carry the real cause librdkafka reported.

    A look-up given a timeout waits in slices of ``SLICE_SECONDS``, so a refused login or an
    untrusted certificate ends it after a second instead of at its timeout (librdkafka keeps
    retrying those until then). The total wait is never longer than the timeout given.
    """

    SLICE_SECONDS = 1.0

    def __init__(self, settings: Mapping[str, Any]) -> None:
        config, self.events = client_settings(settings)
        super().__init__(config)

    def list_topics(self, *args: Any, **kwargs: Any) -> Any:
        return self._sliced(super().list_topics, args, kwargs)

    def get_watermark_offsets(self, *args: Any, **kwargs: Any) -> Any:
        return self._sliced(super().get_watermark_offsets, args, kwargs)

    def offsets_for_times(self, *args: Any, **kwargs: Any) -> Any:
        return self._sliced(super().offsets_for_times, args, kwargs)

    def committed(self, *args: Any, **kwargs: Any) -> Any:
        return self._sliced(super().committed, args, kwargs)

    def _sliced(self, call: Any, args: tuple[Any, ...], kwargs: dict[str, Any]) -> Any:
        timeout = kwargs.get("timeout")
        sliced = isinstance(timeout, int | float) and timeout > self.SLICE_SECONDS
        began = time.monotonic()
        end = began + timeout if isinstance(timeout, int | float) else 0.0
        while True:
            left = end - time.monotonic()
            if sliced:
                kwargs["timeout"] = min(self.SLICE_SECONDS, max(left, 0.001))
            try:
                result = call(*args, **kwargs)
            except KafkaException as exc:
                self.events.annotate(exc, self)
                cause = getattr(exc, "cause", None)
                again = sliced and left > self.SLICE_SECONDS and _generic(exc)
                if not again or given_up(cause, began):
                    raise
            else:
                self.events.forget()
                return result


def given_up(cause: KafkaCause | None, began: float) -> bool:
    """Is ``cause`` not worth waiting out: a refused login or certificate at once, nobody
    listening at any broker address after ``UNREACHABLE_GRACE`` seconds?"""
    if cause is None:
        return False
    return cause.terminal or (cause.unreachable and time.monotonic() - began >= UNREACHABLE_GRACE)


def _generic(exc: KafkaException) -> bool:
    """Did a call fail only for want of a broker (worth another slice), not with an answer?"""
    error = exc.args[0] if exc.args else None
    code = error.code() if isinstance(error, KafkaError) else None
    return code in (KafkaError._TRANSPORT, KafkaError._TIMED_OUT, KafkaError._ALL_BROKERS_DOWN)
