"""Text from data, schemas and the database is shown as it is, never read as rich markup: field
and table names like ``[/x]`` (which made ``kafka-etl dlq`` crash with a MarkupError), ``[bold]``
and ``[link=...]`` go through the real CLI verbatim."""

from __future__ import annotations

from pathlib import Path

from tests.fixtures.kafka import Produce, TopicFactory
from tests.helpers import cli, write_pipelines

HOSTILE = ("[/x]", "[bold]", "[link=https://example.invalid/]")
TABLE = "ev[/x][bold]"


def test_hostile_names_are_printed_verbatim_by_run_dlq_schema_and_status(
    tmp_path: Path, kafka_bootstrap: str, topic_factory: TopicFactory, produce: Produce
) -> None:
    topic = topic_factory(1)
    produce(topic, [{"id": 1}])
    pipeline = {
        "topic": topic,
        "target": "duckdb:///warehouse.duckdb",
        "table": TABLE,
        "on_error": "dlq",
        "on_schema_conflict": "dlq",
        "max_error_ratio": 1,
    }
    config = write_pipelines(tmp_path, kafka_bootstrap, {"m": pipeline})

    first = cli(config, "run", "m")
    assert first.returncode == 0, first.stderr
    assert TABLE in first.stdout, first.stdout

    produce(topic, [dict.fromkeys(HOSTILE, 1)])
    added = cli(config, "run", "m")
    assert added.returncode == 0, added.stderr
    flat = added.stdout.replace("\n", "")
    assert "new columns: " in flat and all(name in flat for name in HOSTILE), added.stdout

    # A text value for an integer column: a schema conflict, dead-lettered with the field's name.
    produce(topic, [{"[/x]": "not a number", "[bold]": 2, "[link=https://example.invalid/]": 3}])
    second = cli(config, "run", "m")
    assert second.returncode == 0, second.stderr
    assert "1 messages dead-lettered" in second.stdout and f"{TABLE}__dlq" in second.stdout

    letters = cli(config, "dlq", "m")
    assert letters.returncode == 0, letters.stderr
    assert "[/x]" in letters.stdout, letters.stdout
    assert "1 shown" in letters.stdout

    schema = cli(config, "schema", "m")
    assert schema.returncode == 0, schema.stderr
    assert TABLE in schema.stdout and all(name in schema.stdout for name in HOSTILE)

    status = cli(config, "status", "m")
    assert status.returncode == 0, status.stderr
    assert TABLE in status.stdout

    validate = cli(config, "validate")
    assert validate.returncode == 0 and TABLE in validate.stdout, validate
