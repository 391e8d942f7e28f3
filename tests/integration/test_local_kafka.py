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


def test_secure_start_adds_listeners_and_stays_idempotent(state_dir: str) -> None:
    plain = local_kafka("start", "--dir", state_dir)
    assert plain.returncode == 0, plain.stderr
    assert plain.stdout.splitlines() == [plain.stdout.splitlines()[-1]]  # only the bootstrap
    bootstrap = plain.stdout.splitlines()[-1]

    secure = local_kafka("start", "--secure", "--dir", state_dir)  # restarts with more listeners
    assert secure.returncode == 0, secure.stderr
    lines = secure.stdout.splitlines()
    assert lines[-1] == bootstrap
    kv = dict(line.split("=", 1) for line in lines[:-1])
    assert set(kv) == {
        "SASL_PLAINTEXT", "SASL_SSL", "SSL", "SASL_MECHANISM", "SASL_USERNAME", "SASL_PASSWORD",
        "SSL_CA_LOCATION", "SSL_CERTIFICATE_LOCATION", "SSL_KEY_LOCATION",
    }  # fmt: skip
    assert kv["SASL_MECHANISM"] == "SCRAM-SHA-512"
    for name in ("SSL_CA_LOCATION", "SSL_CERTIFICATE_LOCATION", "SSL_KEY_LOCATION"):
        assert Path(kv[name]).is_file() and Path(kv[name]).is_relative_to(state_dir)
    assert (Path(state_dir) / "secure.env").read_text().splitlines() == lines[:-1]

    # Reused as it is, with or without --secure; status names the same listeners.
    for args in (["--secure"], []):
        again = local_kafka("start", *args, "--dir", state_dir)
        assert again.returncode == 0, again.stderr
        assert again.stdout.splitlines() == lines
        assert "already running" in again.stderr
    status = local_kafka("status", "--dir", state_dir)
    assert status.returncode == 0 and status.stdout.splitlines()[1:] == lines
