"""scripts/local-connect's expected failures: one line and a documented exit code, no JVM.

Starting a worker is exercised by the ``kafka_connect`` fixture (test_cdc_debezium.py)."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

from tests.fixtures.cdc import LOCAL_CONNECT


def _run(*args: str, env: dict[str, str] | None = None) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, str(LOCAL_CONNECT), *args],
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
        env=env if env is not None else dict(os.environ),
    )


def test_status_of_a_dir_without_worker_is_3(tmp_path: Path) -> None:
    res = _run("status", "--dir", str(tmp_path / "none"))
    assert res.returncode == 3
    assert res.stdout.strip() == f"stopped ({tmp_path / 'none'})"


def test_start_without_a_broker_is_one_line(tmp_path: Path) -> None:
    env = {k: v for k, v in os.environ.items() if k != "KAFKA_BOOTSTRAP_SERVERS"}
    res = _run("start", "--dir", str(tmp_path / "w"), env=env)
    assert res.returncode == 1
    assert res.stderr.strip().splitlines() == [
        "local-connect: error: no broker: pass --bootstrap HOST:PORT or set KAFKA_BOOTSTRAP_SERVERS"
    ]
    assert not (tmp_path / "w").exists()


def test_stop_without_worker_is_idempotent(tmp_path: Path) -> None:
    res = _run("stop", "--dir", str(tmp_path / "none"), "--purge")
    assert res.returncode == 0, res.stderr
