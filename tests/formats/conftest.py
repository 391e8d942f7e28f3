"""Fixtures for format tests: a real Schema Registry and RawBatch builders.

schema_registry_url  session-scoped URL of a Confluent-compatible registry:
    $KAFKA_ETL_TEST_SCHEMA_REGISTRY_URL when set, otherwise an Apicurio Registry from
    `scripts/schema-registry start --dir <tmp> --owner-pid <pytest>`, stopped at session end.
registry_client  a confluent-kafka SchemaRegistryClient on it (for serializers in tests).
"""

from __future__ import annotations

import os
import subprocess
import sys
import tempfile
from collections.abc import Iterator
from pathlib import Path

import pytest
from confluent_kafka.schema_registry import SchemaRegistryClient

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
