"""Batched offset look-ups (``connector.client.list_offsets``): one call for every partition,
the ones without a leader asked again alone, and a failure naming the partitions it is about."""

from __future__ import annotations

from dataclasses import dataclass

import pytest
from confluent_kafka import OFFSET_BEGINNING, OFFSET_END, KafkaError, KafkaException, TopicPartition

from connector import client
from connector.client import list_offsets, watermarks
from kafka_etl.errors import SourceUnavailableError, TerminalError


@dataclass(frozen=True)
class Answer:
    """A ``TopicPartition`` as librdkafka answers it (its ``error`` cannot be set from Python)."""

    partition: int
    offset: int
    error: KafkaError | None = None


class FakeConsumer:
    """Answers ``offsets_for_times`` from ``logs`` (partition -> (log start, end)); a partition
    in ``leaderless`` comes back with librdkafka's per-partition error that many times."""

    def __init__(self, logs: dict[int, tuple[int, int]], leaderless: dict[int, int] | None = None):
        self.logs = logs
        self.leaderless = dict(leaderless or {})
        self.calls: list[list[int]] = []
        self.fail_with: KafkaError | None = None

    def offsets_for_times(self, asked: list[TopicPartition], timeout: float) -> list[Answer]:
        self.calls.append([tp.partition for tp in asked])
        if self.fail_with is not None:
            raise KafkaException(self.fail_with)
        answered = []
        for tp in asked:
            if self.leaderless.get(tp.partition, 0) > 0:
                self.leaderless[tp.partition] -= 1
                error = KafkaError(KafkaError.LEADER_NOT_AVAILABLE)
                answered.append(Answer(tp.partition, tp.offset, error))
                continue
            low, high = self.logs[tp.partition]
            offset = {OFFSET_BEGINNING: low, OFFSET_END: high}.get(tp.offset, -1)
            answered.append(Answer(tp.partition, offset))
        return answered


@pytest.fixture(autouse=True)
def _no_pause(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(client, "_RETRY_PAUSE", 0.01)


def test_every_partition_is_asked_in_one_call() -> None:
    consumer = FakeConsumer({p: (p, 10 * p) for p in range(1000)})
    marks = watermarks(consumer, "t", list(range(1000)), timeout=5)  # type: ignore[arg-type]
    assert marks == {p: (p, 10 * p) for p in range(1000)}
    assert [len(c) for c in consumer.calls] == [1000, 1000]  # log starts, then high watermarks


def test_a_partition_without_a_leader_is_asked_again_alone() -> None:
    consumer = FakeConsumer({p: (0, 5) for p in range(4)}, leaderless={2: 2})
    assert list_offsets(consumer, "t", [0, 1, 2, 3], OFFSET_END, 5) == dict.fromkeys(range(4), 5)  # type: ignore[arg-type]
    assert consumer.calls == [[0, 1, 2, 3], [2], [2]]


def test_a_leader_that_stays_unknown_is_a_transient_error_naming_the_partition() -> None:
    consumer = FakeConsumer({p: (0, 5) for p in range(4)}, leaderless={1: 10**6, 3: 10**6})
    with pytest.raises(SourceUnavailableError) as failed:
        list_offsets(consumer, "t", [0, 1, 2, 3], OFFSET_END, 0.3)  # type: ignore[arg-type]
    assert str(failed.value).startswith("kafka t/1 and 1 more partitions: ")
    assert "no leader known" in str(failed.value)
    assert all(c == [1, 3] for c in consumer.calls[1:])


def test_no_partition_with_a_leader_is_transient_too() -> None:
    consumer = FakeConsumer({0: (0, 5), 1: (0, 5)})
    consumer.fail_with = KafkaError(KafkaError._UNKNOWN_PARTITION, "Local: Unknown partition")
    with pytest.raises(SourceUnavailableError, match=r"^kafka t/0-1: .*no leader known"):
        list_offsets(consumer, "t", [0, 1], OFFSET_BEGINNING, 0.3)  # type: ignore[arg-type]


def test_a_broker_answer_keeps_its_classification() -> None:
    consumer = FakeConsumer({0: (0, 5)})
    consumer.fail_with = KafkaError(KafkaError.TOPIC_AUTHORIZATION_FAILED, "not allowed")
    with pytest.raises(TerminalError, match=r"^kafka t/0: .*not allowed"):
        list_offsets(consumer, "t", [0], OFFSET_END, 5)  # type: ignore[arg-type]
    assert len(consumer.calls) == 1  # terminal: not retried


def test_a_timestamp_after_the_last_message_finds_nothing() -> None:
    consumer = FakeConsumer({0: (0, 5), 1: (3, 3)})
    assert list_offsets(consumer, "t", [0, 1], 1_700_000_000_000, 5) == {0: -1, 1: -1}  # type: ignore[arg-type]
