"""A replay never brings a deleted row back: every applied tombstone leaves a delete marker in
the same transaction (``sinks.delete_markers``), and an older message for that key is refused
like an older update. Hand-made batches on every database, then the runner against Kafka."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import numpy as np
import pytest

from connector.batch import Batch, OffsetRange
from connector.formats.base import FrameDecoder
from connector.formats.json import JsonFormat
from connector.formats.text import BytesFormat
from connector.reader import RawBatch
from kafka_etl.errors import KafkaEtlError
from pipelines.runner import replay_pipeline, reset_pipeline, run_pipeline
from tests.fixtures.kafka import Produce, TopicFactory
from tests.helpers import fetch, project_for, write_pipelines
from tests.integration.test_sinks_guards import T0, TOPIC, batch, rows, sink

UPSERT = {"table": "orders", "mode": "upsert", "key": ("id",), "delete_on_tombstone": True}
MARKERS = "SELECT _key, _partition, _offset FROM orders__deleted ORDER BY _key"

# (Kafka key, value, partition, offset, timestamp): three keys created, updated twice and
# deleted; one never deleted; one deleted and created again.
HISTORY: list[tuple[str, dict[str, Any] | None, int, int, int]] = [
    ("a", {"id": 1, "v": "a0"}, 0, 0, T0),
    ("b", {"id": 2, "v": "b0"}, 0, 1, T0 + 1),
    ("d", {"id": 4, "v": "d0"}, 0, 2, T0 + 2),
    ("e", {"id": 5, "v": "e0"}, 0, 3, T0 + 3),
    ("a", {"id": 1, "v": "a1"}, 0, 4, T0 + 4),
    ("b", {"id": 2, "v": "b1"}, 0, 5, T0 + 5),
    ("c", {"id": 3, "v": "c0"}, 0, 6, T0 + 6),
    ("a", {"id": 1, "v": "a2"}, 0, 7, T0 + 7),
    ("b", {"id": 2, "v": "b2"}, 0, 8, T0 + 8),
    ("c", {"id": 3, "v": "c1"}, 0, 9, T0 + 9),
    ("e", None, 0, 10, T0 + 10),
    ("c", {"id": 3, "v": "c2"}, 0, 11, T0 + 11),
    ("d", {"id": 4, "v": "d1"}, 0, 12, T0 + 12),
    ("a", None, 0, 13, T0 + 13),
    ("b", None, 0, 14, T0 + 14),
    ("c", None, 0, 15, T0 + 15),
    ("e", {"id": 5, "v": "e1"}, 0, 16, T0 + 16),
]
FINAL = [(4, "d1"), (5, "e1")]
FINAL_MARKERS = [("a", 0, 13), ("b", 0, 14), ("c", 0, 15), ("e", 0, 10)]
STATE = "SELECT id, v FROM orders ORDER BY id"


def in_batches(messages: list[Any], size: int) -> list[Any]:
    return [batch(messages[i : i + size]) for i in range(0, len(messages), size)]


def test_a_replay_that_ends_before_the_delete_keeps_the_rows_deleted(
    sink_url: str, tmp_path: Path
) -> None:
    with sink(sink_url, tmp_path, **UPSERT) as s:
        for b in in_batches(HISTORY, 5):
            s.write(b)
        assert rows(sink_url, STATE) == FINAL
        assert rows(sink_url, MARKERS) == FINAL_MARKERS
        # Offsets 0..12: every key's older updates (and e's delete), none of a, b, c's deletes.
        replayed = s.write(batch(HISTORY[:13]), replay=True)
        assert replayed.rows_written == 4  # a, b, c refused, counted like older updates
        assert rows(sink_url, STATE) == FINAL
        # A range holding the deletes writes the same markers again, outside it none change.
        s.write(batch(HISTORY[10:16]), replay=True)
        assert rows(sink_url, STATE) == FINAL
        assert rows(sink_url, MARKERS) == FINAL_MARKERS
        assert s.read_checkpoints() == {0: 17}


def test_a_marker_moves_only_to_a_newer_delete_and_guards_like_a_stored_row(
    sink_url: str, tmp_path: Path
) -> None:
    with sink(sink_url, tmp_path, **UPSERT) as s:
        s.write(batch([("k", {"id": 1, "v": "x"}, 0, 0, T0)]))
        s.write(batch([("k", None, 0, 1, T0 + 10)]))
        s.write(batch([("k", None, 0, 2, T0 + 20)]))
        s.write(batch([("k", None, 0, 1, T0 + 10)]), replay=True)  # an older delete again
        assert rows(sink_url, MARKERS) == [("k", 0, 2)]
        # Another partition: by timestamp; a tie goes to the marker, as to a stored row.
        s.write(batch([("k", {"id": 1, "v": "older"}, 1, 0, T0 + 19)]))
        s.write(batch([("k", {"id": 1, "v": "tie"}, 1, 1, T0 + 20)]))
        assert rows(sink_url, STATE) == []
        s.write(batch([("k", {"id": 1, "v": "later"}, 1, 2, T0 + 21)]))
        assert rows(sink_url, STATE) == [(1, "later")]


def test_a_key_created_again_after_its_delete_appears_and_stays_under_replays(
    sink_url: str, tmp_path: Path
) -> None:
    with sink(sink_url, tmp_path, **UPSERT) as s:
        for b in in_batches(HISTORY[:11], 4):  # up to e's delete at offset 10
            s.write(b)
        assert (5, "e0") not in rows(sink_url, STATE)
        s.write(batch(HISTORY[11:]))  # ... and e created again at offset 16
        assert rows(sink_url, STATE) == FINAL
        s.write(batch(HISTORY[:10]), replay=True)  # before e's delete
        s.write(batch(HISTORY[10:11]), replay=True)  # e's delete itself: older than e1
        assert rows(sink_url, STATE) == FINAL
        assert rows(sink_url, MARKERS) == FINAL_MARKERS


def test_reset_deletes_the_markers_at_or_after_its_offsets_and_a_reload_restores_them(
    sink_url: str, tmp_path: Path
) -> None:
    with sink(sink_url, tmp_path, **UPSERT) as s:
        for b in in_batches(HISTORY, 6):
            s.write(b)
        assert s.reset({0: 14}) == 0  # upsert rows stay
        assert rows(sink_url, MARKERS) == [("a", 0, 13), ("e", 0, 10)]
        assert s.reset({0: 0}) == 0
        assert rows(sink_url, MARKERS) == []
        for b in in_batches(HISTORY, 6):
            s.write(b)
        assert rows(sink_url, STATE) == FINAL
        assert rows(sink_url, MARKERS) == FINAL_MARKERS
        assert s.read_checkpoints() == {0: 17}


def test_a_failed_batch_leaves_neither_its_deletes_nor_its_markers(
    sink_url: str, tmp_path: Path
) -> None:
    with sink(sink_url, tmp_path, **UPSERT) as s:
        s.write(batch(HISTORY[:10]))
        before = rows(sink_url, STATE)
        # A marker table that refuses every marker (a NOT NULL column without a default):
        # the batch fails when it writes them, after its tombstones deleted their rows.
        stamp = "TIMESTAMP" if sink_url.startswith("mysql") else "TIMESTAMP WITH TIME ZONE"
        if sink_url.startswith("sqlite"):
            stamp = "TIMESTAMP"
        fetch(
            sink_url,
            tmp_path,
            "CREATE TABLE orders__deleted (_key VARCHAR(100) PRIMARY KEY, _topic VARCHAR(249),"
            f" _partition INTEGER, _offset BIGINT, _timestamp {stamp}, must INTEGER NOT NULL)",
            write=True,
        )
        with pytest.raises(KafkaEtlError):
            s.write(batch(HISTORY[10:]))
        assert rows(sink_url, STATE) == before
        assert rows(sink_url, "SELECT count(*) FROM orders__deleted") == [(0,)]
        assert s.read_checkpoints() == {0: 10}


def bytes_batch(messages: list[tuple[bytes, dict[str, Any] | None, int, int]]) -> Batch:
    """Messages ``(key, value, offset, timestamp ms)`` on partition 0, keys kept as bytes."""
    offsets = [m[2] for m in messages]
    raw = RawBatch(
        topic=TOPIC,
        values=[None if v is None else json.dumps(v).encode() for _, v, _, _ in messages],
        keys=[k for k, _, _, _ in messages],
        partitions=np.zeros(len(messages), np.int32),
        offsets=np.array(offsets, np.int64),
        timestamps=np.array([m[3] for m in messages], np.int64),
        ranges={0: OffsetRange(0, min(offsets), max(offsets) + 1)},
        nbytes=0,
    )
    return FrameDecoder(JsonFormat(None), BytesFormat()).decode(raw)


def test_binary_kafka_keys_as_the_table_key_are_guarded_too(sink_url: str, tmp_path: Path) -> None:
    spec = {"table": "kv", "mode": "upsert", "key": ("_key",), "delete_on_tombstone": True}
    history = [
        (b"\x00k", {"v": 1}, 0, T0),
        (b"\x00K", {"v": 2}, 1, T0 + 1),
        (b"\x00k", {"v": 3}, 2, T0 + 2),
        (b"\x00k", None, 3, T0 + 3),
    ]
    with sink(sink_url, tmp_path, **spec) as s:
        s.write(bytes_batch(history[:3]))
        s.write(bytes_batch(history[3:]))
        s.write(bytes_batch(history[:3]), replay=True)
        assert [(bytes(k), v) for k, v in rows(sink_url, "SELECT _key, v FROM kv")] == [
            (b"\x00K", 2)
        ]
        stored = rows(sink_url, "SELECT _key, _offset FROM kv__deleted")
        assert [(bytes(k), o) for k, o in stored] == [(b"\x00k", 3)]


def test_runner_replay_before_the_delete_then_reset_to_earliest_and_reload(
    sink_url: str,
    tmp_path: Path,
    kafka_bootstrap: str,
    topic_factory: TopicFactory,
    produce: Produce,
) -> None:
    topic = topic_factory(1)
    produce(topic, [v for _, v, _, _, _ in HISTORY], [k for k, _, _, _, _ in HISTORY])
    body = {
        "topic": topic,
        "target": sink_url,
        "table": "orders",
        "mode": "upsert",
        "key": ["id"],
        "delete_on_tombstone": True,
        "batch_max_rows": 4,
    }
    project = project_for(write_pipelines(tmp_path, kafka_bootstrap, {"orders": body}))
    run_pipeline(project, "orders")
    state = "SELECT id, v FROM orders ORDER BY id"
    assert fetch(sink_url, tmp_path, state) == FINAL
    replay_pipeline(project, "orders", offsets={0: (0, 13)})  # ends before a, b, c's deletes
    assert fetch(sink_url, tmp_path, state) == FINAL
    markers = "SELECT _key, _offset FROM orders__deleted ORDER BY _key"
    assert fetch(sink_url, tmp_path, markers) == [("a", 13), ("b", 14), ("c", 15), ("e", 10)]
    reset_pipeline(project, "orders", "earliest")
    assert fetch(sink_url, tmp_path, markers) == []
    run_pipeline(project, "orders")
    assert fetch(sink_url, tmp_path, state) == FINAL
    assert fetch(sink_url, tmp_path, markers) == [("a", 13), ("b", 14), ("c", 15), ("e", 10)]
