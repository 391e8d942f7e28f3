"""A real Celery set-up for the Dagster tests: redis-server on loopback and Celery workers.

Every process is started in a session of its own and killed by process group when its context
ends, so no redis-server or worker outlives a test.
"""

from __future__ import annotations

import contextlib
import os
import shutil
import signal
import socket
import subprocess
import sys
import time
from collections.abc import Iterator, Mapping
from dataclasses import dataclass, field
from pathlib import Path

import pytest

REDIS_SERVER = "redis-server"
CELERY = str(Path(sys.executable).parent / "celery")
START_TIMEOUT = 60.0


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def kill_group(proc: subprocess.Popen[bytes], sig: int = signal.SIGKILL) -> None:
    """Signal ``proc``'s process group (it leads one: ``start_new_session``), then reap it."""
    with contextlib.suppress(ProcessLookupError):
        os.killpg(proc.pid, sig)
    with contextlib.suppress(subprocess.TimeoutExpired):
        proc.wait(timeout=30)


@contextlib.contextmanager
def redis_server(directory: Path) -> Iterator[str]:
    """A private redis-server (no persistence) on a free loopback port; yields its URL."""
    binary = shutil.which(REDIS_SERVER)
    if binary is None:
        pytest.fail(f"{REDIS_SERVER} not found: `make system-deps` installs Debian's redis-server")
    directory.mkdir(parents=True, exist_ok=True)
    port = _free_port()
    log = (directory / "redis.log").open("wb")
    proc = subprocess.Popen(
        [
            binary,
            "--port",
            str(port),
            "--bind",
            "127.0.0.1",
            "--dir",
            str(directory),
            "--save",
            "",
            "--appendonly",
            "no",
            "--daemonize",
            "no",
            "--protected-mode",
            "yes",
        ],
        stdout=log,
        stderr=subprocess.STDOUT,
        start_new_session=True,
    )
    try:
        deadline = time.monotonic() + START_TIMEOUT
        while True:
            with (
                contextlib.suppress(OSError),
                socket.create_connection(("127.0.0.1", port), 1) as s,
            ):
                s.sendall(b"PING\r\n")
                if s.recv(16).startswith(b"+PONG"):
                    break
            if proc.poll() is not None or time.monotonic() > deadline:
                pytest.fail(
                    f"redis-server on 127.0.0.1:{port} did not start: {directory}/redis.log"
                )
            time.sleep(0.1)
        yield f"redis://127.0.0.1:{port}"
    finally:
        kill_group(proc)
        log.close()


@dataclass
class Workers:
    """Celery worker processes (``--pool solo``: one task at a time, one process each)."""

    broker: str
    directory: Path
    env: Mapping[str, str]
    procs: dict[str, subprocess.Popen[bytes]] = field(default_factory=dict)

    def start(self, name: str) -> None:
        log = (self.directory / f"{name}.log").open("ab")
        self.procs[name] = subprocess.Popen(
            [
                CELERY,
                "-A",
                "dagster_celery.app",
                "worker",
                "--pool",
                "solo",
                "--loglevel",
                "INFO",
                "-n",
                f"{name}@%h",
                "--prefetch-multiplier",
                "1",
                "--without-gossip",
                "--without-mingle",
                "--without-heartbeat",
            ],
            env={**self.env, "PYTHONPATH": f"{self.directory}{os.pathsep}{self.env['PYTHONPATH']}"},
            cwd=self.directory,
            stdout=log,
            stderr=subprocess.STDOUT,
            start_new_session=True,
        )
        log.close()

    def kill(self, name: str) -> None:
        kill_group(self.procs.pop(name))

    def stop_all(self) -> None:
        for name in list(self.procs):
            self.kill(name)


@contextlib.contextmanager
def celery_workers(
    broker: str, directory: Path, env: Mapping[str, str], names: tuple[str, ...]
) -> Iterator[Workers]:
    """Workers of ``dagster_celery.app`` on ``broker`` (its config module written to
    ``directory``, as ``dagster-celery worker start`` does), ``env`` for the code location."""
    directory.mkdir(parents=True, exist_ok=True)
    (directory / "dagster_celery_config.py").write_text(
        f"broker_url = {broker + '/0'!r}\nresult_backend = {broker + '/1'!r}\n"
    )
    workers = Workers(broker, directory, env)
    try:
        for name in names:
            workers.start(name)
        yield workers
    finally:
        workers.stop_all()
