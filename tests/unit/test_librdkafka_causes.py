"""librdkafka's reasons (as it reports them) turned into one sentence, and its log de-duplicated."""

from __future__ import annotations

import logging
import subprocess
import sys

import pytest
from confluent_kafka import KafkaError, KafkaException

from connector.librdkafka import ClientEvents, DedupeFilter
from kafka_etl.errors import KafkaCause, SourceUnavailableError, TerminalError, classify

SASL = {
    "bootstrap.servers": "127.0.0.1:9094",
    "security.protocol": "SASL_SSL",
    "sasl.mechanism": "SCRAM-SHA-512",
    "sasl.username": "etl",
    "sasl.password": "secret",
    "ssl.ca.location": "/tmp/ca.pem",
}

# (settings, the error event's code, librdkafka's text, expected sentence, terminal)
CASES = {
    "wrong-password": (
        SASL,
        KafkaError._AUTHENTICATION,
        "sasl_ssl://127.0.0.1:9094/bootstrap: SASL authentication error: Authentication failed"
        " during authentication due to invalid credentials with SASL mechanism SCRAM-SHA-512"
        " (after 325ms in state AUTH_REQ)",
        "SASL authentication failed for user 'etl' (SCRAM-SHA-512) at 127.0.0.1:9094:"
        " wrong username or password",
        True,
    ),
    "untrusted-ca": (
        SASL,
        KafkaError._SSL,
        "sasl_ssl://127.0.0.1:9094/bootstrap: SSL handshake failed: error:0A000086:SSL"
        " routines::certificate verify failed: broker certificate could not be verified, verify"
        " that ssl.ca.location is correctly configured (after 16ms in state SSL_HANDSHAKE)",
        "TLS handshake failed at 127.0.0.1:9094: broker certificate not trusted"
        " (ssl.ca.location=/tmp/ca.pem)",
        True,
    ),
    "sasl-ssl-on-plaintext": (
        SASL,
        KafkaError._TRANSPORT,
        "sasl_ssl://127.0.0.1:9092/bootstrap: SSL handshake failed: Disconnected: SSL connection"
        " closed by peer: connecting to a PLAINTEXT broker listener? (after 2ms in state"
        " SSL_HANDSHAKE)",
        "TLS handshake failed at 127.0.0.1:9092: the listener does not speak TLS (a PLAINTEXT or"
        " SASL_PLAINTEXT listener? check the port and security.protocol)",
        True,
    ),
    "sasl-plaintext-on-plaintext": (
        {**SASL, "security.protocol": "SASL_PLAINTEXT"},
        KafkaError._AUTHENTICATION,
        "sasl_plaintext://127.0.0.1:9092/bootstrap: SASL SCRAM-SHA-512 mechanism handshake"
        " failed: Broker: Request not valid in current SASL state: broker's supported"
        " mechanisms: ",
        "SASL handshake failed at 127.0.0.1:9092: the listener does not take SASL (is it a"
        " PLAINTEXT or SSL listener? check the port and security.protocol)",
        True,
    ),
    "wrong-mechanism": (
        {**SASL, "sasl.mechanism": "PLAIN"},
        KafkaError._AUTHENTICATION,
        "sasl_ssl://127.0.0.1:9094/bootstrap: SASL PLAIN mechanism handshake failed: Broker:"
        " Unsupported SASL mechanism: broker's supported mechanisms: SCRAM-SHA-512",
        "SASL handshake failed at 127.0.0.1:9094: the broker offers SCRAM-SHA-512, not"
        " sasl.mechanism=PLAIN",
        True,
    ),
    "no-client-certificate": (
        {"security.protocol": "SSL", "ssl.ca.location": "/tmp/ca.pem"},
        KafkaError._TRANSPORT,
        "ssl://127.0.0.1:9095/bootstrap: Receive failed: error:0A000412:SSL routines::ssl/tls"
        " alert bad certificate: SSL alert number 42",
        "TLS handshake failed at 127.0.0.1:9095: the broker rejected the client certificate"
        " (no ssl.certificate.location)",
        True,
    ),
    "plaintext-on-ssl": (
        {},
        None,  # only a log line, at INFO
        "[thrd:127.0.0.1:9095/bootstrap]: 127.0.0.1:9095/bootstrap: Disconnected: connection"
        " closed by peer: receive 0 after POLLIN (after 1ms in state APIVERSION_QUERY)",
        "127.0.0.1:9095 closed the connection before answering: the listener probably expects"
        " another security.protocol than PLAINTEXT (TLS or SASL?)",
        True,
    ),
    "refused": (
        {},
        KafkaError._TRANSPORT,
        "127.0.0.1:9092/bootstrap: Connect to ipv4#127.0.0.1:9092 failed: Connection refused"
        " (after 0ms in state CONNECT)",
        "cannot reach Kafka at 127.0.0.1:9092: connection refused",
        False,
    ),
}


