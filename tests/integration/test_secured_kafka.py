"""Secured Kafka end to end: loads over SASL (SCRAM-SHA-512) and TLS through the real CLI, and
the misconfigurations a user meets, each one line naming its real cause, exit 1, in seconds."""

from __future__ import annotations

import socket
import subprocess
import time
from collections.abc import Iterator, Mapping
from pathlib import Path

import pytest
import yaml

from connector.client import make_consumer, partitions
from kafka_etl.errors import TerminalError
from tests.fixtures.kafka import SecuredKafka, TopicFactory, produce_json, topics_on
from tests.helpers import cli, events, expected_offsets, high_watermarks, table_offsets

TARGET = "duckdb:///warehouse.duckdb"
EVENTS = 20_000
FAILS_WITHIN = 30.0  # seconds, interpreter start-up included


@pytest.fixture
def secured_topics(secured_kafka: SecuredKafka) -> Iterator[TopicFactory]:
    yield from topics_on(secured_kafka.plaintext)


def write_config(directory: Path, kafka: Mapping[str, str], topic: str = "unused") -> Path:
    path = directory / "pipelines.yaml"
    document = {
        "kafka": dict(kafka),
        "pipelines": {"ev": {"topic": topic, "target": TARGET, "table": "ev"}},
    }
    path.write_text(yaml.safe_dump(document, sort_keys=False), encoding="utf-8")
    return path


def other_ca(directory: Path) -> Path:
    """A CA certificate that did not sign the broker's."""
    key, pem = directory / "other-ca.key", directory / "other-ca.pem"
    subprocess.run(
        ["openssl", "req", "-x509", "-newkey", "ec", "-pkeyopt", "ec_paramgen_curve:P-256",
         "-nodes", "-keyout", str(key), "-out", str(pem), "-subj", "/CN=another CA", "-days", "2"],
        check=True, capture_output=True,
    )  # fmt: skip
    return pem


def closed_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


@pytest.mark.parametrize("listener", ["sasl_ssl", "mtls"])
def test_loads_exactly_once_over_a_secured_listener(
    tmp_path: Path, secured_kafka: SecuredKafka, secured_topics: TopicFactory, listener: str
) -> None:
    topic = secured_topics(partitions=3)
    produce_json(secured_kafka.plaintext, topic, events(0, EVENTS))
    kafka = (
        secured_kafka.sasl_ssl_settings()
        if listener == "sasl_ssl"
        else secured_kafka.mtls_settings()
    )
    config = write_config(tmp_path, kafka, topic)

    first = cli(config, "run", "ev")
    assert first.returncode == 0, first.stderr
    assert first.stderr == ""  # nothing from librdkafka without -v
    marks = high_watermarks(secured_kafka.plaintext, topic, 3)
    assert sum(marks.values()) == EVENTS
    assert table_offsets(TARGET, tmp_path, "ev") == expected_offsets(marks)

    produce_json(secured_kafka.plaintext, topic, events(EVENTS, 500))
    again = cli(config, "run", "ev")
    assert again.returncode == 0, again.stderr
    marks = high_watermarks(secured_kafka.plaintext, topic, 3)
    assert table_offsets(TARGET, tmp_path, "ev") == expected_offsets(marks)


def _cases(k: SecuredKafka, tmp: Path) -> dict[str, tuple[dict[str, str], list[str]]]:
    """name -> (librdkafka settings, phrases the one line must contain)."""
    return {
        "wrong-scram-password": (
            k.sasl_ssl_settings(**{"sasl.password": "not-the-password"}),
            [f"SASL authentication failed for user '{k.username}' ({k.mechanism})",
             f"at {k.sasl_ssl}", "wrong username or password"],
        ),
        "untrusted-ca": (
            k.sasl_ssl_settings(**{"ssl.ca.location": str(other_ca(tmp))}),
            ["TLS handshake failed", "broker certificate not trusted",
             f"ssl.ca.location={tmp / 'other-ca.pem'}"],
        ),
        "sasl-ssl-against-plaintext": (
            k.sasl_ssl_settings(**{"bootstrap.servers": k.plaintext}),
            ["TLS handshake failed", f"at {k.plaintext}", "does not speak TLS"],
        ),
        "sasl-plaintext-against-plaintext": (
            k.sasl_ssl_settings(
                **{"bootstrap.servers": k.plaintext, "security.protocol": "SASL_PLAINTEXT"}
            ),
            ["SASL handshake failed", f"at {k.plaintext}", "does not take SASL"],
        ),
        "no-client-certificate": (
            {"bootstrap.servers": k.ssl, "security.protocol": "SSL", "ssl.ca.location": str(k.ca)},
            ["TLS handshake failed", "rejected the client certificate"],
        ),
        "plaintext-against-ssl": (
            {"bootstrap.servers": k.ssl},
            [f"{k.ssl} closed the connection", "security.protocol than PLAINTEXT"],
        ),
    }  # fmt: skip


