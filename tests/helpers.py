"""Helpers shared by test modules: pipelines files, the CLI in a subprocess, table read-back."""

from __future__ import annotations

import contextlib
import os
import subprocess
import sys
from collections.abc import Callable, Iterator, Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pyarrow as pa
import sqlalchemy as sa
import yaml
from confluent_kafka import Consumer, KafkaException, TopicPartition

from connector.formats.base import FrameDecoder
from connector.formats.json import JsonFormat
from connector.formats.text import StringFormat
from pipelines.config import Project, load_project
from sinks.factory import resolve_target


class JsonDecoder(FrameDecoder):
    """JSON values with UTF-8 keys, as ``format: json`` decodes them (``build_decoder``)."""

    def __init__(self, explicit: pa.Schema | None = None, *, include_headers: bool = False) -> None:
        super().__init__(JsonFormat(explicit), StringFormat(), include_headers=include_headers)


def write_pipelines(
    directory: Path, bootstrap: str, pipelines: Mapping[str, Mapping[str, Any]]
) -> Path:
    """Write a pipelines file and return its path; `pipelines` maps name -> definition."""
    path = directory / "pipelines.yaml"
    document = {"kafka": {"bootstrap.servers": bootstrap}, "pipelines": dict(pipelines)}
    path.write_text(yaml.safe_dump(document, sort_keys=False), encoding="utf-8")
    return path


def project_for(path: Path) -> Project:
    return load_project(path)


def cli(
    config: Path,
    *args: str,
    timeout: float = 600,
    preexec_fn: Callable[[], None] | None = None,
) -> subprocess.CompletedProcess[str]:
    """Run ``kafka-etl -c config ARGS`` in a fresh interpreter, as a user would
    (``preexec_fn``, e.g. a memory rlimit, runs in the child before it starts)."""
    return subprocess.run(
        [sys.executable, "-m", "pipelines.cli", "-c", str(config), *args],
        capture_output=True,
        text=True,
        timeout=timeout,
        check=False,
        env={**os.environ, "COLUMNS": "200"},
        preexec_fn=preexec_fn,
    )


def engine_for(target: str, base_dir: Path) -> sa.Engine:
    """A SQLAlchemy engine on a pipeline's target (DuckDB read through its own driver)."""
    url = resolve_target(target, base_dir)
    return sa.create_engine(url, poolclass=sa.pool.NullPool)


def table_offsets(target: str, base_dir: Path, table: str) -> list[tuple[int, int]]:
    """All ``(_partition, _offset)`` pairs stored in ``table``, sorted."""
    t = sa.table(table, sa.column("_partition"), sa.column("_offset"))
    query = sa.select(t.c._partition, t.c._offset).order_by(t.c._partition, t.c._offset)
    return [(int(p), int(o)) for p, o in _rows(target, base_dir, query)]


def high_watermarks(bootstrap: str, topic: str, partitions: int) -> dict[int, int]:
    consumer = Consumer({"bootstrap.servers": bootstrap, "group.id": "tests-watermarks"})
    try:
        return {
            p: consumer.get_watermark_offsets(TopicPartition(topic, p), timeout=10)[1]
            for p in range(partitions)
        }
    finally:
        consumer.close()


def expected_offsets(watermarks: Mapping[int, int]) -> list[tuple[int, int]]:
    return [(p, o) for p in sorted(watermarks) for o in range(watermarks[p])]


def events(start: int, count: int) -> list[dict[str, Any]]:
    """Small user events like the demo's (about 100 bytes each as JSON)."""
    actions = ("login", "logout", "view", "click", "purchase")
    return [
        {"user_id": i % 5000, "action": actions[i % 5], "seq": i, "amount": (i % 100) / 4}
        for i in range(start, start + count)
    ]


