"""Kafka errors: which ones a retry may fix (exit 75), how an unreachable cluster is named, and
how failed informational group commits are reported."""

from __future__ import annotations

import logging
import socket

import pytest
from confluent_kafka import KafkaError, KafkaException, TopicPartition

from connector.client import _log_commit, explain_unreachable
from kafka_etl.errors import SourceUnavailableError, TerminalError, classify

TRANSIENT = [
    "_TRANSPORT",
    "_ALL_BROKERS_DOWN",
    "_TIMED_OUT",
    "_DESTROY_BROKER",  # a watermark query sent to a leader that then died (librdkafka 2.10+)
    "_WAIT_COORD",
    "_RESOLVE",
    "LEADER_NOT_AVAILABLE",
    "NOT_LEADER_FOR_PARTITION",
    "NOT_COORDINATOR",
    "COORDINATOR_NOT_AVAILABLE",
    "NOT_ENOUGH_REPLICAS",
    "OFFSET_NOT_AVAILABLE",
]


# Codes newer than the confluent-kafka floor's librdkafka, which never reports them; the product
# classifies by number, so the test does too where the installed client has no name for one.
NEWER_CODES = {"_DESTROY_BROKER": -137}


@pytest.mark.parametrize("name", TRANSIENT)
def test_broker_and_leader_changes_are_transient(name: str) -> None:
    code = getattr(KafkaError, name, None)
    if code is None:
        code = NEWER_CODES[name]
    assert NEWER_CODES.get(name, code) == code
    error = KafkaException(KafkaError(code, "lost"))
    assert isinstance(classify(error, "kafka t/0"), SourceUnavailableError)


@pytest.mark.parametrize("name", ["UNKNOWN_TOPIC_OR_PART", "TOPIC_AUTHORIZATION_FAILED"])
def test_missing_or_forbidden_topics_are_terminal(name: str) -> None:
    error = classify(KafkaException(KafkaError(getattr(KafkaError, name), "no")), "kafka t")
    assert isinstance(error, TerminalError)
    assert str(error).startswith("kafka t: ")


def test_an_unreachable_cluster_is_named_with_its_address_and_reason() -> None:
    error = SourceUnavailableError(
        'kafka topic t: KafkaError{code=_TRANSPORT,val=-195,str="Failed to get metadata: x"}'
    )
    explained = explain_unreachable(error, {"bootstrap.servers": "127.0.0.1:1"})
    assert explained.transient
    assert str(explained) == (
        "cannot reach Kafka at 127.0.0.1:1: connection refused"
        " (kafka topic t: Failed to get metadata: x)"
    )


def test_a_listening_broker_keeps_the_original_error() -> None:
    with socket.create_server(("127.0.0.1", 0)) as server:
        port = server.getsockname()[1]
        error = SourceUnavailableError("kafka t/0: Local: Timed out")
        servers = f"127.0.0.1:1,PLAINTEXT://127.0.0.1:{port}"
        assert explain_unreachable(error, {"bootstrap.servers": servers}) is error


def test_failed_group_commits_warn_once_per_cause(caplog: pytest.LogCaptureFixture) -> None:
    waiting = KafkaError(KafkaError._WAIT_COORD, "Local: Waiting for coordinator")
    offsets = [TopicPartition("t", 0, 5)]
    with caplog.at_level(logging.INFO, logger="connector.client"):
        for _ in range(3):
            _log_commit(waiting, offsets)
        _log_commit(None, offsets)  # a success ends the run of failures
        _log_commit(waiting, offsets)
    assert [r.getMessage().endswith("Waiting for coordinator") for r in caplog.records] == [
        True,
        True,
    ]
