"""Smoke test of the sink databases from tests/fixtures/databases.py (and scripts/local-db)."""

from __future__ import annotations

import importlib.util

import duckdb
import sqlalchemy as sa
from sqlalchemy.engine import make_url
from sqlalchemy.pool import NullPool

from tests.fixtures.databases import sinks


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
