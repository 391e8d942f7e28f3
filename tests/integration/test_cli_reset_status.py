"""`kafka-etl reset` per partition (skipping a poison message), its dry run and confirmation;
`status` over healthy and broken pipelines, as text and JSON; the notice of a DuckDB wait."""

from __future__ import annotations

import json
import os
import pty
import subprocess
import sys
import time
from pathlib import Path

import duckdb
from confluent_kafka import TopicPartition
from confluent_kafka.admin import AdminClient

from tests.fixtures.databases import sinks
from tests.fixtures.kafka import Produce, TopicFactory
from tests.helpers import checkpoints, cli, events, table_offsets, write_pipelines

TARGET = "duckdb:///warehouse.duckdb"


def test_reset_one_partition_past_a_poison_message_then_backfill_the_rest(
    tmp_path: Path, kafka_bootstrap: str, topic_factory: TopicFactory, produce: Produce
) -> None:
    topic = topic_factory(2)
    produce(topic, events(0, 40), partition=0)
    produce(topic, [b"{not json"], partition=0)  # offset 40
    produce(topic, events(40, 19), partition=0)  # offsets 41..59
    produce(topic, events(100, 30), partition=1)
    config = write_pipelines(
        tmp_path,
        kafka_bootstrap,
        {"ev": {"topic": topic, "target": TARGET, "table": "ev", "batch_max_rows": 7}},
    )
    failed = cli(config, "run", "ev")
    assert failed.returncode == 1, failed.stderr
    assert f"{topic}/0@40" in failed.stderr
    stuck = checkpoints(TARGET, tmp_path, "ev", topic).get(0, 0)
    assert stuck <= 40

    dry = cli(config, "reset", "ev", "--partition", "0", "--to-offset", "41", "--dry-run")
    assert dry.returncode == 0, dry.stderr
    assert f"partition 0: {stuck} -> 41, 0 rows to delete" in dry.stdout, dry.stdout
    assert "partition 1" not in dry.stdout
    assert checkpoints(TARGET, tmp_path, "ev", topic).get(0, 0) == stuck  # a dry run

    skip = cli(config, "reset", "ev", "--partition", "0", "--to-offset", "41")
    assert skip.returncode == 0, skip.stderr  # deletes nothing: no --yes needed
    assert "checkpoints set to 0@41; 0 rows deleted" in skip.stdout, skip.stdout
    rest = cli(config, "run", "ev")
    assert rest.returncode == 0, rest.stderr
    skipped = set(range(stuck, 41))
    loaded = table_offsets(TARGET, tmp_path, "ev")
    assert [o for p, o in loaded if p == 0] == [o for o in range(60) if o not in skipped]
    assert [o for p, o in loaded if p == 1] == list(range(30))

    # The good messages the move skipped, below the poison one, are loaded by a backfill.
    if stuck < 40:
        back = cli(
            config, "backfill", "ev", "--partition", "0", "--from-offset", str(stuck),
            "--to-offset", "40",
        )  # fmt: skip
        assert back.returncode == 0, back.stderr
    loaded = table_offsets(TARGET, tmp_path, "ev")
    assert [o for p, o in loaded if p == 0] == [o for o in range(60) if o != 40]


