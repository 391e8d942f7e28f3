"""A checkpoint belongs to its table, on every sink, through the real CLI: a pipeline pointed at
a new table loads it in full, a table dropped by hand is refused in one line instead of
"loading" nothing, and checkpoint tables of the older layout (no table in the key) keep working.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import sqlalchemy as sa

from tests.fixtures.kafka import Produce, TopicFactory
from tests.helpers import (
    checkpoints,
    cli,
    events,
    expected_offsets,
    fetch,
    high_watermarks,
    table_names,
    table_offsets,
    write_pipelines,
)


def _config(tmp_path: Path, bootstrap: str, **pipelines: dict[str, Any]) -> Path:
    return write_pipelines(tmp_path, bootstrap, pipelines)


def _run(config: Path, name: str) -> str:
    result = cli(config, "run", name)
    assert result.returncode == 0, result.stderr
    return result.stdout


def _one_error_line(result: Any) -> str:
    lines = result.stderr.strip().splitlines()
    assert len(lines) == 1, result.stderr
    assert lines[0].startswith("kafka-etl: error: "), lines[0]
    return str(lines[0])


def test_a_pipeline_pointed_at_a_new_table_loads_it_in_full_and_leaves_the_old_one(
    sink_url: str,
    tmp_path: Path,
    kafka_bootstrap: str,
    topic_factory: TopicFactory,
    produce: Produce,
) -> None:
    topic = topic_factory(3)
    produce(topic, events(0, 600))
    body = {"topic": topic, "target": sink_url, "table": "events_v1"}
    config = _config(tmp_path, kafka_bootstrap, ev=body)
    _run(config, "ev")
    first = high_watermarks(kafka_bootstrap, topic, 3)

    config = _config(tmp_path, kafka_bootstrap, ev={**body, "table": "events_v2"})
    _run(config, "ev")
    assert table_offsets(sink_url, tmp_path, "events_v2") == expected_offsets(first)
    assert checkpoints(sink_url, tmp_path, "ev", topic, "events_v2") == first
    assert checkpoints(sink_url, tmp_path, "ev", topic, "events_v1") == first

    produce(topic, events(600, 300))
    _run(config, "ev")
    marks = high_watermarks(kafka_bootstrap, topic, 3)
    assert table_offsets(sink_url, tmp_path, "events_v2") == expected_offsets(marks)
    assert checkpoints(sink_url, tmp_path, "ev", topic, "events_v2") == marks
    # The old table and its checkpoint are as the last run into it left them...
    assert table_offsets(sink_url, tmp_path, "events_v1") == expected_offsets(first)
    assert checkpoints(sink_url, tmp_path, "ev", topic, "events_v1") == first

    # ...and pointing the pipeline back resumes it from there: only the new messages.
    config = _config(tmp_path, kafka_bootstrap, ev=body)
    _run(config, "ev")
    assert table_offsets(sink_url, tmp_path, "events_v1") == expected_offsets(marks)
    assert checkpoints(sink_url, tmp_path, "ev", topic, "events_v1") == marks


def test_a_table_dropped_by_hand_is_refused_in_one_line_until_reset(
    sink_url: str,
    tmp_path: Path,
    kafka_bootstrap: str,
    topic_factory: TopicFactory,
    produce: Produce,
) -> None:
    topic = topic_factory(3)
    produce(topic, events(0, 600))
    body = {"topic": topic, "target": sink_url, "table": "events"}
    config = _config(tmp_path, kafka_bootstrap, ev=body)
    _run(config, "ev")
    fetch(sink_url, tmp_path, "DROP TABLE events", write=True)

    refused = cli(config, "run", "ev")
    assert refused.returncode == 1, refused.stderr
    line = _one_error_line(refused)
    assert "pipeline 'ev': table events in " in line, line
    assert "was dropped" in line, line
    assert line.endswith("kafka-etl reset ev --to earliest"), line
    assert "events" not in table_names(sink_url, tmp_path)

    reset = cli(config, "reset", "ev", "--to", "earliest")
    assert reset.returncode == 0, reset.stderr
    _run(config, "ev")
    marks = high_watermarks(kafka_bootstrap, topic, 3)
    assert table_offsets(sink_url, tmp_path, "events") == expected_offsets(marks)
    assert checkpoints(sink_url, tmp_path, "ev", topic) == marks
    # The schema history describes the re-created table only.
    history = sa.table("_kafka_etl_schema_history", sa.column("change"))
    created = sa.select(sa.func.count()).where(history.c.change == "created")
    columns = len(fetch(sink_url, tmp_path, "SELECT * FROM events LIMIT 1")[0])
    assert fetch(sink_url, tmp_path, created) == [(columns,)]


def _create_old_layout(target: str, base_dir: Path) -> None:
    """``_kafka_etl_checkpoints`` as kafka-etl created it before checkpoints named their table."""
    if target.startswith("duckdb"):
        fetch(
            target,
            base_dir,
            'CREATE TABLE "_kafka_etl_checkpoints" ('
            " pipeline VARCHAR NOT NULL, topic VARCHAR NOT NULL, partition INTEGER NOT NULL,"
            " next_offset BIGINT NOT NULL, updated_at TIMESTAMPTZ NOT NULL,"
            " PRIMARY KEY (pipeline, topic, partition))",
            write=True,
        )
        return
    mysql = target.startswith("mysql")
    exact = "utf8mb4_bin" if mysql else None
    pipeline: Any = sa.String(255, collation=exact) if mysql else sa.Text()
    topic: Any = sa.String(249, collation=exact) if mysql else sa.Text()
    table = sa.Table(
        "_kafka_etl_checkpoints",
        sa.MetaData(),
        sa.Column("pipeline", pipeline, nullable=False),
        sa.Column("topic", topic, nullable=False),
        sa.Column("partition", sa.Integer(), nullable=False),
        sa.Column("next_offset", sa.BigInteger(), nullable=False),
        sa.Column("updated_at", sa.DateTime(timezone=True), nullable=False),
        sa.PrimaryKeyConstraint("pipeline", "topic", "partition"),
        mysql_engine="InnoDB",
        mysql_charset="utf8mb4",
    )
    engine = sa.create_engine(target, poolclass=sa.pool.NullPool)
    try:
        table.create(engine)
    finally:
        engine.dispose()


def _insert_old_rows(target: str, base_dir: Path, rows: list[tuple[str, str, int, int]]) -> None:
    old = sa.table(
        "_kafka_etl_checkpoints",
        sa.column("pipeline", sa.String()),
        sa.column("topic", sa.String()),
        sa.column("partition", sa.Integer()),
        sa.column("next_offset", sa.BigInteger()),
        sa.column("updated_at", sa.DateTime(timezone=True)),
    )
    for pipeline, topic, partition, offset in rows:
        values = {"pipeline": pipeline, "topic": topic, "partition": partition}
        insert = sa.insert(old).values(**values, next_offset=offset, updated_at=sa.func.now())
        fetch(target, base_dir, insert, write=True)


def _table_name_of(target: str, base_dir: Path, pipeline: str) -> set[str]:
    t = sa.table(
        "_kafka_etl_checkpoints", sa.column("pipeline", sa.String()), sa.column("table_name")
    )
    query = sa.select(t.c.table_name).where(t.c.pipeline == pipeline)
    return {str(name) for (name,) in fetch(target, base_dir, query)}


def test_an_old_layout_checkpoint_table_is_migrated_and_resumes_where_it_was(
    sink_url: str,
    tmp_path: Path,
    kafka_bootstrap: str,
    topic_factory: TopicFactory,
    produce: Produce,
) -> None:
    topic, other_topic = topic_factory(3), topic_factory(1)
    for partition in range(3):  # each beyond the old checkpoints below
        produce(topic, events(200 * partition, 200), partition=partition)
    produce(other_topic, events(0, 50))
    _create_old_layout(sink_url, tmp_path)
    # Loaded by an older kafka-etl: "ev" up to 100 of each partition, "other" up to 20.
    old = [("ev", topic, p, 100) for p in range(3)] + [("other", other_topic, 0, 20)]
    _insert_old_rows(sink_url, tmp_path, old)
    pipelines = {
        "ev": {"topic": topic, "target": sink_url, "table": "events"},
        "other": {"topic": other_topic, "target": sink_url, "table": "other_events"},
    }
    config = _config(tmp_path, kafka_bootstrap, **pipelines)

    _run(config, "ev")
    marks = high_watermarks(kafka_bootstrap, topic, 3)
    resumed = [(p, o) for p, o in expected_offsets(marks) if o >= 100]
    assert table_offsets(sink_url, tmp_path, "events") == resumed
    assert checkpoints(sink_url, tmp_path, "ev", topic, "events") == marks
    # The other pipeline's row waits, unclaimed, until that pipeline opens the database.
    assert _table_name_of(sink_url, tmp_path, "other") == {""}

    _run(config, "other")
    assert _table_name_of(sink_url, tmp_path, "other") == {"other_events"}
    assert table_offsets(sink_url, tmp_path, "other_events") == [(0, o) for o in range(20, 50)]

    # The key holds the table now: a second table's checkpoints sit beside the first's.
    retarget = {**pipelines, "ev": {**pipelines["ev"], "table": "events_b"}}
    _run(_config(tmp_path, kafka_bootstrap, **retarget), "ev")
    assert table_offsets(sink_url, tmp_path, "events_b") == expected_offsets(marks)
    assert checkpoints(sink_url, tmp_path, "ev", topic, "events_b") == marks
    assert checkpoints(sink_url, tmp_path, "ev", topic, "events") == marks
