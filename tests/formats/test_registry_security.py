"""The schema registry client's TLS and basic-auth settings against a real, secured Apicurio
Registry (`scripts/schema-registry start --tls --basic-auth`), through the real CLI: an Avro topic
loads exactly once over HTTPS with basic auth (with and without a client certificate), and each
misconfiguration a user meets is one line naming its cause, exit 1, without the password; a
registry that is down stays exit 75; TLS files that do not load are named before any request."""

from __future__ import annotations

import json
import socket
import subprocess
import time
from pathlib import Path
from typing import Any

import pytest
from confluent_kafka.schema_registry import SchemaRegistryClient
from confluent_kafka.schema_registry.avro import AvroSerializer
from confluent_kafka.serialization import MessageField, SerializationContext

from connector.formats.registry import SchemaRegistry
from kafka_etl.errors import TerminalError
from tests.fixtures.kafka import TopicFactory, produce_json
from tests.formats.conftest import SecuredRegistry
from tests.helpers import cli, expected_offsets, high_watermarks, table_offsets, write_pipelines

TARGET = "duckdb:///warehouse.duckdb"
EVENTS = 2_000
PARTITIONS = 2
FAILS_WITHIN = 30.0  # seconds, interpreter start-up and the client's own retries included

EVENT = {
    "type": "record",
    "name": "Event",
    "namespace": "secured",
    "fields": [
        {"name": "id", "type": "long"},
        {"name": "action", "type": "string"},
        {"name": "amount", "type": ["null", "double"], "default": None},
    ],
}


def produce_avro(
    bootstrap: str, registry: SecuredRegistry, topic: str, start: int, count: int
) -> None:
    """Avro events in the Confluent wire format, the schema registered over HTTPS + basic auth."""
    serializer = AvroSerializer(SchemaRegistryClient(registry.settings()), json.dumps(EVENT))
    ctx = SerializationContext(topic, MessageField.VALUE)
    values = [
        serializer({"id": i, "action": ("view", "buy")[i % 2], "amount": i / 4 or None}, ctx)
        for i in range(start, start + count)
    ]
    produce_json(bootstrap, topic, values, [str(i).encode() for i in range(start, start + count)])


def write_config(directory: Path, bootstrap: str, topic: str, registry: dict[str, Any]) -> Path:
    body = {"topic": topic, "target": TARGET, "table": "ev", "format": "avro"}
    config = write_pipelines(directory, bootstrap, {"ev": {**body, "schema_registry": registry}})
    return config


def other_ca(directory: Path) -> tuple[Path, Path]:
    """A self-signed certificate and its key: a CA that signed nothing of the registry's."""
    key, pem = directory / "other.key", directory / "other.pem"
    subprocess.run(
        ["openssl", "req", "-x509", "-newkey", "ec", "-pkeyopt", "ec_paramgen_curve:P-256",
         "-nodes", "-keyout", str(key), "-out", str(pem), "-subj", "/CN=another CA", "-days", "2"],
        check=True, capture_output=True,
    )  # fmt: skip
    return pem, key


def closed_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def assert_loaded_exactly_once(tmp_path: Path, bootstrap: str, topic: str) -> None:
    marks = high_watermarks(bootstrap, topic, PARTITIONS)
    assert table_offsets(TARGET, tmp_path, "ev") == expected_offsets(marks)


@pytest.mark.parametrize("client_certificate", [False, True], ids=["ca-only", "mutual-tls"])
def test_avro_loads_exactly_once_over_https_with_basic_auth(
    tmp_path: Path,
    kafka_bootstrap: str,
    topic_factory: TopicFactory,
    secured_registry: SecuredRegistry,
    client_certificate: bool,
) -> None:
    topic = topic_factory(PARTITIONS)
    produce_avro(kafka_bootstrap, secured_registry, topic, 0, EVENTS)
    tls = (
        {"ssl.certificate.location": secured_registry.certificate,
         "ssl.key.location": secured_registry.key}
        if client_certificate
        else {}
    )  # fmt: skip
    config = write_config(tmp_path, kafka_bootstrap, topic, secured_registry.settings(**tls))

    first = cli(config, "run", "ev", "--json")
    assert first.returncode == 0, first.stderr
    assert first.stderr == ""
    assert json.loads(first.stdout)["rows"] == EVENTS
    assert_loaded_exactly_once(tmp_path, kafka_bootstrap, topic)

    produce_avro(kafka_bootstrap, secured_registry, topic, EVENTS, 100)
    again = cli(config, "run", "ev", "--json")
    assert again.returncode == 0, again.stderr
    assert json.loads(again.stdout)["rows"] == 100
    assert_loaded_exactly_once(tmp_path, kafka_bootstrap, topic)


