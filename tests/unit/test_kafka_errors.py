"""Kafka errors: which ones a retry may fix (exit 75) and which it cannot (exit 1)."""

from __future__ import annotations

import pytest
from confluent_kafka import KafkaError, KafkaException

from kafka_etl.errors import SourceUnavailableError, TerminalError, classify

TRANSIENT = [
    "_TRANSPORT",
    "_ALL_BROKERS_DOWN",
    "_TIMED_OUT",
    "_DESTROY_BROKER",  # a watermark query sent to a leader that then died
    "_WAIT_COORD",
    "_RESOLVE",
    "LEADER_NOT_AVAILABLE",
    "NOT_LEADER_FOR_PARTITION",
    "NOT_COORDINATOR",
    "COORDINATOR_NOT_AVAILABLE",
    "NOT_ENOUGH_REPLICAS",
    "OFFSET_NOT_AVAILABLE",
]


@pytest.mark.parametrize("name", TRANSIENT)
def test_broker_and_leader_changes_are_transient(name: str) -> None:
    error = KafkaException(KafkaError(getattr(KafkaError, name), "lost"))
    assert isinstance(classify(error, "kafka t/0"), SourceUnavailableError)


@pytest.mark.parametrize("name", ["UNKNOWN_TOPIC_OR_PART", "TOPIC_AUTHORIZATION_FAILED"])
def test_missing_or_forbidden_topics_are_terminal(name: str) -> None:
    error = classify(KafkaException(KafkaError(getattr(KafkaError, name), "no")), "kafka t")
    assert isinstance(error, TerminalError)
    assert str(error).startswith("kafka t: ")