def fetch(
    target: str, base_dir: Path, query: str | sa.Select[Any], *, write: bool = False
) -> list[tuple[Any, ...]]:
    """Run one statement on a pipeline's target (DuckDB through its own driver)."""
    url = resolve_target(target, base_dir)
    if url.get_backend_name() == "duckdb":
        import duckdb
        from sqlalchemy.dialects import postgresql

        if not isinstance(query, str):
            # DuckDB quotes like PostgreSQL; "named" keeps a % in a name from being doubled.
            compiled = query.compile(
                dialect=postgresql.dialect(paramstyle="named"),
                compile_kwargs={"literal_binds": True},
            )
            query = str(compiled)
        con = duckdb.connect(url.database or ":memory:", read_only=not write)
        try:
            cursor = con.execute(query)
            return [] if write else [tuple(r) for r in cursor.fetchall()]
        finally:
            con.close()
    engine = sa.create_engine(url, poolclass=sa.pool.NullPool)
    try:
        with engine.begin() as conn:
            result = conn.execute(sa.text(query) if isinstance(query, str) else query)
            return [] if write else [tuple(r) for r in result]
    finally:
        engine.dispose()


def table_names(target: str, base_dir: Path) -> set[str]:
    """Tables in the target database (empty when a DuckDB file was never created)."""
    url = resolve_target(target, base_dir)
    if url.get_backend_name() == "duckdb":
        if not Path(url.database or "").exists():
            return set()
        rows = fetch(target, base_dir, "SELECT table_name FROM information_schema.tables")
        return {r[0] for r in rows}
    engine = sa.create_engine(url, poolclass=sa.pool.NullPool)
    try:
        return set(sa.inspect(engine).get_table_names())
    finally:
        engine.dispose()


def _rows(target: str, base_dir: Path, query: sa.Select[Any]) -> list[tuple[Any, ...]]:
    """Rows of ``query``; none when its table does not exist yet (a run killed that early
    committed nothing)."""
    table = next(iter(query.get_final_froms())).name  # type: ignore[attr-defined]
    if table not in table_names(target, base_dir):
        return []
    return fetch(target, base_dir, query)


def offset_stats(target: str, base_dir: Path, table: str) -> dict[int, tuple[int, int, int, int]]:
    """``partition -> (rows, distinct offsets, min offset, max offset)`` of a table."""
    t = sa.table(table, sa.column("_partition"), sa.column("_offset"))
    query = sa.select(
        t.c._partition,
        sa.func.count(),
        sa.func.count(sa.distinct(t.c._offset)),
        sa.func.min(t.c._offset),
        sa.func.max(t.c._offset),
    ).group_by(t.c._partition)
    return {
        int(r[0]): (int(r[1]), int(r[2]), int(r[3]), int(r[4]))
        for r in _rows(target, base_dir, query)
    }


def checkpoints(
    target: str, base_dir: Path, pipeline: str, topic: str, table: str | None = None
) -> dict[int, int]:
    """``partition -> next offset`` stored for a pipeline and topic: for ``table`` (its display
    name, ``schema.table``) when given, else for whichever table the pipeline loads (the
    tests that leave it out use one table per pipeline)."""
    t = sa.table(
        "_kafka_etl_checkpoints",
        sa.column("pipeline"),
        sa.column("topic"),
        sa.column("table_name"),
        sa.column("partition"),
        sa.column("next_offset"),
    )
    query = sa.select(t.c.partition, t.c.next_offset).where(
        t.c.pipeline == pipeline, t.c.topic == topic
    )
    if table is not None:
        query = query.where(t.c.table_name == table)
    return {int(p): int(o) for p, o in _rows(target, base_dir, query)}


def assert_rows_match_checkpoints(
    target: str, base_dir: Path, table: str, pipeline: str, topic: str
) -> dict[int, int]:
    """Every partition holds exactly offsets ``[0, checkpoint)``, each once (a prefix of the
    log with no gap and no duplicate): what a crash at any moment must leave behind."""
    cps = checkpoints(target, base_dir, pipeline, topic)
    stats = offset_stats(target, base_dir, table) if cps else {}
    for p, next_offset in cps.items():
        rows, distinct, low, high = stats.get(p, (0, 0, 0, -1))
        assert rows == distinct, f"partition {p}: {rows - distinct} duplicate offsets"
        if next_offset == 0:
            assert rows == 0, f"partition {p}: rows beyond checkpoint 0"
            continue
        assert (rows, low, high) == (next_offset, 0, next_offset - 1), (
            f"partition {p}: rows cover [{low}, {high}] ({rows} rows) but checkpoint is"
            f" {next_offset}"
        )
    assert set(stats) <= set(cps), (
        f"rows for partitions without checkpoint: {set(stats) - set(cps)}"
    )
    return cps


