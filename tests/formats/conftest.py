"""Fixtures for format tests: a real Schema Registry and RawBatch builders.

schema_registry_url  session-scoped URL of a Confluent-compatible registry:
    $KAFKA_ETL_TEST_SCHEMA_REGISTRY_URL when set, otherwise an Apicurio Registry from
    `scripts/schema-registry start --dir <tmp> --owner-pid <pytest>`, stopped at session end.
registry_client  a confluent-kafka SchemaRegistryClient on it (for serializers in tests).
secured_registry  session-scoped Apicurio Registry serving HTTPS only and requiring basic auth
    (`scripts/schema-registry start --tls --basic-auth`), with its CA, a client certificate and
    the credentials it printed.
"""

from __future__ import annotations

import os
import subprocess
import sys
import tempfile
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import pytest
from confluent_kafka.schema_registry import SchemaRegistryClient
from pydantic import SecretStr

REPO_ROOT = Path(__file__).resolve().parents[2]
SCHEMA_REGISTRY = REPO_ROOT / "scripts" / "schema-registry"
START_TIMEOUT = 900  # seconds; covers a first-time Maven build of the registry


def _run(*args: str) -> subprocess.CompletedProcess[str]:
    cmd = [sys.executable, str(SCHEMA_REGISTRY), *args]
    return subprocess.run(cmd, capture_output=True, text=True, timeout=START_TIMEOUT, check=False)


@pytest.fixture(scope="session")
def schema_registry_url() -> Iterator[str]:
    if env := os.environ.get("KAFKA_ETL_TEST_SCHEMA_REGISTRY_URL"):
        yield env
        return
    state_dir = tempfile.mkdtemp(prefix="kafka-etl-test-registry-")
    res = _run("start", "--dir", state_dir, "--owner-pid", str(os.getpid()))
    try:
        if res.returncode != 0:
            pytest.fail(f"scripts/schema-registry start failed:\n{res.stderr}", pytrace=False)
        yield res.stdout.strip().splitlines()[-1]
    finally:
        _run("stop", "--purge", "--dir", state_dir)


@pytest.fixture(scope="session")
def registry_client(schema_registry_url: str) -> SchemaRegistryClient:
    return SchemaRegistryClient({"url": schema_registry_url})


@dataclass(frozen=True)
class SecuredRegistry:
    """An HTTPS-only registry that wants basic auth; ``settings`` are a working client config."""

    url: str
    ca: str
    certificate: str
    key: str
    user_info: SecretStr

    @property
    def password(self) -> str:
        return self.user_info.get_secret_value().split(":", 1)[1]

    def settings(self, **overrides: str | None) -> dict[str, str]:
        """``schema_registry:`` settings that work (CA, basic auth); None drops a setting."""
        base = {
            "url": self.url,
            "ssl.ca.location": self.ca,
            "basic.auth.user.info": self.user_info.get_secret_value(),
        }
        merged = {**base, **overrides}
        return {k: v for k, v in merged.items() if v is not None}


@pytest.fixture(scope="session")
def secured_registry() -> Iterator[SecuredRegistry]:
    state_dir = tempfile.mkdtemp(prefix="kafka-etl-test-secured-registry-")
    res = _run(
        "start", "--tls", "--basic-auth", "--dir", state_dir, "--owner-pid", str(os.getpid())
    )
    try:
        if res.returncode != 0:
            pytest.fail(f"scripts/schema-registry start --tls failed:\n{res.stderr}", pytrace=False)
        *lines, url = res.stdout.strip().splitlines()
        named = dict(line.split("=", 1) for line in lines)
        yield SecuredRegistry(
            url=url,
            ca=named["SSL_CA_LOCATION"],
            certificate=named["SSL_CERTIFICATE_LOCATION"],
            key=named["SSL_KEY_LOCATION"],
            user_info=SecretStr(named["BASIC_AUTH_USER_INFO"]),
        )
    finally:
        _run("stop", "--purge", "--dir", state_dir)
