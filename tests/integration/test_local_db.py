"""Smoke test of the sink databases from tests/fixtures/databases.py (and scripts/local-db)."""

from __future__ import annotations

import importlib.util
import os
import shutil
import socket
import subprocess
from pathlib import Path

import duckdb
import pytest
import sqlalchemy as sa
from sqlalchemy.engine import make_url
from sqlalchemy.pool import NullPool

from tests.fixtures.databases import LOCAL_DB, sinks


def _check_duckdb_natively(path: str) -> None:
    """Same checks through the duckdb API when the duckdb_engine dialect is not installed."""
    con = duckdb.connect(path)
    try:
        assert con.execute("SELECT count(*) FROM information_schema.tables").fetchone() == (0,)
        con.execute("CREATE TABLE t (id INTEGER PRIMARY KEY, v VARCHAR(20))")
        con.begin()
        con.executemany("INSERT INTO t VALUES (?, ?)", [(1, "a"), (2, "b")])
        con.commit()
        con.begin()
        con.execute("INSERT INTO t VALUES (3, 'c')")
        con.rollback()
        assert con.execute("SELECT count(*) FROM t").fetchone() == (2,)
    finally:
        con.close()


def test_commit_and_rollback(sink_url: str) -> None:
    url = make_url(sink_url)
    if url.get_backend_name() == "duckdb" and importlib.util.find_spec("duckdb_engine") is None:
        assert url.database
        _check_duckdb_natively(url.database)
        return
    engine = sa.create_engine(url, poolclass=NullPool)
    try:
        assert sa.inspect(engine).get_table_names() == [], "sink database is not empty"
        table = sa.Table(
            "t",
            sa.MetaData(),
            sa.Column("id", sa.Integer, primary_key=True, autoincrement=False),
            sa.Column("v", sa.String(20)),
        )
        table.create(engine)
        with engine.begin() as conn:
            conn.execute(table.insert(), [{"id": 1, "v": "a"}, {"id": 2, "v": "b"}])
        with engine.connect() as conn:
            tx = conn.begin()
            conn.execute(table.insert(), [{"id": 3, "v": "c"}])
            tx.rollback()
        with engine.connect() as conn:
            assert conn.scalar(sa.select(sa.func.count()).select_from(table)) == 2
    finally:
        engine.dispose()


@sinks("postgresql", "mariadb")
def test_servers_give_each_test_its_own_database(sink_url: str) -> None:
    assert (make_url(sink_url).database or "").startswith("t_")


def _free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


@pytest.mark.skipif(os.geteuid() != 0, reason="servers run as their own OS users only for root")
def test_local_db_starts_from_a_folder_the_server_user_cannot_enter(tmp_path: Path) -> None:
    """A clone under a mode-0700 folder (root's home, `mktemp -d`): the server's files move to
    /var/tmp, and start (twice), status and stop work as from a plain clone."""
    private = tmp_path / "private"
    private.mkdir(mode=0o700)
    script = private / "repo" / "scripts" / "local-db"
    script.parent.mkdir(parents=True)
    shutil.copy2(LOCAL_DB, script)
    port = _free_port()
    env = {k: v for k, v in os.environ.items() if k != "LOCAL_DB_DIR"}
    env["LOCAL_PG_PORT"] = str(port)

    def local_db(*args: str) -> subprocess.CompletedProcess[str]:
        return subprocess.run(
            [str(script), *args], env=env, capture_output=True, text=True, timeout=300, check=False
        )

    pointer = private / "repo" / ".local" / "db" / "postgresql.dir"
    try:
        first = local_db("start", "postgresql")
        assert first.returncode == 0, first.stderr
        assert "cannot enter" in first.stderr
        started = local_db("start", "postgresql")
        assert started.returncode == 0, started.stderr
        assert "already running" in started.stderr
        url = started.stdout.strip().splitlines()[-1]
        assert url == f"postgresql+psycopg://kafka_etl:kafka_etl@127.0.0.1:{port}/kafka_etl_test"
        moved = Path(pointer.read_text().strip())
        assert moved.parent.parent == Path("/var/tmp"), moved
        assert (moved / "data" / "PG_VERSION").is_file()
        engine = sa.create_engine(url, poolclass=NullPool)
        try:
            with engine.connect() as conn:
                assert conn.scalar(sa.text("SELECT 1")) == 1
        finally:
            engine.dispose()
        assert local_db("status", "postgresql").returncode == 0
    finally:
        stopped = local_db("stop", "postgresql")
        if pointer.is_file():
            shutil.rmtree(Path(pointer.read_text().strip()).parent, ignore_errors=True)
    assert stopped.returncode == 0, stopped.stderr
    assert local_db("status", "postgresql").returncode == 3
