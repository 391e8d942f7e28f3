"""What the benchmarks share: a broker to talk to and a topic full of events."""

from __future__ import annotations

import os
import subprocess
import uuid
from collections.abc import Callable
from pathlib import Path

from confluent_kafka import Producer
from confluent_kafka.admin import AdminClient, NewTopic

from connector.librdkafka import logged

REPO = Path(__file__).resolve().parents[1]
PARTITIONS = 3


def bootstrap() -> str:
    """$KAFKA_BOOTSTRAP_SERVERS, or the repo's local broker (started if needed)."""
    if env := os.environ.get("KAFKA_BOOTSTRAP_SERVERS"):
        return env
    out = subprocess.run(
        [str(REPO / "scripts" / "local-kafka"), "start"], capture_output=True, text=True, check=True
    )
    return out.stdout.strip().splitlines()[-1]


def make_topic(servers: str, count: int, event: Callable[[int], bytes], prefix: str) -> str:
    """A new topic holding ``event(0) … event(count - 1)``, keyed over 50,000 keys."""
    topic = f"{prefix}-{uuid.uuid4().hex[:8]}"
    admin = AdminClient(logged({"bootstrap.servers": servers}))
    admin.create_topics([NewTopic(topic, PARTITIONS, 1)])[topic].result(timeout=30)
    producer = Producer(
        logged(
            {
                "bootstrap.servers": servers,
                "linger.ms": 50,
                "batch.size": 1_000_000,
                "queue.buffering.max.messages": 2_000_000,
                "compression.type": "lz4",
            }
        )
    )
    for i in range(count):
        while True:
            try:
                producer.produce(topic, event(i), key=str(i % 50_000).encode())
                break
            except BufferError:
                producer.poll(0.05)
    producer.flush(120)
    return topic
