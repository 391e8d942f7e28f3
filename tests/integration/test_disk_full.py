"""A target whose disk fills up mid-run: one line, exit 75 (free space, run again), and the run
after space is freed loads exactly once. The disk is a small tmpfs (for PostgreSQL, under a
tablespace of its own), grown by a remount."""

from __future__ import annotations

import pwd
import subprocess
import tempfile
import uuid
from collections.abc import Callable, Iterator
from pathlib import Path

import pytest
import sqlalchemy as sa
from sqlalchemy.engine import make_url
from sqlalchemy.pool import NullPool

from tests.fixtures.databases import fresh_database
from tests.fixtures.kafka import Produce, TopicFactory
from tests.helpers import (
    checkpoints,
    cli,
    events,
    expected_offsets,
    high_watermarks,
    table_offsets,
    write_pipelines,
)

Resize = Callable[[str], None]


def _mount(*args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(["mount", *args], capture_output=True, text=True, check=False)


@pytest.fixture
def small_disk(tmp_path: Path) -> Iterator[tuple[Path, Resize]]:
    """A 4 MB tmpfs and a function that remounts it at another size; unmounted after."""
    disk = tmp_path / "disk"
    disk.mkdir()
    mounted = _mount("-t", "tmpfs", "-o", "size=4m", "tmpfs", str(disk))
    if mounted.returncode != 0:
        pytest.skip(f"cannot mount a tmpfs here: {mounted.stderr.strip()}")

    def resize(size: str) -> None:
        resized = _mount("-o", f"remount,size={size}", str(disk))
        assert resized.returncode == 0, resized.stderr

    try:
        yield disk, resize
    finally:
        subprocess.run(["umount", "-l", str(disk)], check=False)


# DuckDB meets a full disk in two places: writing a commit to its write-ahead log (an error
# of that commit), or checkpointing into the database file (a fatal error, after which the
# database refuses every call, the rollback included). A low checkpoint_threshold makes every
# few batches checkpoint.
@pytest.mark.parametrize(
    "options", ["", "?checkpoint_threshold=256KB"], ids=["wal-write", "checkpoint"]
)
def test_a_full_disk_under_duckdb_is_one_line_exit_75_and_the_rerun_loads_exactly_once(
    options: str,
    small_disk: tuple[Path, Resize],
    tmp_path: Path,
    kafka_bootstrap: str,
    topic_factory: TopicFactory,
    produce: Produce,
) -> None:
    disk, resize = small_disk
    topic = topic_factory(3)
    produce(topic, events(0, 200_000))
    target = f"duckdb:///{disk}/warehouse.duckdb{options}"
    body = {"topic": topic, "target": target, "table": "events", "batch_max_rows": 10_000}
    config = write_pipelines(tmp_path, kafka_bootstrap, {"events": body})

    full = cli(config, "run", "events")
    assert full.returncode == 75, (full.returncode, full.stderr)
    where = f"duckdb {disk}/warehouse.duckdb"
    lines = full.stderr.strip().splitlines()
    assert lines == [
        f"kafka-etl: error: {where}: no space left on device; nothing from this batch was committed"
    ], full.stderr
    # What a scheduler's retry meets while the disk is still full (opening the file may already
    # need room, to replay the write-ahead log).
    still_full = cli(config, "run", "events")
    assert still_full.returncode == 75, (still_full.returncode, still_full.stderr)
    lines = still_full.stderr.strip().splitlines()
    assert len(lines) == 1, still_full.stderr
    assert lines[0].startswith(f"kafka-etl: error: {where}: no space left on device"), lines

    resize("256m")
    before = sum(checkpoints(target, tmp_path, "events", topic).values())
    assert 0 < before < 200_000, "the disk did not fill up in the middle of the run"
    rerun = cli(config, "run", "events")
    assert rerun.returncode == 0, rerun.stderr
    marks = high_watermarks(kafka_bootstrap, topic, 3)
    assert sum(marks.values()) == 200_000
    assert table_offsets(target, tmp_path, "events") == expected_offsets(marks)
    assert checkpoints(target, tmp_path, "events", topic) == marks


@pytest.fixture
def postgresql_on_small_disk(postgresql_url: str) -> Iterator[tuple[str, Resize]]:
    """A fresh PostgreSQL database whose tables go to a tablespace on a 4 MB tmpfs (catalogs
    and WAL stay on the server's own disk, so only this database's tables run out of room)."""
    name = f"kafka_etl_{uuid.uuid4().hex[:12]}"
    disk = Path(tempfile.gettempdir()) / name  # outside tmp_path, which postgres cannot enter
    disk.mkdir()
    owner = pwd.getpwnam("postgres")
    options = f"size=4m,mode=700,uid={owner.pw_uid},gid={owner.pw_gid}"
    mounted = _mount("-t", "tmpfs", "-o", options, "tmpfs", str(disk))
    if mounted.returncode != 0:
        disk.rmdir()
        pytest.skip(f"cannot mount a tmpfs here: {mounted.stderr.strip()}")

    def resize(size: str) -> None:
        resized = _mount("-o", f"remount,size={size}", str(disk))
        assert resized.returncode == 0, resized.stderr

    admin = sa.create_engine(postgresql_url, isolation_level="AUTOCOMMIT", poolclass=NullPool)
    quoted = admin.dialect.identifier_preparer.quote_identifier(name)
    try:
        with admin.connect() as conn:
            conn.execute(sa.text(f"CREATE TABLESPACE {quoted} LOCATION '{disk}'"))
        try:
            with fresh_database(postgresql_url) as url:
                database = admin.dialect.identifier_preparer.quote_identifier(
                    make_url(url).database or ""
                )
                with admin.connect() as conn:
                    conn.execute(
                        sa.text(f"ALTER DATABASE {database} SET default_tablespace = {quoted}")
                    )
                yield url, resize
        finally:
            with admin.connect() as conn:
                conn.execute(sa.text(f"DROP TABLESPACE IF EXISTS {quoted}"))
    finally:
        admin.dispose()
        subprocess.run(["umount", "-l", str(disk)], check=False)
        disk.rmdir()


def test_a_full_disk_under_postgresql_is_one_line_exit_75_and_the_rerun_loads_exactly_once(
    postgresql_on_small_disk: tuple[str, Resize],
    tmp_path: Path,
    kafka_bootstrap: str,
    topic_factory: TopicFactory,
    produce: Produce,
) -> None:
    target, resize = postgresql_on_small_disk
    topic = topic_factory(3)
    produce(topic, events(0, 100_000))
    body = {"topic": topic, "target": target, "table": "events", "batch_max_rows": 5_000}
    config = write_pipelines(tmp_path, kafka_bootstrap, {"events": body})

    full = cli(config, "run", "events")
    assert full.returncode == 75, (full.returncode, full.stderr)
    where = make_url(target).render_as_string(hide_password=True)
    assert full.stderr.strip().splitlines() == [
        f"kafka-etl: error: {where}: no space left on device; nothing from this batch was committed"
    ], full.stderr
    still_full = cli(config, "run", "events")
    assert still_full.returncode == 75, (still_full.returncode, still_full.stderr)
    assert still_full.stderr == full.stderr

    resize("256m")
    before = sum(checkpoints(target, tmp_path, "events", topic).values())
    assert 0 < before < 100_000, "the disk did not fill up in the middle of the run"
    rerun = cli(config, "run", "events")
    assert rerun.returncode == 0, rerun.stderr
    marks = high_watermarks(kafka_bootstrap, topic, 3)
    assert sum(marks.values()) == 100_000
    assert table_offsets(target, tmp_path, "events") == expected_offsets(marks)
    assert checkpoints(target, tmp_path, "events", topic) == marks
