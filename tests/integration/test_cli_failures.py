"""Every `kafka-etl` command against the ways a user gets it wrong or meets a broken world: each
ends as one `kafka-etl: error: ...` line (plus a `--help` hint for a usage mistake), with the
exit code that tells a retry from a dead end, and never a traceback."""

from __future__ import annotations

import shutil
import subprocess
import sys
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from pathlib import Path

import yaml

from tests.fixtures.kafka import Produce, TopicFactory
from tests.helpers import cli, events

COMMANDS: dict[str, tuple[str, ...]] = {
    "validate": ("validate",),
    "run": ("run", "NAME"),
    "status": ("status", "NAME"),
    "schema": ("schema", "NAME"),
    "reset": ("reset", "NAME", "--to", "earliest", "--yes"),
    "backfill": ("backfill", "NAME", "--partition", "0", "--from-offset", "0", "--to-offset", "5"),
    "dlq": ("dlq", "NAME"),
}
KAFKA_COMMANDS = ("run", "status", "reset", "backfill")  # the ones that ask the brokers


@dataclass(frozen=True)
class Case:
    args: tuple[str, ...]
    code: int
    says: str  # in the first stderr line
    config: str = "pipelines.yaml"
    errors: int = 1  # error lines: one per failure met (status reports each broken pipeline)

    @property
    def lines(self) -> int:
        return self.errors + (self.code == 2)  # a usage mistake adds "Try '... --help'."


def _with(command: str, name: str) -> tuple[str, ...]:
    return tuple(name if a == "NAME" else a for a in COMMANDS[command])


def _cases() -> list[Case]:
    cases: list[Case] = []
    for command in COMMANDS:
        cases.append(
            Case(_with(command, "ev"), 1, "cannot read pipelines file", config="missing.yaml")
        )
        cases.append(Case((command, "--bogus"), 2, "no such option: --bogus"))
        if command == "validate":
            continue
        cases.append(Case(_with(command, "nope"), 1, "no pipeline named 'nope'"))
        cases.append(Case(_with(command, "pgdown"), 75, "port 1 failed: Connection refused"))
        if command != "status":  # every pipeline, by default
            cases.append(Case((command,), 2, "missing argument"))
        if command in KAFKA_COMMANDS:
            cases.append(Case(_with(command, "gone"), 1, "is not available"))
    cases += [
        Case(("runn", "ev"), 2, "no such command 'runn'"),
        Case(("run", "ev", "other"), 2, "unexpected extra argument"),
        Case(("schema", "ev", "other"), 2, "unexpected extra argument"),
        Case(("dlq", "ev", "--limit", "0"), 2, "invalid value for '--limit'"),
        Case(("dlq", "ev", "--limit", "many"), 2, "invalid value for '--limit'"),
        Case(("backfill", "ev", "--partition", "x"), 2, "invalid value for '--partition'"),
        Case(("backfill", "ev", "--partition", "0"), 2, "needs --from-offset and --to-offset"),
        Case(("backfill", "ev", "--from", "yesterday", "--to", "today"), 2, "ISO-8601"),
        Case(("reset", "ev"), 2, "give one of --to or --to-offset"),
        Case(("reset", "ev", "--to-offset", "3"), 2, "--to-offset needs --partition"),
        Case(("reset", "ev", "--partition", "0", "--to-offset", "-1"), 2, "'--to-offset'"),
        Case(("reset", "ev", "--to", "2026-11-01T00:00"), 2, "give a time zone"),
        Case(("reset", "ev", "--partition", "9", "--to-offset", "0"), 1, "has no partition 9"),
        Case(("reset", "ev", "--partition", "0", "--to-offset", "99"), 1, "beyond the end"),
        Case(("reset", "ev", "--to", "earliest"), 1, "refused without --yes"),
        Case(("run", "badtarget"), 1, "cannot create its folder"),
        # All pipelines: one line per broken one; a terminal failure (1) is worse than a transient
        # one (75), since a retry cannot mend everything.
        Case(("status",), 1, "status badtarget: duckdb", errors=3),
        Case(("validate",), 1, "field", config="invalid.yaml"),
        Case(("-c",), 2, "requires an argument"),
    ]
    return cases


