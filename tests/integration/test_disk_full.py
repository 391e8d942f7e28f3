"""A target whose disk fills up mid-run: one line, exit 75 (free space, run again), and the run
after space is freed loads exactly once. The disk is a small tmpfs, grown by a remount."""

from __future__ import annotations

import subprocess
from collections.abc import Callable, Iterator
from pathlib import Path

import pytest

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
    lines = full.stderr.strip().splitlines()
    assert lines == [
        f"kafka-etl: error: duckdb {disk}/warehouse.duckdb: no space left on device;"
        " nothing from this batch was committed"
    ], full.stderr

    resize("256m")
    before = sum(checkpoints(target, tmp_path, "events", topic).values())
    assert 0 < before < 200_000, "the disk did not fill up in the middle of the run"
    rerun = cli(config, "run", "events")
    assert rerun.returncode == 0, rerun.stderr
    marks = high_watermarks(kafka_bootstrap, topic, 3)
    assert sum(marks.values()) == 200_000
    assert table_offsets(target, tmp_path, "events") == expected_offsets(marks)
    assert checkpoints(target, tmp_path, "events", topic) == marks