CASES = [
    "wrong-scram-password",
    "untrusted-ca",
    "sasl-ssl-against-plaintext",
    "sasl-plaintext-against-plaintext",
    "no-client-certificate",
    "plaintext-against-ssl",
]


@pytest.mark.parametrize("case", CASES)
def test_misconfiguration_is_one_line_naming_the_cause(
    tmp_path: Path, secured_kafka: SecuredKafka, secured_topics: TopicFactory, case: str
) -> None:
    topic = secured_topics(partitions=1)
    kafka, phrases = _cases(secured_kafka, tmp_path)[case]
    config = write_config(tmp_path, kafka, topic)

    began = time.monotonic()
    result = cli(config, "run", "ev", timeout=120)
    elapsed = time.monotonic() - began

    lines = result.stderr.splitlines()
    assert result.returncode == 1, result.stderr
    assert len(lines) == 1, result.stderr
    assert lines[0].startswith("kafka-etl: error: "), lines
    for phrase in phrases:
        assert phrase in lines[0], lines[0]
    assert secured_kafka.password not in result.stderr
    assert elapsed < FAILS_WITHIN, f"{case} took {elapsed:.1f}s"


def test_verbose_shows_librdkafka_lines_once(
    tmp_path: Path, secured_kafka: SecuredKafka, secured_topics: TopicFactory
) -> None:
    topic = secured_topics(partitions=1)
    kafka = secured_kafka.sasl_ssl_settings(**{"sasl.password": "not-the-password"})
    config = write_config(tmp_path, kafka, topic)

    result = cli(config, "-v", "run", "ev", timeout=120)

    assert result.returncode == 1, result.stderr
    lines = result.stderr.splitlines()
    assert "SASL authentication failed" in lines[-1], lines[-1]
    librdkafka = [line for line in lines if "rdkafka#consumer" in line]
    assert any("SASL authentication error" in line for line in librdkafka), result.stderr
    # De-duplicated: librdkafka retried many times, each reason is shown once.
    assert len(librdkafka) < 10, result.stderr


@pytest.mark.parametrize("verbose", [False, True], ids=["quiet", "verbose"])
def test_down_broker_quiet_unless_verbose(tmp_path: Path, verbose: bool) -> None:
    address = f"127.0.0.1:{closed_port()}"
    config = write_config(tmp_path, {"bootstrap.servers": address})

    result = cli(config, *(["-v"] if verbose else []), "run", "ev", timeout=120)

    assert result.returncode == 75, result.stderr
    lines = result.stderr.splitlines()
    assert f"cannot reach Kafka at {address}: connection refused" in lines[-1], lines[-1]
    librdkafka = [line for line in lines if "rdkafka#consumer" in line]
    if verbose:
        assert librdkafka, result.stderr
        assert len(librdkafka) < 10, result.stderr
    else:
        assert len(lines) == 1, result.stderr


def test_a_refused_login_ends_a_lookup_long_before_its_timeout(
    secured_kafka: SecuredKafka, secured_topics: TopicFactory
) -> None:
    topic = secured_topics(partitions=1)
    settings = secured_kafka.sasl_ssl_settings(**{"sasl.password": "not-the-password"})
    consumer = make_consumer(settings, "test-refused-login")
    try:
        began = time.monotonic()
        with pytest.raises(TerminalError, match="SASL authentication failed for user 'etl'"):
            partitions(consumer, topic, timeout=20)
        assert time.monotonic() - began < 5  # librdkafka alone would retry for all 20 s
    finally:
        consumer.close()