def _check(result: subprocess.CompletedProcess[str], case: Case) -> str | None:
    """What is wrong with one command's ending, or None."""
    lines = result.stderr.strip().splitlines()
    if "Traceback" in result.stdout + result.stderr:
        return "a traceback"
    if result.returncode != case.code:
        return f"exit {result.returncode}, not {case.code}"
    if len(lines) != case.lines:
        return f"{len(lines)} stderr lines, not {case.lines}"
    if not lines[0].startswith("kafka-etl: error: ") or case.says not in lines[0]:
        return f"first line does not say {case.says!r}"
    if case.lines == 2 and not (lines[1].startswith("Try 'kafka-etl") and "--help'" in lines[1]):
        return "no --help hint"
    return None


def _setup(directory: Path, bootstrap: str, topic: str) -> None:
    target = "duckdb:///warehouse.duckdb"
    pipelines = {
        "ev": {"topic": topic, "target": target, "table": "ev"},
        "gone": {"topic": f"{topic}-never-created", "target": target, "table": "gone"},
        "pgdown": {
            "topic": topic,
            "target": "postgresql+psycopg://kafka_etl:secret@127.0.0.1:1/nowhere",
            "table": "ev",
        },
        "badtarget": {"topic": topic, "target": "duckdb:////proc/no/such/dir/w.duckdb"},
    }
    pipelines["badtarget"]["table"] = "ev"
    document = {"kafka": {"bootstrap.servers": bootstrap}, "pipelines": pipelines}
    (directory / "pipelines.yaml").write_text(yaml.safe_dump(document), encoding="utf-8")
    invalid = {"kafka": {"bootstrap.servers": bootstrap}, "pipelines": {"ev": {"topic": topic}}}
    (directory / "invalid.yaml").write_text(yaml.safe_dump(invalid), encoding="utf-8")


def _report(directory: Path, cases: list[Case]) -> list[str]:
    """Run the cases, four at a time, each in its own copy of ``directory``: two commands on
    one DuckDB file would wait for each other (and rightly say so)."""

    def one(numbered: tuple[int, Case]) -> str | None:
        number, case = numbered
        own = shutil.copytree(directory, directory.parent / f"{directory.name}-{number}")
        result = cli(own / case.config, *case.args, timeout=120)
        problem = _check(result, case)
        if problem is None:
            return None
        return f"{' '.join(case.args)}: {problem}\n  stdout: {result.stdout[-400:]!r}\n" + (
            f"  stderr: {result.stderr[-1200:]!r}"
        )

    with ThreadPoolExecutor(max_workers=4) as pool:
        return [p for p in pool.map(one, enumerate(cases)) if p is not None]


def test_every_command_fails_in_one_line(
    tmp_path: Path, kafka_bootstrap: str, topic_factory: TopicFactory, produce: Produce
) -> None:
    topic = topic_factory(1)
    produce(topic, events(0, 20))
    _setup(tmp_path, kafka_bootstrap, topic)
    assert cli(tmp_path / "pipelines.yaml", "run", "ev").returncode == 0  # reset has rows to ask
    problems = _report(tmp_path, _cases())
    assert not problems, f"{len(problems)} commands ended badly:\n" + "\n".join(problems)


def test_every_command_with_the_broker_down_fails_in_one_line(tmp_path: Path) -> None:
    """Nothing listens on 127.0.0.1:1: each command that asks Kafka ends in one line, exit 75,
    librdkafka's own lines kept off stderr."""
    _setup(tmp_path, "127.0.0.1:1", "events")
    cases = [Case(_with(command, "ev"), 75, "kafka") for command in KAFKA_COMMANDS]
    problems = _report(tmp_path, cases)
    assert not problems, f"{len(problems)} commands ended badly:\n" + "\n".join(problems)


def test_bare_kafka_etl_prints_help_and_exits_2() -> None:
    result = subprocess.run(
        [sys.executable, "-m", "pipelines.cli"],
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
    )
    assert result.returncode == 2, result.stderr
    assert "Traceback" not in result.stdout + result.stderr
    assert "Usage" in result.stdout + result.stderr and "reset" in result.stdout + result.stderr