def _cases(r: SecuredRegistry, tmp: Path) -> dict[str, tuple[dict[str, str], list[str]]]:
    """name -> (schema_registry settings, phrases the one line must contain)."""
    other_pem, other_key = other_ca(tmp)
    return {
        "untrusted-ca": (
            r.settings(**{"ssl.ca.location": str(other_pem)}),
            [f"schema registry {r.url}", "TLS certificate not trusted",
             f"(ssl.ca.location={other_pem})"],
        ),
        "system-cas": (
            r.settings(**{"ssl.ca.location": None}),
            ["TLS certificate not trusted (ssl.ca.location not set)"],
        ),
        "certificate-not-for-host": (
            r.settings(url=r.url.replace("127.0.0.1", "localhost")),
            ["TLS certificate is not for this host", "'localhost'"],
        ),
        "wrong-password": (
            r.settings(**{"basic.auth.user.info": "etl:not-the-password"}),
            ["401 Unauthorized: wrong basic.auth.user.info (user 'etl')"],
        ),
        "no-credentials": (
            r.settings(**{"basic.auth.user.info": None}),
            ["401 Unauthorized: the registry needs credentials: set basic.auth.user.info"],
        ),
        "client-certificate-of-another-ca": (
            r.settings(**{"ssl.certificate.location": str(other_pem),
                          "ssl.key.location": str(other_key)}),
            ["TLS handshake failed: the registry refused the client certificate",
             f"(ssl.certificate.location={other_pem})"],
        ),
        "missing-ca-file": (
            r.settings(**{"ssl.ca.location": str(tmp / "no-such-ca.pem")}),
            [f"ssl.ca.location={tmp / 'no-such-ca.pem'}: no such file"],
        ),
    }  # fmt: skip


CASES = [
    "untrusted-ca",
    "system-cas",
    "certificate-not-for-host",
    "wrong-password",
    "no-credentials",
    "client-certificate-of-another-ca",
    "missing-ca-file",
]


@pytest.mark.parametrize("case", CASES)
def test_registry_misconfiguration_is_one_terminal_line_naming_the_cause(
    tmp_path: Path,
    kafka_bootstrap: str,
    topic_factory: TopicFactory,
    secured_registry: SecuredRegistry,
    case: str,
) -> None:
    topic = topic_factory(PARTITIONS)
    produce_avro(kafka_bootstrap, secured_registry, topic, 0, 50)
    settings, phrases = _cases(secured_registry, tmp_path)[case]
    config = write_config(tmp_path, kafka_bootstrap, topic, settings)

    began = time.monotonic()
    result = cli(config, "run", "ev", timeout=120)
    elapsed = time.monotonic() - began

    lines = result.stderr.splitlines()
    assert result.returncode == 1, result.stderr
    assert len(lines) == 1, result.stderr
    assert lines[0].startswith("kafka-etl: error: "), lines
    for phrase in phrases:
        assert phrase in lines[0], lines[0]
    assert secured_registry.password not in result.stderr + result.stdout
    assert elapsed < FAILS_WITHIN, f"{case} took {elapsed:.1f}s"

    # Nothing was committed: with the right settings the run loads every offset, once.
    fixed = write_config(tmp_path, kafka_bootstrap, topic, secured_registry.settings())
    assert cli(fixed, "run", "ev").returncode == 0
    assert_loaded_exactly_once(tmp_path, kafka_bootstrap, topic)


def test_a_down_https_registry_stays_transient(
    tmp_path: Path,
    kafka_bootstrap: str,
    topic_factory: TopicFactory,
    secured_registry: SecuredRegistry,
) -> None:
    topic = topic_factory(PARTITIONS)
    produce_avro(kafka_bootstrap, secured_registry, topic, 0, 50)
    down = secured_registry.settings(url=f"https://127.0.0.1:{closed_port()}/apis/ccompat/v7")
    config = write_config(tmp_path, kafka_bootstrap, topic, down)

    result = cli(config, "run", "ev", timeout=120)

    lines = result.stderr.splitlines()
    assert result.returncode == 75, result.stderr
    assert len(lines) == 1, result.stderr
    assert lines[0].startswith("kafka-etl: error: schema registry https://127.0.0.1:"), lines
    assert secured_registry.password not in result.stderr + result.stdout


@pytest.mark.parametrize("problem", ["key-of-another-certificate", "not-a-certificate"])
def test_tls_files_that_do_not_load_are_a_configuration_error(tmp_path: Path, problem: str) -> None:
    pem, _ = other_ca(tmp_path)
    (tmp_path / "other").mkdir()
    _, wrong_key = other_ca(tmp_path / "other")
    junk = tmp_path / "junk.pem"
    junk.write_text("not a certificate\n")
    settings, reason = {
        "key-of-another-certificate": (
            {"ssl.certificate.location": str(pem), "ssl.key.location": str(wrong_key)},
            f"ssl.certificate.location={pem}, ssl.key.location={wrong_key}): KEY_VALUES_MISMATCH",
        ),
        "not-a-certificate": (
            {"ssl.ca.location": str(junk)},
            f"(ssl.ca.location={junk}): NO_CERTIFICATE_OR_CRL_FOUND",
        ),
    }[problem]

    with pytest.raises(TerminalError) as caught:
        SchemaRegistry({"url": "https://etl:secret@127.0.0.1:9", **settings})

    assert str(caught.value).startswith("schema registry https://etl:***@127.0.0.1:9: ")
    assert "cannot load the TLS files" in str(caught.value)
    assert reason in str(caught.value)