def test_a_reset_that_deletes_rows_is_shown_asked_and_refused_without_yes(
    tmp_path: Path, kafka_bootstrap: str, topic_factory: TopicFactory, produce: Produce
) -> None:
    topic = topic_factory(2)
    produce(topic, events(0, 300), partition=0)
    produce(topic, events(300, 300), partition=1)
    config = write_pipelines(
        tmp_path, kafka_bootstrap, {"ev": {"topic": topic, "target": TARGET, "table": "ev"}}
    )
    assert cli(config, "run", "ev").returncode == 0

    dry = cli(config, "reset", "ev", "--to", "earliest", "--dry-run")
    assert dry.returncode == 0, dry.stderr
    assert "partition 0: 300 -> 0, 300 rows to delete" in dry.stdout, dry.stdout
    assert "partition 1: 300 -> 0, 300 rows to delete" in dry.stdout, dry.stdout
    assert "600 rows would be deleted" in dry.stdout

    refused = cli(config, "reset", "ev", "--to", "earliest")  # stdin is not a terminal
    assert refused.returncode == 1
    assert refused.stderr.strip().splitlines() == [
        "kafka-etl: error: reset ev: would delete 600 rows from ev; refused without --yes"
        " (see them with --dry-run)"
    ]
    assert len(table_offsets(TARGET, tmp_path, "ev")) == 600

    declined = _on_a_terminal(config, "n", "reset", "ev", "--partition", "1", "--to-offset", "100")
    assert declined.returncode == 1, declined.stderr
    assert "delete 200 rows from ev" in declined.stderr and "not confirmed" in declined.stderr
    assert len(table_offsets(TARGET, tmp_path, "ev")) == 600

    agreed = _on_a_terminal(config, "y", "reset", "ev", "--partition", "1", "--to-offset", "100")
    assert agreed.returncode == 0, agreed.stderr
    assert "checkpoints set to 1@100; 200 rows deleted" in agreed.stdout
    assert checkpoints(TARGET, tmp_path, "ev", topic) == {0: 300, 1: 100}

    forced = cli(config, "reset", "ev", "--to", "earliest", "--yes")
    assert forced.returncode == 0, forced.stderr
    assert "400 rows deleted" in forced.stdout
    assert cli(config, "run", "ev").returncode == 0
    assert len(table_offsets(TARGET, tmp_path, "ev")) == 600

    admin = AdminClient({"bootstrap.servers": kafka_bootstrap})
    for future in admin.delete_records([TopicPartition(topic, 0, 120)]).values():
        future.result(timeout=30)  # retention, as it were: partition 0 now starts at 120
    for args, says in [
        (("--partition", "0", "--to-offset", "50"), f"{topic}/0: offset 50 is below the log start"),
        (("--partition", "1", "--to-offset", "301"), f"{topic}/1: offset 301 is beyond the end"),
        (("--partition", "2", "--to-offset", "0"), f"topic '{topic}' has no partition 2"),
    ]:
        out_of_range = cli(config, "reset", "ev", *args, "--yes")
        assert out_of_range.returncode == 1, out_of_range.stderr
        assert out_of_range.stderr.count("\n") == 1 and says in out_of_range.stderr, args
    assert checkpoints(TARGET, tmp_path, "ev", topic) == {0: 300, 1: 300}


def _on_a_terminal(config: Path, answer: str, *args: str) -> subprocess.CompletedProcess[str]:
    """Run the CLI with a pseudo-terminal as stdin and type ``answer`` at its question."""
    controller, terminal = pty.openpty()
    try:
        proc = subprocess.Popen(
            [sys.executable, "-m", "pipelines.cli", "-c", str(config), *args],
            stdin=terminal,
            stdout=subprocess.PIPE,
            stderr=subprocess.PIPE,
            text=True,
        )
        os.write(controller, f"{answer}\n".encode())
        stdout, stderr = proc.communicate(timeout=120)
    finally:
        os.close(controller)
        os.close(terminal)
    return subprocess.CompletedProcess(proc.args, proc.returncode, stdout, stderr)


def test_status_shows_the_healthy_and_one_line_per_broken_pipeline(
    tmp_path: Path, kafka_bootstrap: str, topic_factory: TopicFactory, produce: Produce
) -> None:
    healthy, doomed = topic_factory(2), topic_factory(1)
    produce(healthy, events(0, 50), partition=0)
    produce(doomed, events(0, 5))
    config = write_pipelines(
        tmp_path,
        kafka_bootstrap,
        {
            "a_ok": {"topic": healthy, "target": TARGET, "table": "a"},
            "b_gone": {"topic": doomed, "target": TARGET, "table": "b"},
            "c_ok": {"topic": healthy, "target": "duckdb:///other.duckdb", "table": "c"},
        },
    )
    assert cli(config, "run", "a_ok").returncode == 0
    produce(healthy, events(50, 7), partition=1)
    admin = AdminClient({"bootstrap.servers": kafka_bootstrap})
    admin.delete_topics([doomed], operation_timeout=30)[doomed].result(timeout=60)
    _wait_until_gone(admin, doomed)

    text = cli(config, "status")
    assert text.returncode == 1, text.stderr
    errors = text.stderr.strip().splitlines()
    assert len(errors) == 1, text.stderr
    assert errors[0].startswith(f"kafka-etl: error: status b_gone: topic '{doomed}'"), errors
    assert "a_ok" in text.stdout and "c_ok" in text.stdout and "Traceback" not in text.stdout

    as_json = cli(config, "status", "--json")
    assert as_json.returncode == 1
    assert len(as_json.stderr.strip().splitlines()) == 1, as_json.stderr
    report = {p["pipeline"]: p for p in json.loads(as_json.stdout)}
    assert list(report) == ["a_ok", "b_gone", "c_ok"]
    assert report["a_ok"]["error"] is None and report["a_ok"]["lag"] == 7
    assert report["a_ok"]["shards"] == 1  # unsharded: every partition in shard 0
    assert report["a_ok"]["partitions"] == [
        {"partition": 0, "shard": 0, "checkpoint": 50, "log_start": 0, "high_watermark": 50,
         "lag": 0},
        {"partition": 1, "shard": 0, "checkpoint": 0, "log_start": 0, "high_watermark": 7,
         "lag": 7},
    ]  # fmt: skip
    assert report["c_ok"]["lag"] == 57 and report["c_ok"]["partitions"][0]["checkpoint"] is None
    assert f"topic '{doomed}'" in report["b_gone"]["error"]
    assert report["b_gone"]["partitions"] == [] and report["b_gone"]["lag"] is None

    one = cli(config, "status", "a_ok", "--json")
    assert one.returncode == 0 and one.stderr == "", one.stderr
    assert [p["pipeline"] for p in json.loads(one.stdout)] == ["a_ok"]


