"""Pipeline definitions: validation errors are one line naming file, pipeline and field."""

from __future__ import annotations

from pathlib import Path

import pytest

from kafka_etl.errors import ConfigError
from pipelines.config import load_project
from tests.helpers import cli

GOOD = """
kafka:
  bootstrap.servers: ${BOOT}
  sasl.password: hunter2
pipelines:
  user_events:
    topic: user-events
    target: postgresql+psycopg://etl:s3cret@db/warehouse
    table: user_events
    mode: upsert
    key: [user_id]
    schedule: "*/5 * * * *"
"""


def write(tmp_path: Path, text: str) -> Path:
    path = tmp_path / "pipelines.yaml"
    path.write_text(text, encoding="utf-8")
    return path


def test_a_good_file_loads_with_interpolation_and_defaults(tmp_path: Path) -> None:
    project = load_project(write(tmp_path, GOOD), env={"BOOT": "127.0.0.1:9092"})
    pipeline = project.pipeline("user_events")
    assert project.kafka["bootstrap.servers"] == "127.0.0.1:9092"
    assert (pipeline.mode, pipeline.key, pipeline.consumer_group) == (
        "upsert",
        ("user_id",),
        "user_events",
    )
    assert pipeline.safe_target == "postgresql+psycopg://etl:***@db/warehouse"
    assert project.safe_kafka_settings()["sasl.password"] == "***"


@pytest.mark.parametrize(
    ("edit", "expected"),
    [
        pytest.param(
            ("mode: upsert", "mode: merge"),
            "pipeline 'user_events', field 'mode': Input should be 'append' or 'upsert'",
            id="bad-enum",
        ),
        pytest.param(
            ("table: user_events", "table: user_events\n    tabel: typo"),
            "pipeline 'user_events', field 'tabel': unknown field",
            id="unknown-field",
        ),
        pytest.param(
            ("    key: [user_id]\n", ""),
            "pipeline 'user_events', field '(definition)': mode 'upsert' needs 'key'",
            id="cross-field",
        ),
        pytest.param(
            ("${BOOT}", "${NOT_SET_ANYWHERE}"),
            "field 'kafka.bootstrap.servers': environment variable NOT_SET_ANYWHERE is not set",
            id="missing-env",
        ),
        pytest.param(
            ('"*/5 * * * *"', '"every five minutes"'),
            "pipeline 'user_events', field 'schedule': not a cron expression",
            id="bad-cron",
        ),
        pytest.param(
            ("    table: user_events\n", "    table: user_events\n    columns: {x: int65}\n"),
            "pipeline 'user_events', field 'columns': column 'x': unknown Arrow type 'int65'",
            id="bad-arrow-type",
        ),
        pytest.param(
            ("  sasl.password: hunter2", "  enable.auto.commit: true"),
            "field 'kafka': setting 'enable.auto.commit' is managed by kafka-etl",
            id="reserved-setting",
        ),
        pytest.param(("pipelines:", "pipelines: [\n"), "pipelines.yaml: line", id="bad-yaml"),
        pytest.param(
            ("    table: user_events\n", "    table: user_events\n    flatten: -1\n"),
            "pipeline 'user_events', field 'flatten': Input should be greater than or equal to 0",
            id="negative-flatten",
        ),
        pytest.param(
            ("    table: user_events\n", "    table: user_events\n    on_schema_conflict: skip\n"),
            "pipeline 'user_events', field 'on_schema_conflict': Input should be 'fail' or 'dlq'",
            id="unknown-conflict-policy",
        ),
    ],
)
def test_bad_definitions_are_one_line_errors(
    tmp_path: Path, edit: tuple[str, str], expected: str
) -> None:
    path = write(tmp_path, GOOD.replace(*edit))
    with pytest.raises(ConfigError) as caught:
        load_project(path, env={"BOOT": "x:1"})
    message = str(caught.value)
    assert "\n" not in message
    assert message.startswith(str(path))
    assert expected in message


def test_validate_command_prints_one_line_and_fails(tmp_path: Path) -> None:
    path = write(tmp_path, GOOD.replace("mode: upsert", "mode: merge").replace("${BOOT}", "h:9"))
    result = cli(path, "validate")
    assert result.returncode == 1
    lines = result.stderr.strip().splitlines()
    assert len(lines) == 1, result.stderr
    assert lines[0].startswith(f"kafka-etl: error: {path}: pipeline 'user_events', field 'mode'")
    assert "Traceback" not in result.stderr


def test_validate_command_on_a_good_file_hides_the_password(tmp_path: Path) -> None:
    result = cli(write(tmp_path, GOOD.replace("${BOOT}", "127.0.0.1:9")), "validate")
    assert result.returncode == 0, result.stderr
    assert "s3cret" not in result.stdout
    assert "etl:***@db" in result.stdout


def test_unknown_pipeline_names_the_defined_ones(tmp_path: Path) -> None:
    result = cli(write(tmp_path, GOOD.replace("${BOOT}", "127.0.0.1:9")), "run", "nope")
    assert result.returncode == 1
    assert "no pipeline named 'nope' (defined: user_events)" in result.stderr


def test_a_missing_file_is_one_line(tmp_path: Path) -> None:
    result = cli(tmp_path / "absent.yaml", "validate")
    assert result.returncode == 1
    assert result.stderr.strip().endswith(
        "absent.yaml: cannot read pipelines file (No such file or directory)"
    )


def test_schema_evolution_settings_default_to_refusing_and_not_flattening(tmp_path: Path) -> None:
    pipeline = load_project(write(tmp_path, GOOD), env={"BOOT": "x:1"}).pipeline("user_events")
    assert (pipeline.on_schema_conflict, pipeline.widen_to_string, pipeline.flatten) == (
        "fail",
        False,
        0,
    )