def _record(events: ClientEvents, code: int | None, text: str) -> None:
    if code is None:
        events.logger.info("%s [%s] %s", "FAIL", "rdkafka#consumer-1", text)
    else:
        events.on_error(KafkaError(code, text))


@pytest.mark.parametrize("case", sorted(CASES))
def test_reason_becomes_one_sentence(case: str) -> None:
    settings, code, text, sentence, terminal = CASES[case]
    events = ClientEvents(settings)
    _record(events, code, text)
    cause = events.cause()
    assert cause is not None
    assert (cause.message, cause.terminal) == (sentence, terminal)
    # Only "nobody listens there" is given up on early (``librdkafka.given_up``).
    assert cause.unreachable == sentence.startswith("cannot reach Kafka")


def test_a_disconnect_before_answering_after_answers_is_a_broker_going_down() -> None:
    """Seen when a broker is killed mid-run: a reconnect half-open while it died is no sign of
    a wrong security.protocol once the same client got answers (exit 75, not 1)."""
    events = ClientEvents({})
    events.forget()  # a look-up succeeded
    _record(events, *CASES["plaintext-on-ssl"][1:3])
    cause = events.cause()
    assert cause is not None and not cause.terminal and cause.unreachable
    assert cause.message == "127.0.0.1:9095 closed the connection (is it restarting?)"


def test_a_terminal_cause_wins_over_later_noise() -> None:
    events = ClientEvents(SASL)
    _record(events, *CASES["wrong-password"][1:3])
    events.on_error(KafkaError(KafkaError._ALL_BROKERS_DOWN, "1/1 brokers are down"))
    cause = events.cause()
    assert cause is not None and cause.terminal and "SASL authentication failed" in cause.message


def test_classify_uses_the_cause_of_a_transport_failure() -> None:
    failed = KafkaException(
        KafkaError(KafkaError._TRANSPORT, "Failed to get metadata: Broker transport failure")
    )
    assert isinstance(classify(failed, "kafka topic t"), SourceUnavailableError)

    failed.cause = KafkaCause("TLS handshake failed at h:1: broker certificate not trusted", True)  # type: ignore[attr-defined]
    verdict = classify(failed, "kafka topic t")
    assert isinstance(verdict, TerminalError)
    assert (
        str(verdict) == "kafka topic t: TLS handshake failed at h:1: broker certificate not trusted"
    )

    failed.cause = KafkaCause("cannot reach Kafka at h:1: connection refused", False)  # type: ignore[attr-defined]
    verdict = classify(failed, "kafka topic t")
    assert isinstance(verdict, SourceUnavailableError)
    assert str(verdict) == "kafka topic t: cannot reach Kafka at h:1: connection refused"


def test_an_answer_from_the_broker_keeps_its_own_message() -> None:
    failed = KafkaException(KafkaError(KafkaError.UNKNOWN_TOPIC_OR_PART, "Unknown topic"))
    failed.cause = KafkaCause("cannot reach Kafka at h:1: connection refused", False)  # type: ignore[attr-defined]
    assert "Unknown topic" in str(classify(failed, "kafka topic t"))


def test_dedupe_drops_repeats_within_the_window() -> None:
    dedupe = DedupeFilter(seconds=60)

    def record(text: str, level: int = logging.ERROR) -> logging.LogRecord:
        return logging.LogRecord("kafka_etl.librdkafka", level, __file__, 1, text, None, None)

    first = "h:1/bootstrap: Connect failed: Connection refused (after 0ms in state CONNECT)"
    again = "h:1/bootstrap: Connect failed: Connection refused (after 3ms in state CONNECT)"
    assert dedupe.filter(record(first))
    assert not dedupe.filter(record(again))  # only librdkafka's timing differs
    assert dedupe.filter(record("h:2/bootstrap: Connect failed: Connection refused"))
    assert dedupe.filter(record(first, logging.WARNING))  # another level is another line
    assert DedupeFilter(seconds=0).filter(record(first))


def test_librdkafka_lines_stay_off_stderr_by_default() -> None:
    # In a fresh interpreter: pytest's own log handlers would hide Python's last-resort one.
    code = (
        "from connector.librdkafka import ClientEvents\n"
        "ClientEvents({}).logger.error('%s [%s] %s', 'FAIL', 'rdkafka#consumer-1', 'failed')\n"
    )
    done = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    assert done.stderr == ""
