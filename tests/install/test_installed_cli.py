"""The `kafka-etl` CLI of an installed kafka-etl loads JSON into DuckDB and imports no Dagster.

By default the interpreter under test is this one (the dev install). `make test-lowest` sets
KAFKA_ETL_INSTALLED_PYTHONS (paths joined by os.pathsep) to the interpreters of a core-only
install (`pip install .`, no extras) and of the lowest versions pyproject.toml allows. For an
install without the optional extras, the missing parts must fail in one line naming the extra.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest
import yaml

from tests.fixtures.kafka import Produce, TopicFactory
from tests.helpers import events

INTERPRETERS = [
    p for p in os.environ.get("KAFKA_ETL_INSTALLED_PYTHONS", sys.executable).split(os.pathsep) if p
]

# Runs the CLI in-process so that sys.modules shows what one `kafka-etl run` imported.
RUN_CLI = """
import json, sys
from pipelines.cli import main
code = main(sys.argv[2:])
loaded = sorted({name.split(".")[0] for name in sys.modules})
with open(sys.argv[1], "w") as out:
    json.dump({"code": code, "modules": loaded}, out)
sys.exit(code)
"""


def _run_cli(python: str, cwd: Path, *args: str) -> tuple[subprocess.CompletedProcess[str], dict]:
    env = {k: v for k, v in os.environ.items() if k != "PYTHONPATH"}
    report = cwd / "modules.json"
    report.unlink(missing_ok=True)
    proc = subprocess.run(
        [python, "-c", RUN_CLI, str(report), *args],
        cwd=cwd,  # not the repository: the installed package is what gets imported
        env={**env, "COLUMNS": "200"},
        capture_output=True,
        text=True,
        timeout=300,
        check=False,
    )
    return proc, (json.loads(report.read_text()) if report.exists() else {})


def _has(python: str, module: str) -> bool:
    probe = f"import importlib.util as u, sys; sys.exit(0 if u.find_spec({module!r}) else 1)"
    return subprocess.run([python, "-c", probe], check=False, timeout=60).returncode == 0


@pytest.mark.parametrize("python", INTERPRETERS)
def test_installed_cli_loads_json_into_duckdb_without_dagster(
    python: str, tmp_path: Path, kafka_bootstrap: str, topic_factory: TopicFactory, produce: Produce
) -> None:
    topic = topic_factory(2)
    produce(topic, events(0, 300), keys=[str(i % 2) for i in range(300)])
    pipelines = {
        "ev": {"topic": topic, "target": "duckdb:///warehouse.duckdb", "table": "ev"},
        "pg": {
            "topic": topic,
            "target": "postgresql+psycopg://u:p@127.0.0.1:9/db",
            "table": "ev",
        },
    }
    config = tmp_path / "pipelines.yaml"
    document = {"kafka": {"bootstrap.servers": kafka_bootstrap}, "pipelines": pipelines}
    config.write_text(yaml.safe_dump(document, sort_keys=False), encoding="utf-8")

    proc, report = _run_cli(python, tmp_path, "-c", str(config), "run", "ev", "--json")
    assert proc.returncode == 0, proc.stderr
    assert json.loads(proc.stdout)["rows"] == 300
    # Read with the install's own DuckDB: another version may not read its storage format.
    count = (
        "import duckdb, sys; con = duckdb.connect(sys.argv[1], read_only=True); "
        "print(con.execute('SELECT count(*) FROM ev').fetchone()[0])"
    )
    counted = subprocess.run(
        [python, "-c", count, str(tmp_path / "warehouse.duckdb")],
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
    )
    assert counted.stdout.strip() == "300", counted.stderr
    assert "dagster" not in report["modules"], "a CLI run imported Dagster"

    if not _has(python, "psycopg"):
        proc, _ = _run_cli(python, tmp_path, "-c", str(config), "run", "pg")
        assert proc.returncode == 1
        lines = proc.stderr.strip().splitlines()
        assert lines == [
            "kafka-etl: error: target postgresql+psycopg://u:***@127.0.0.1:9/db needs the "
            "'postgres' extra: pip install 'kafka-etl[postgres]'"
        ], proc.stderr
    if not _has(python, "dagster"):
        imported = subprocess.run(
            [python, "-c", "import dagster_project"],
            cwd=tmp_path,
            capture_output=True,
            text=True,
            timeout=60,
            check=False,
        )
        assert imported.returncode != 0
        last = imported.stderr.strip().splitlines()[-1]
        assert last.endswith("needs the 'dagster' extra: pip install 'kafka-etl[dagster]'"), last
