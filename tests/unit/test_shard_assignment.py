"""Shards: the assignment rule, ``K/N`` parsing, ``shards: N`` in the file, and the CLI's
usage errors (no broker needed: they are refused before anything connects)."""

from __future__ import annotations

from pathlib import Path

import pytest

from connector.batch import Gap
from connector.client import ReadPlan
from kafka_etl.errors import ConfigError
from pipelines.cli import main
from pipelines.config import load_project
from pipelines.shards import Shard, ShardError, check_shard, parse_shard, shard_of, shard_plan


def write(tmp_path: Path, shards: str = "") -> Path:
    path = tmp_path / "pipelines.yaml"
    path.write_text(
        "kafka: {bootstrap.servers: '127.0.0.1:1'}\n"
        "pipelines:\n"
        "  ev:\n"
        "    topic: ev\n"
        "    target: duckdb:///w.duckdb\n"
        "    table: ev\n" + (f"    shards: {shards}\n" if shards else ""),
        encoding="utf-8",
    )
    return path


def test_every_partition_belongs_to_exactly_one_shard_and_never_moves_as_partitions_grow() -> None:
    for count in (1, 2, 3, 4, 7):
        shards = [Shard(k, count) for k in range(count)]
        for p in range(100):
            owners = [s.index for s in shards if s.owns(p)]
            assert owners == [p % count] == [shard_of(p, count)]
        # Adding partitions 100..199 leaves the owners of 0..99 as they were.
        before = {s.index: s.select(range(100)) for s in shards}
        after = {s.index: [p for p in s.select(range(200)) if p < 100] for s in shards}
        assert before == after


def test_shards_parse_as_k_of_n_numbered_from_zero() -> None:
    assert parse_shard("0/4") == Shard(0, 4)
    assert parse_shard(" 3 / 4 ") == Shard(3, 4)
    assert str(Shard(3, 4)) == "3/4"
    for bad, message in [
        ("3/2", "numbered 0 to 1"),
        ("4/4", "numbered 0 to 3"),
        ("0/0", "at least 1"),
        ("-1/2", "is not K/N"),
        ("1", "is not K/N"),
        ("a/b", "is not K/N"),
        ("", "is not K/N"),
    ]:
        with pytest.raises(ShardError, match=message):
            parse_shard(bad)


def test_a_shard_of_another_split_than_the_declared_one_is_refused() -> None:
    check_shard(Shard(1, 3), None, "ev")
    check_shard(Shard(1, 3), 3, "ev")
    with pytest.raises(ShardError, match=r"has shards: 4, so its shards are 0/4 to 3/4, not 1/3"):
        check_shard(Shard(1, 3), 4, "ev")


def test_shards_in_the_file(tmp_path: Path) -> None:
    default = load_project(write(tmp_path)).pipeline("ev")
    assert (default.shards, default.declared_shards) == (1, None)
    declared = load_project(write(tmp_path, "4")).pipeline("ev")
    assert (declared.shards, declared.declared_shards) == (4, 4)
    for bad in ("0", "-2", "two", "1.5"):
        with pytest.raises(ConfigError) as caught:
            load_project(write(tmp_path, bad))
        assert "pipeline 'ev', field 'shards'" in str(caught.value), str(caught.value)
        assert "\n" not in str(caught.value)


def test_a_plan_restricted_to_a_shard_keeps_only_its_partitions() -> None:
    plan = ReadPlan(
        "ev",
        start={p: 10 * p for p in range(5)},
        end={p: 10 * p + 5 for p in range(5)},
        unrecorded=frozenset({3, 4}),
        gaps=(
            Gap(partition=1, expected=0, log_start=10),
            Gap(partition=2, expected=0, log_start=20),
        ),
        base={1: 0, 2: 0},
    )
    odd = shard_plan(plan, Shard(1, 2))
    assert (odd.start, odd.end) == ({1: 10, 3: 30}, {1: 15, 3: 35})
    assert odd.unrecorded == frozenset({3})
    assert [g.partition for g in odd.gaps] == [1]
    assert odd.base == {1: 0}
    assert odd.total_lag == 10


@pytest.mark.parametrize(
    ("shards", "args", "message"),
    [
        ("", ("run", "ev", "--shard", "3/2"), "shards are numbered 0 to 1"),
        ("", ("run", "ev", "--shard", "x"), "'x' is not K/N"),
        ("4", ("run", "ev", "--shard", "1/2"), "has shards: 4, so its shards are 0/4 to 3/4"),
        ("4", ("backfill", "ev", "--shard", "0/3", "--from", "2026-01-01T00:00Z", "--to",
               "2026-01-02T00:00Z"), "has shards: 4"),
        ("2", ("backfill", "ev", "--shard", "0/2", "--partition", "3", "--from-offset", "0",
               "--to-offset", "5"), "partition 3 belongs to shard 1/2, not to shard 0/2"),
    ],
)  # fmt: skip
def test_bad_shards_are_usage_errors_in_one_line(
    tmp_path: Path,
    capsys: pytest.CaptureFixture[str],
    shards: str,
    args: tuple[str, ...],
    message: str,
) -> None:
    config = write(tmp_path, shards)
    assert main(["-c", str(config), *args]) == 2
    lines = capsys.readouterr().err.strip().splitlines()
    assert len(lines) == 2, lines  # the error, then "Try '... --help'."
    assert "--shard" in lines[0] and message in lines[0], lines
    assert lines[1].startswith("Try 'kafka-etl ")
