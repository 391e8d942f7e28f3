"""Schema evolution on every sink: a producer adds a field, widens an int to a float, then sends
a conflicting type; plus ``kafka-etl schema`` and ``flatten`` (DuckDB)."""

from __future__ import annotations

from pathlib import Path

import pyarrow as pa
import pytest

from kafka_etl.errors import SchemaConflictError
from pipelines.runner import pipeline_schema, run_pipeline
from tests.fixtures.kafka import Produce, TopicFactory
from tests.helpers import (
    checkpoints,
    cli,
    fetch,
    project_for,
    table_offsets,
    write_pipelines,
)


def test_a_new_field_adds_a_column_an_int_widens_to_float_and_a_conflict_fails_or_is_dead_lettered(
    sink_url: str,
    tmp_path: Path,
    kafka_bootstrap: str,
    topic_factory: TopicFactory,
    produce: Produce,
) -> None:
    topic = topic_factory(1)
    body = {"topic": topic, "target": sink_url, "table": "evo"}
    config = write_pipelines(tmp_path, kafka_bootstrap, {"evo": body})
    project = project_for(config)

    produce(topic, [{"id": i, "n": i} for i in range(5)])
    first = run_pipeline(project, "evo")
    assert first.rows == 5
    assert first.schema is not None and first.schema.field("n").type == pa.int64()

    # 1. a new field -> a new nullable column, older rows hold NULL in it
    produce(topic, [{"id": i, "n": i, "note": f"v{i}"} for i in range(5, 10)])
    added = run_pipeline(project, "evo")
    assert (added.rows, added.columns_added) == (5, ("note",))
    notes = fetch(sink_url, tmp_path, "SELECT id, note FROM evo ORDER BY id")
    assert notes == [(i, None if i < 5 else f"v{i}") for i in range(10)]

    # 2. an int field now carries floats -> the column widens, old values are kept
    produce(topic, [{"id": i, "n": i + 0.5} for i in range(10, 15)])
    widened = run_pipeline(project, "evo")
    assert widened.rows == 5
    assert widened.schema is not None and widened.schema.field("n").type == pa.float64()
    values = fetch(sink_url, tmp_path, "SELECT id, n FROM evo ORDER BY id")
    assert [(i, float(n)) for i, n in values] == [(i, float(i)) for i in range(10)] + [
        (i, i + 0.5) for i in range(10, 15)
    ]

    # 3. a conflicting type -> the run fails with one line; nothing of that batch is committed
    produce(topic, [{"id": 15, "n": "fifteen"}, {"id": 16, "n": "sixteen"}])
    with pytest.raises(SchemaConflictError):
        run_pipeline(project, "evo")
    result = cli(config, "run", "evo")
    assert result.returncode == 1
    assert result.stderr.strip() == (
        "kafka-etl: error: pipeline 'evo': field 'n' arrived as string but the table column"
        " is double"
    )
    assert checkpoints(sink_url, tmp_path, "evo", topic) == {0: 15}
    assert table_offsets(sink_url, tmp_path, "evo") == [(0, o) for o in range(15)]

    # under on_schema_conflict: dlq the same messages become dead letters, in the same
    # transaction as the checkpoint; the next good messages load as usual
    dlq = {**body, "on_schema_conflict": "dlq", "max_error_ratio": 1.0}
    project = project_for(write_pipelines(tmp_path, kafka_bootstrap, {"evo": dlq}))
    set_aside = run_pipeline(project, "evo")
    assert (set_aside.rows, set_aside.dead_lettered) == (0, 2)
    letters = fetch(sink_url, tmp_path, "SELECT _offset, error_class FROM evo__dlq ORDER BY 1")
    assert letters == [(15, "schema_conflict"), (16, "schema_conflict")]
    produce(topic, [{"id": 17, "n": 17.5, "note": "ok"}])
    assert run_pipeline(project, "evo").rows == 1
    assert checkpoints(sink_url, tmp_path, "evo", topic) == {0: 18}
    loaded = [o for _, o in table_offsets(sink_url, tmp_path, "evo")]
    assert sorted(loaded + [o for o, _ in letters]) == list(range(18))

    # every change is in the history, with the batch that first needed it
    columns, history = pipeline_schema(project, "evo")
    assert columns is not None and columns.field("note").type == pa.string()
    changes = [(h.column, h.change, h.old_type, h.new_type, h.first_offsets) for h in history]
    assert ("id", "created", None, "int64", "0:[0,5)") in changes
    assert changes[-2:] == [
        ("note", "added", None, "string", "0:[5,10)"),
        ("n", "widened", "int64", "double", "0:[10,15)"),
    ]

    shown = cli(config, "schema", "evo")
    assert shown.returncode == 0, shown.stderr
    lines = shown.stdout.splitlines()
    assert any("note" in line and "string" in line for line in lines)
    assert any(
        all(word in line for word in ("widened", " n ", "int64", "double", "0:[10,15)"))
        for line in lines
    ), shown.stdout


def test_widen_to_string_turns_a_numeric_column_into_text(
    sink_url: str,
    tmp_path: Path,
    kafka_bootstrap: str,
    topic_factory: TopicFactory,
    produce: Produce,
) -> None:
    topic = topic_factory(1)
    body = {"topic": topic, "target": sink_url, "table": "evo", "widen_to_string": True}
    project = project_for(write_pipelines(tmp_path, kafka_bootstrap, {"evo": body}))
    produce(topic, [{"id": 1, "code": 7}])
    run_pipeline(project, "evo")
    produce(topic, [{"id": 2, "code": "A7"}, {"id": 3, "code": "B8"}])
    result = run_pipeline(project, "evo")
    assert result.schema is not None and result.schema.field("code").type == pa.string()
    assert fetch(sink_url, tmp_path, "SELECT code FROM evo ORDER BY id") == [
        ("7",),
        ("A7",),
        ("B8",),
    ]


def test_flatten_spreads_struct_fields_into_columns_up_to_the_depth(
    sink_url: str,
    tmp_path: Path,
    kafka_bootstrap: str,
    topic_factory: TopicFactory,
    produce: Produce,
) -> None:
    topic = topic_factory(1)
    nested = {"topic": topic, "target": sink_url}
    pipelines = {
        "nested": {**nested, "table": "nested"},
        "flat1": {**nested, "table": "flat1", "flatten": 1},
        "flat2": {**nested, "table": "flat2", "flatten": 2},
    }
    project = project_for(write_pipelines(tmp_path, kafka_bootstrap, pipelines))
    produce(topic, [{"id": 1, "a": {"b": 1, "c": {"d": "x"}}}, {"id": 2, "a": None}])
    schemas = {name: run_pipeline(project, name).schema for name in pipelines}
    user = {name: [f for f in s.names if not f.startswith("_")] for name, s in schemas.items() if s}
    assert user == {
        "nested": ["id", "a"],
        "flat1": ["id", "a__b", "a__c"],
        "flat2": ["id", "a__b", "a__c__d"],
    }
    # DuckDB keeps the struct; the SQL databases store nested values as JSON.
    nested_type = schemas["nested"].field("a").type  # type: ignore[union-attr]
    assert pa.types.is_struct(nested_type) or nested_type == pa.json_()
    assert fetch(sink_url, tmp_path, "SELECT id, a__b, a__c__d FROM flat2 ORDER BY id") == [
        (1, 1, "x"),
        (2, None, None),
    ]
