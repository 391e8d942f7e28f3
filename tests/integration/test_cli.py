"""The `kafka-etl` commands end to end, as a user runs them, against the real broker."""

from __future__ import annotations

import json
from pathlib import Path

from tests.fixtures.kafka import Produce, TopicFactory
from tests.helpers import checkpoints, cli, events, table_offsets, write_pipelines

TARGET = "duckdb:///warehouse.duckdb"


def test_run_status_reset_and_backfill(
    tmp_path: Path, kafka_bootstrap: str, topic_factory: TopicFactory, produce: Produce
) -> None:
    topic = topic_factory(2)
    produce(topic, events(0, 600), keys=[str(i % 2) for i in range(600)])
    config = write_pipelines(
        tmp_path, kafka_bootstrap, {"ev": {"topic": topic, "target": TARGET, "table": "ev"}}
    )

    first = cli(config, "run", "ev", "--json")
    assert first.returncode == 0, first.stderr
    summary = json.loads(first.stdout)
    assert summary["rows"] == 600
    assert sum(b - a for a, b in summary["ranges"].values()) == 600
    assert summary["lag_after"] == {"0": 0, "1": 0}

    human = cli(config, "run", "ev")
    assert human.returncode == 0
    assert "ev: 0 rows into ev" in human.stdout and "nothing new" in human.stdout

    produce(topic, events(600, 10), partition=1)
    status = cli(config, "status")
    assert status.returncode == 0, status.stderr
    total_line = [line for line in status.stdout.splitlines() if "total" in line]
    assert total_line and total_line[0].rstrip(" │|").endswith("10"), status.stdout

    reset = cli(config, "reset", "ev", "--to", "earliest", "--yes")
    assert reset.returncode == 0, reset.stderr
    assert "600 rows deleted" in reset.stdout
    assert checkpoints(TARGET, tmp_path, "ev", topic) == {0: 0, 1: 0}
    assert cli(config, "run", "ev").returncode == 0
    assert len(table_offsets(TARGET, tmp_path, "ev")) == 610

    replay = cli(
        config,
        "backfill",
        "ev",
        "--partition",
        "1",
        "--from-offset",
        "5",
        "--to-offset",
        "50",
        "--json",
    )
    assert replay.returncode == 0, replay.stderr
    assert json.loads(replay.stdout)["rows"] == 45
    assert len(table_offsets(TARGET, tmp_path, "ev")) == 610
    marks = checkpoints(TARGET, tmp_path, "ev", topic)
    assert sum(marks.values()) == 610  # a replay never moves the checkpoint

    by_time = cli(
        config, "backfill", "ev", "--from", "2000-01-01T00:00Z", "--to", "2100-01-01T00:00Z"
    )
    assert by_time.returncode == 0, by_time.stderr
    assert "replayed 610 rows" in by_time.stdout
    assert len(table_offsets(TARGET, tmp_path, "ev")) == 610


def test_bad_arguments_are_one_line_errors(tmp_path: Path, kafka_bootstrap: str) -> None:
    config = write_pipelines(
        tmp_path, kafka_bootstrap, {"ev": {"topic": "absent", "target": TARGET, "table": "ev"}}
    )
    for args, code, message in [
        (("reset", "ev", "--to", "yesterday"), 2, "expected earliest, latest or an ISO-8601"),
        (("reset", "ev", "--to", "2026-11-01T00:00"), 2, "give a time zone"),
        (("backfill", "ev", "--partition", "0"), 2, "--partition needs --from-offset"),
        (("run", "ev"), 1, "topic 'absent' is not available"),
    ]:
        result = cli(config, *args)
        assert result.returncode == code, (args, result.stderr)
        lines = result.stderr.strip().splitlines()
        assert len(lines) == (2 if code == 2 else 1), result.stderr
        assert message in lines[0], result.stderr
