"""Dead letters of a registry format: wire-format faults of an Avro topic (wrong magic byte,
unknown schema id, a frame too short, a truncated or garbled payload) land in ``<table>__dlq``
with their error class, between good messages that load exactly once (DuckDB and PostgreSQL).
The bad-message corpus for JSON is in ``tests/integration/test_dead_letters.py``."""

from __future__ import annotations

import json
from pathlib import Path

from confluent_kafka.schema_registry import SchemaRegistryClient
from confluent_kafka.schema_registry.avro import AvroSerializer
from confluent_kafka.serialization import MessageField, SerializationContext

from pipelines.runner import run_pipeline
from tests.fixtures.databases import sinks
from tests.fixtures.kafka import Produce, TopicFactory
from tests.formats.support import framed
from tests.helpers import checkpoints, project_for, table_offsets, write_pipelines
from tests.integration.test_dead_letters import dead_letters

SCHEMA = {
    "type": "record",
    "name": "Reading",
    "fields": [{"name": "id", "type": "long"}, {"name": "label", "type": "string"}],
}


@sinks("duckdb", "postgresql")
def test_avro_wire_format_faults_are_dead_lettered(
    sink_url: str,
    tmp_path: Path,
    kafka_bootstrap: str,
    topic_factory: TopicFactory,
    produce: Produce,
    schema_registry_url: str,
    registry_client: SchemaRegistryClient,
) -> None:
    topic = topic_factory(1)
    serialize = AvroSerializer(registry_client, json.dumps(SCHEMA))
    context = SerializationContext(topic, MessageField.VALUE)

    def good(i: int) -> bytes:
        data: bytes = serialize({"id": i, "label": f"r{i}"}, context)
        return data

    sample = good(0)
    schema_id = int.from_bytes(sample[1:5], "big")
    bad = {
        "wrong_magic_byte": (b"\x01" + sample[1:], "wire_format"),
        "unknown_schema_id": (framed(2_000_000_000, sample[5:]), "unknown_schema"),
        "frame_too_short": (b"\x00\x00\x01", "wire_format"),
        "magic_byte_only": (b"\x00", "wire_format"),
        "empty_value": (b"", "wire_format"),
        "truncated_payload": (framed(schema_id, sample[5:-2]), "malformed"),
        "plain_json": (b'{"id": 1, "label": "x"}', "wire_format"),
    }
    values: list[bytes] = []
    expect_rows: list[int] = []
    expect_dead: dict[int, str] = {}
    for i, (value, error) in enumerate(bad.values()):
        for j in range(5):
            expect_rows.append(len(values))
            values.append(good(10 * i + j))
        expect_dead[len(values)] = error
        values.append(value)
    produce(topic, values)
    body = {
        "topic": topic,
        "target": sink_url,
        "table": "readings",
        "format": "avro",
        "schema_registry": {"url": schema_registry_url},
        "on_error": "dlq",
        "max_error_ratio": 0.2,
    }
    project = project_for(write_pipelines(tmp_path, kafka_bootstrap, {"readings": body}))

    result = run_pipeline(project, "readings")

    assert (result.rows, result.dead_lettered) == (len(expect_rows), len(expect_dead))
    assert table_offsets(sink_url, tmp_path, "readings") == [(0, o) for o in expect_rows]
    dead = dead_letters(sink_url, tmp_path, "readings")
    assert {o: row[0] for o, row in dead.items()} == expect_dead
    assert all(row[1] for row in dead.values())  # every one has a reason
    assert checkpoints(sink_url, tmp_path, "readings", topic) == {0: len(values)}
