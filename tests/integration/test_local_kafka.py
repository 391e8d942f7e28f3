"""scripts/local-kafka: start is idempotent, status reflects the broker, stop is idempotent."""

from __future__ import annotations

import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path

import pytest

LOCAL_KAFKA = Path(__file__).resolve().parents[2] / "scripts" / "local-kafka"


def local_kafka(*args: str) -> subprocess.CompletedProcess[str]:
    cmd = [sys.executable, str(LOCAL_KAFKA), *args]
    return subprocess.run(cmd, capture_output=True, text=True, timeout=600, check=False)


@pytest.fixture
def state_dir(tmp_path: Path) -> Iterator[str]:
    d = str(tmp_path / "kafka")
    yield d
    local_kafka("stop", "--purge", "--dir", d)


def test_start_status_stop(state_dir: str) -> None:
    first = local_kafka("start", "--dir", state_dir)
    assert first.returncode == 0, first.stderr
    bootstrap = first.stdout.splitlines()[-1]
    assert bootstrap.startswith("127.0.0.1:")

    again = local_kafka("start", "--dir", state_dir)
    assert again.returncode == 0, again.stderr
    assert again.stdout.splitlines()[-1] == bootstrap

    status = local_kafka("status", "--dir", state_dir)
    assert status.returncode == 0, status.stdout
    assert status.stdout.splitlines()[-1] == bootstrap

    assert local_kafka("stop", "--dir", state_dir).returncode == 0
    assert local_kafka("status", "--dir", state_dir).returncode == 3
    assert local_kafka("stop", "--dir", state_dir).returncode == 0  # idempotent
