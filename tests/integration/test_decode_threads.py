"""``decode_threads``: batches decoded on several threads still load in read order, exactly once.

Small batches and three decoding threads, so many batches are decoding at once while the writer
commits the ones before: the table, the checkpoints and the failures must be those of a run that
decodes one batch after the other.
"""

from __future__ import annotations

import threading
from pathlib import Path

import pytest

from kafka_etl.errors import RecordError, TerminalError
from pipelines.runner import Progress, run_pipeline
from tests.fixtures.kafka import Produce, TopicFactory
from tests.helpers import checkpoints, cli, events, fetch, project_for, write_pipelines

TARGET = "duckdb:///warehouse.duckdb"
BATCH = 50


def _config(tmp_path: Path, bootstrap: str, topic: str, **extra: object) -> Path:
    body = {
        "topic": topic,
        "target": TARGET,
        "table": "events",
        "batch_max_rows": BATCH,
        "decode_threads": 3,
        **extra,
    }
    return write_pipelines(tmp_path, bootstrap, {"events": body})


def _offsets_as_inserted(tmp_path: Path) -> list[int]:
    """The table's offsets in the order their rows were inserted (DuckDB's rowid)."""
    return [int(o) for (o,) in fetch(TARGET, tmp_path, "SELECT _offset FROM events ORDER BY rowid")]


def _decode_threads() -> list[str]:
    return [t.name for t in threading.enumerate() if t.name.startswith("kafka-etl-decode")]


def test_every_offset_loads_once_in_read_order(
    tmp_path: Path, kafka_bootstrap: str, topic_factory: TopicFactory, produce: Produce
) -> None:
    topic = topic_factory(1)
    produce(topic, events(0, 2_000), partition=0)
    seen: list[Progress] = []
    result = run_pipeline(
        project_for(_config(tmp_path, kafka_bootstrap, topic)), "events", on_progress=seen.append
    )
    assert (result.rows, result.batches) == (2_000, 2_000 // BATCH)
    assert _offsets_as_inserted(tmp_path) == list(range(2_000))
    assert [p.offsets_done for p in seen] == list(range(BATCH, 2_001, BATCH))
    assert checkpoints(TARGET, tmp_path, "events", topic) == {0: 2_000}
    assert not _decode_threads(), "decoding threads outlived the run"


def test_a_bad_message_in_a_later_batch_fails_at_its_offset_with_nothing_after_it_committed(
    tmp_path: Path, kafka_bootstrap: str, topic_factory: TopicFactory, produce: Produce
) -> None:
    topic = topic_factory(1)
    # Offset 437 is in the 9th batch, [400, 450); the batches after it decode meanwhile.
    produce(topic, [*events(0, 437), b'{"user_id": 1, "action": ', *events(438, 600)], partition=0)
    config = _config(tmp_path, kafka_bootstrap, topic)
    with pytest.raises(RecordError) as caught:
        run_pipeline(project_for(config), "events")
    assert (caught.value.topic, caught.value.partition, caught.value.offset) == (topic, 0, 437)
    assert checkpoints(TARGET, tmp_path, "events", topic) == {0: 400}
    assert _offsets_as_inserted(tmp_path) == list(range(400))
    assert not _decode_threads(), "decoding threads outlived the failed run"

    again = cli(config, "run", "events")  # the same one-line message as with one thread
    assert again.returncode == 1
    assert again.stderr.strip() == f"kafka-etl: error: {caught.value}"
    assert checkpoints(TARGET, tmp_path, "events", topic) == {0: 400}


def test_the_error_budget_is_charged_in_read_order(
    tmp_path: Path, kafka_bootstrap: str, topic_factory: TopicFactory, produce: Produce
) -> None:
    """One bad message per batch is exactly the budget (2% over at least 100): the run fails at
    the 11th batch, with three, whatever order the batches finished decoding in."""
    topic = topic_factory(1)
    bad = {BATCH * b + 10 for b in range(10)} | {510, 520, 530}
    values = [b"not json" if i in bad else good for i, good in enumerate(events(0, 1_000))]
    produce(topic, values, partition=0)
    config = _config(
        tmp_path,
        kafka_bootstrap,
        topic,
        on_error="dlq",
        max_error_ratio=0.02,
        min_messages_for_ratio=100,
    )
    with pytest.raises(TerminalError, match=rf"13 of the 550 messages .* {topic}/0@510: "):
        run_pipeline(project_for(config), "events")
    assert checkpoints(TARGET, tmp_path, "events", topic) == {0: 500}
    assert len(_offsets_as_inserted(tmp_path)) == 490
    dead = [int(o) for (o,) in fetch(TARGET, tmp_path, "SELECT _offset FROM events__dlq")]
    assert sorted(dead) == sorted(bad - {510, 520, 530})