@contextlib.contextmanager
def group_position(
    bootstrap: str, group: str, topic: str, partitions: int
) -> Iterator[Callable[[], int]]:
    """A function returning the sum of a consumer group's committed offsets on ``topic``.

    The runner commits the group after each database commit, so this grows with a run's
    progress and can be read while the run holds its database (a DuckDB file) to itself."""
    consumer = Consumer({"bootstrap.servers": bootstrap, "group.id": group})
    wanted = [TopicPartition(topic, p) for p in range(partitions)]

    last = [0]

    def position() -> int:
        try:
            found = consumer.committed(wanted, timeout=10)
        except KafkaException:  # the group's coordinator may still be loading: ask again later
            return last[0]
        last[0] = sum(tp.offset for tp in found if tp.offset >= 0)
        return last[0]

    try:
        yield position
    finally:
        consumer.close()


@dataclass
class KillTally:
    """What a ``kill_loop`` did: runs killed before they ended, of which ``after_commit``
    had been seen committing batches; runs that ended by themselves."""

    killed: int = 0
    after_commit: int = 0
    finished: int = 0


def kill_loop(
    config: Path,
    pipeline: str,
    *,
    iterations: int,
    before_each: Callable[[int], None],
    check: Callable[[], None],
    progress: Callable[[], int],
    seed: int = 7,
) -> KillTally:
    """Start ``kafka-etl run`` in a subprocess and SIGKILL it at a random moment, repeatedly.

    The moments follow the run's observed progress (``progress()``, e.g. ``group_position``),
    never a fixed clock, so the loop means the same on a fast idle machine and a slow busy
    one. Even iterations kill at any moment of start-up (up to the time the last runs took to
    commit their first batch): table creation, planning, the first transaction. Odd ones wait
    until the run has committed two batches, measure the time between them, and kill within
    one more such interval: inside a later batch's read, write or commit. ``before_each(i)``
    adds backlog; it must leave more than a few batches to load. ``check()`` runs after
    every kill.
    """
    import random
    import signal
    import time

    rng = random.Random(seed)
    tally = KillTally()
    first_commit = 3.0  # seconds from spawn to the first observed commit; measured below

    def wait_for_more(proc: subprocess.Popen[str], than: int, deadline: float) -> int:
        while proc.poll() is None and time.monotonic() < deadline:
            now = progress()
            if now > than:
                return now
            time.sleep(0.01)
        return than

    for i in range(iterations):
        before_each(i)
        base = progress()
        spawned = time.monotonic()
        proc = subprocess.Popen(
            [sys.executable, "-m", "pipelines.cli", "-c", str(config), "run", pipeline],
            stdout=subprocess.DEVNULL,
            stderr=subprocess.PIPE,
            text=True,
        )
        committed = False
        if i % 2 == 0:
            time.sleep(rng.uniform(0.0, first_commit))
        else:
            deadline = spawned + 120
            once = wait_for_more(proc, base, deadline)
            seen_once = time.monotonic()
            if once > base:
                first_commit = seen_once - spawned
                twice = wait_for_more(proc, once, deadline)
                if twice > once:
                    committed = True
                    time.sleep(rng.uniform(0.0, time.monotonic() - seen_once))
        if proc.poll() is None:
            proc.send_signal(signal.SIGKILL)
            tally.killed += 1
            tally.after_commit += committed
        else:
            assert proc.returncode == 0, proc.stderr.read() if proc.stderr else ""
            tally.finished += 1
        proc.wait(timeout=60)
        if proc.stderr:
            proc.stderr.close()
        check()
    return tally