def _wait_until_gone(admin: AdminClient, topic: str) -> None:
    deadline = time.monotonic() + 30
    while topic in admin.list_topics(timeout=10).topics and time.monotonic() < deadline:
        time.sleep(0.2)


def test_waiting_for_a_locked_duckdb_file_says_who_holds_it_once(
    tmp_path: Path, kafka_bootstrap: str, topic_factory: TopicFactory, produce: Produce
) -> None:
    topic = topic_factory(1)
    produce(topic, events(0, 10))
    config = write_pipelines(
        tmp_path,
        kafka_bootstrap,
        {"ev": {"topic": topic, "target": TARGET, "table": "ev", "lock_timeout": 3}},
    )
    holder = duckdb.connect(str(tmp_path / "warehouse.duckdb"))  # this process holds the lock
    try:
        started = time.monotonic()
        result = cli(config, "run", "ev")
        took = time.monotonic() - started
    finally:
        holder.close()
    assert result.returncode == 75, result.stderr
    assert took < 30
    lines = result.stderr.strip().splitlines()
    assert len(lines) == 2, result.stderr
    path = tmp_path / "warehouse.duckdb"
    assert lines[0].startswith(f"kafka-etl: duckdb {path} is locked by process {os.getpid()} ")
    assert lines[0].endswith("waiting up to 3s (lock_timeout)"), lines[0]
    assert lines[1].startswith(f"kafka-etl: error: duckdb {path}: "), lines[1]
    assert cli(config, "run", "ev").returncode == 0


@sinks("duckdb", "postgresql", "mariadb", "sqlite")
def test_a_dry_run_counts_in_a_transaction_it_rolls_back(
    sink_url: str,
    tmp_path: Path,
    kafka_bootstrap: str,
    topic_factory: TopicFactory,
    produce: Produce,
) -> None:
    topic = topic_factory(2)
    produce(topic, events(0, 40), partition=0)
    produce(topic, events(40, 10), partition=1)
    config = write_pipelines(
        tmp_path, kafka_bootstrap, {"ev": {"topic": topic, "target": sink_url, "table": "ev"}}
    )
    assert cli(config, "run", "ev").returncode == 0

    dry = cli(config, "reset", "ev", "--to", "earliest", "--dry-run")
    assert dry.returncode == 0, dry.stderr
    assert "partition 0: 40 -> 0, 40 rows to delete" in dry.stdout, dry.stdout
    assert "partition 1: 10 -> 0, 10 rows to delete" in dry.stdout, dry.stdout
    assert checkpoints(sink_url, tmp_path, "ev", topic) == {0: 40, 1: 10}
    assert len(table_offsets(sink_url, tmp_path, "ev")) == 50

    moved = cli(config, "reset", "ev", "--partition", "0", "--to-offset", "30", "--yes")
    assert moved.returncode == 0, moved.stderr
    assert "checkpoints set to 0@30; 10 rows deleted" in moved.stdout
    assert checkpoints(sink_url, tmp_path, "ev", topic) == {0: 30, 1: 10}
    assert cli(config, "run", "ev").returncode == 0
    assert len(table_offsets(sink_url, tmp_path, "ev")) == 50
