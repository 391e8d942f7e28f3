"""Pipeline definitions: validation errors are one line naming file, pipeline and field."""

from __future__ import annotations

from pathlib import Path

import pytest

from kafka_etl.errors import ConfigError
from pipelines.config import MAX_DEFAULT_DECODE_THREADS, default_decode_threads, load_project
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
            "pipeline 'user_events', field 'schedule': 'every five minutes' is not a cron schedule",
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
        pytest.param(
            ("    table: user_events\n", f"    table: {'t' * 60}\n    delete_on_tombstone: true\n"),
            "pipeline 'user_events', field 'table': delete-marker table",
            id="marker-table-name-too-long",
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


def test_decode_threads_default_to_the_cores_at_most_four_and_one_is_allowed(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    pipeline = load_project(write(tmp_path, GOOD), env={"BOOT": "x:1"}).pipeline("user_events")
    assert pipeline.decode_threads == default_decode_threads()
    monkeypatch.setattr("os.sched_getaffinity", lambda _: set(range(64)))
    assert default_decode_threads() == MAX_DEFAULT_DECODE_THREADS
    monkeypatch.setattr("os.sched_getaffinity", lambda _: {0})
    assert default_decode_threads() == 1
    one = GOOD.replace(
        "    table: user_events\n", "    table: user_events\n    decode_threads: 1\n"
    )
    assert (
        load_project(write(tmp_path, one), env={"BOOT": "x:1"})
        .pipeline("user_events")
        .decode_threads
        == 1
    )
    zero = one.replace("decode_threads: 1", "decode_threads: 0")
    with pytest.raises(ConfigError, match="decode_threads"):
        load_project(write(tmp_path, zero), env={"BOOT": "x:1"})


# Cron schedules: what kafka-etl accepts, Dagster accepts (its own check, on the same strings).
CRONS_BOTH_ACCEPT = [
    "*/5 * * * *",
    "0 0 * * *",
    "@daily",
    "@hourly",
    "@weekly",
    "@monthly",
    "@yearly",
    "@annually",
    "@midnight",
    "0 0 L * *",
    "0 0 1,L * *",
    "0 0 * * 1#2",
    "0 0 ? * *",
    "*/100 * * * *",
    "5-2 * * * *",
    "0 0 * jan-mar mon-fri",
    "0 0 * JAN MON",
    "0 0 29 2 *",
    "0 0 * * 7",
    "0 0 * * 0-7",
    "1,2,3 * * * *",
    "1-10/2 * * * *",
    "  */5  *  * * *  ",
    "0 0 * * sat-sun",
    "0-59/15 * * * *",
    "1/2 * * * *",
    "0 0 1-31/2 * *",
    "0 0 * * MON-FRI/2",
    "*/5 */2 */3 */4 */3",
    "00 00 * * *",
    "0 0 * * mon-7",
]
CRONS_BOTH_REFUSE = [
    "99 99 * * *",
    "0 0 * * * *",
    "* * * * * *",
    "0 0 1 1",
    "@reboot",
    "0 0 * * 5L",
    "*/0 * * * *",
    "0 0 30 2 *",
    "0 0 31 2 *",
    "0 0 0 * *",
    "0 0 32 * *",
    "0 24 * * *",
    "60 * * * *",
    "0 0 * 13 *",
    "0 0 * * 8",
    "a * * * *",
    "1- * * * *",
    "-1 * * * *",
    "H * * * *",
    "0 0 15W * *",
    "0 0 LW * *",
    "0 0 L-2 * *",
    "0 0 * * 1#6",
    "0 0 * * */0",
    "every five minutes",
    "",
]
CRONS_ONLY_DAGSTER_ACCEPTS = ["R * * * *"]  # croniter's random minute: refused, deliberately


@pytest.mark.parametrize("expression", CRONS_BOTH_ACCEPT + CRONS_BOTH_REFUSE)
def test_cron_check_agrees_with_dagster(expression: str) -> None:
    schedules = pytest.importorskip("dagster._utils.schedules")  # not in a core-only install
    is_valid_cron_string = schedules.is_valid_cron_string

    from pipelines.checks import cron

    try:
        cron(expression)
        ours = True
    except ValueError:
        ours = False
    assert ours == is_valid_cron_string(expression)
    assert ours == (expression in CRONS_BOTH_ACCEPT)


def test_the_cron_subset_refuses_only_what_it_says() -> None:
    schedules = pytest.importorskip("dagster._utils.schedules")  # not in a core-only install
    is_valid_cron_string = schedules.is_valid_cron_string

    from pipelines.checks import cron

    for expression in CRONS_ONLY_DAGSTER_ACCEPTS:
        assert is_valid_cron_string(expression)
        with pytest.raises(ValueError, match="not a cron schedule"):
            cron(expression)
