"""Broken and hostile pipelines files, each through the real CLI: ``kafka-etl -c FILE validate``
ends with exactly one line on stderr naming the file (and the pipeline and field, where there
is one), exit 1, no traceback, in bounded CPU time and bounded memory. No broker needed."""

from __future__ import annotations

import os
import resource
import subprocess
import sys
from collections.abc import Callable
from pathlib import Path

import pytest
import yaml

from tests.helpers import cli

HEAD = "kafka:\n  bootstrap.servers: 127.0.0.1:9\n"
PIPELINE = "  a:\n    topic: events\n    target: duckdb:///w.duckdb\n    table: a\n"
GOOD = HEAD + "pipelines:\n" + PIPELINE
MEMORY_LIMIT = 1_500_000_000  # address space of the CLI process
CPU_SECONDS = 2.0
# PyYAML without libyaml (built from source where its headers were missing) composes a 1 MB file
# about three times slower; the product's bounds (1 MB, 100,000 nodes) keep that linear and the
# bound here scales with it rather than goes. Both loaders are tested on every install.
PURE_CPU_SECONDS = 6.0
LIBYAML = hasattr(yaml, "CSafeLoader")
# Where pure-Python PyYAML says something else: it recurses, so deep nesting is a RecursionError
# with no line to name.
PURE_EXPECTED = {"50000-deep": "nesting too deep for a pipelines file"}
# The heaviest files, and the syntax errors whose messages come from the parser itself.
PURE_CASES = {
    "900-kb-file",
    "nodes",
    "50000-deep",
    "100-deep",
    "billion-laughs",
    "merge-key-bomb",
    "cycle",
    "two-documents",
    "tab-indent",
    "bad-yaml",
    "unclosed",
}
# The CLI with PyYAML's libyaml binding hidden: ``yaml`` then falls back to pure Python.
WITHOUT_LIBYAML = (
    "import sys; sys.modules['yaml._yaml'] = None; sys.argv[0] = 'kafka-etl'; "
    "import yaml; assert not hasattr(yaml, 'CSafeLoader'); "
    "from pipelines.cli import main; sys.exit(main())"
)

Content = bytes | str | Callable[[Path], Path]


def with_field(line: str) -> str:
    """The good file with one more line in pipeline ``a``."""
    return GOOD + f"    {line}\n"


def with_kafka(line: str, *, pipeline: bool = False) -> str:
    if pipeline:
        return GOOD + f"    kafka:\n      {line}\n"
    return HEAD + f"  {line}\n" + "pipelines:\n" + PIPELINE


def billion_laughs() -> str:
    lines = ['a0: &a0 ["lol","lol","lol","lol","lol","lol","lol","lol","lol"]']
    for i in range(1, 10):
        lines.append(f"a{i}: &a{i} [{', '.join([f'*a{i - 1}'] * 9)}]")
    return HEAD + "x:\n" + "".join(f"  {line}\n" for line in lines) + "pipelines:\n" + PIPELINE


def merge_key_bomb() -> str:
    lines = ["m0: &m0 {k0: 1, k1: 2, k2: 3, k3: 4, k4: 5, k5: 6, k6: 7, k7: 8, k8: 9}"]
    for i in range(1, 10):
        lines.append(f"m{i}: &m{i} {{<<: [{', '.join([f'*m{i - 1}'] * 9)}]}}")
    return HEAD + "x:\n" + "".join(f"  {line}\n" for line in lines) + "pipelines:\n" + PIPELINE


def five_megabytes() -> str:
    """About 5 MB of valid pipelines, then one with a bad mode."""
    body = "    topic: events\n    target: duckdb:///w.duckdb\n    table: t{0}\n"
    parts = [HEAD, "pipelines:\n"]
    size, i = 0, 0
    while size < 5 * 1024 * 1024:
        part = f"  p{i}:\n" + body.format(i) + f"    description: {'d' * 150}\n"
        parts.append(part)
        size += len(part)
        i += 1
    parts.append("  last:\n" + body.format("last") + "    mode: merge\n")
    return "".join(parts)


def directory(tmp_path: Path) -> Path:
    path = tmp_path / "pipelines.yaml"
    path.mkdir()
    return path


def symlink_loop(tmp_path: Path) -> Path:
    path = tmp_path / "pipelines.yaml"
    path.symlink_to(path)
    return path


def unreadable(tmp_path: Path) -> Path:
    path = tmp_path / "pipelines.yaml"
    path.write_text(GOOD, encoding="utf-8")
    path.chmod(0)
    return path


def eleven_megabytes(tmp_path: Path) -> Path:
    path = tmp_path / "pipelines.yaml"
    path.write_text(GOOD + "# " + "x" * (11 * 1024 * 1024) + "\n", encoding="utf-8")
    return path


ROOT = os.geteuid() == 0
CASES: list[object] = [
    # -- bytes and encodings
    pytest.param(
        GOOD.replace("events", "caf\xe9").encode("latin-1"), "line 5: not UTF-8", id="latin-1"
    ),
    pytest.param(GOOD.encode("utf-16"), "UTF-16 or UTF-32 text", id="utf-16"),
    pytest.param(GOOD.encode("utf-16-be"), "UTF-16 or UTF-32 text", id="utf-16-without-bom"),
    pytest.param(GOOD.replace("table: a", "table: a\x00b").encode(), "line 7:", id="nul-byte"),
    pytest.param(eleven_megabytes, "larger than 1,024 KB", id="11-mb-file"),
    pytest.param(five_megabytes(), "larger than 1,024 KB", id="5-mb-file"),
    pytest.param(
        five_megabytes()[: 900 * 1024].rsplit("\n  p", 1)[0] + "\n    mode: merge\n",
        "field 'mode'",
        id="900-kb-file",
    ),
    pytest.param(
        HEAD + "x: [" + "1," * 300_000 + "1]\npipelines: {}\n", "more than 100,000", id="nodes"
    ),
    # -- YAML structure
    pytest.param("", "the file is empty", id="empty-file"),
    pytest.param("# only a comment\n", "the file is empty", id="only-a-comment"),
    pytest.param("- kafka\n- pipelines\n", "top level: expected a mapping", id="top-level-list"),
    pytest.param("just text\n", "top level: expected a mapping", id="top-level-scalar"),
    pytest.param(GOOD + "---\n" + GOOD, "line 8:", id="two-documents"),
    pytest.param(GOOD.replace("    table", "\ttable"), "tab", id="tab-indent"),
    pytest.param(GOOD.replace("pipelines:\n", "pipelines: [\n"), "line", id="bad-yaml"),
    pytest.param("kafka: " + "[" * 50_000 + "]" * 50_000 + "\n", "line 1:", id="50000-deep"),
    pytest.param(
        HEAD + "x: " + "[" * 100 + "]" * 100 + "\npipelines: {}\n", "deeper than 64", id="100-deep"
    ),
    pytest.param(billion_laughs(), "aliases expand to more than", id="billion-laughs"),
    pytest.param(merge_key_bomb(), "aliases expand to more than", id="merge-key-bomb"),
    pytest.param(HEAD + "x: &a [1, *a]\npipelines: {}\n", "refers to the collection", id="cycle"),
    pytest.param(
        GOOD + "  a:\n    topic: other\n",
        "line 8: pipeline 'a' is defined twice (first at line 4)",
        id="dup-pipeline",
    ),
    pytest.param(
        with_field("topic: again"), "pipeline 'a', field 'topic': given twice", id="dup-field"
    ),
    pytest.param(
        GOOD + "1: x\n",
        "top level: key 1 is not a string (YAML reads an int; quote it)",
        id="int-key",
    ),
    pytest.param(GOOD + "? [a]\n: x\n", "a key is a list", id="list-key"),
    pytest.param(with_field("yes: 1"), "key yes is not a string (YAML reads a bool", id="bool-key"),
    pytest.param(
        GOOD + "x: !!python/object/apply:os.system ['echo pwned']\n",
        "could not determine a constructor",
        id="python-tag",
    ),
    pytest.param(with_field(f"batch_max_rows: {'9' * 5000}"), "line 8: cannot read", id="huge-int"),
    pytest.param(with_field("description: 2026-13-45"), "as timestamp (month", id="bad-date"),
    pytest.param(with_field("include_headers: !!bool maybe"), "'maybe' as bool", id="bad-tag"),
    pytest.param(
        with_field(f'description: "{"x" * 500_000}'),
        "line 9: while scanning a quoted scalar, found unexpected end",
        id="long-line",
    ),
    # -- the pipelines mapping and its bodies
    pytest.param(HEAD + "pipelines: [a, b]\n", "field 'pipelines': expected a mapping", id="list"),
    pytest.param(HEAD + "pipelines:\n  a: [1, 2]\n", "pipeline 'a': expected a mapping", id="body"),
    pytest.param(
        GOOD.replace("  a:", "  my pipeline:"), "field '(name)': a pipeline name", id="name"
    ),
    pytest.param(
        GOOD + PIPELINE.replace("  a:", "  _a_:"),
        "field 'pipelines': 'a' and '_a_' both become the Dagster name 'a'",
        id="dagster-name",
    ),
    pytest.param(
        with_field("tabel: typo"), "pipeline 'a', field 'tabel': unknown field", id="typo"
    ),
    # -- files and environment
    pytest.param(directory, "cannot read pipelines file (Is a directory)", id="directory"),
    pytest.param(None, "cannot read pipelines file (No such file or directory)", id="missing"),
    pytest.param(symlink_loop, "cannot read pipelines file (Too many levels", id="symlink-loop"),
    pytest.param(
        unreadable,
        "cannot read pipelines file (Permission denied)",
        id="unreadable",
        marks=pytest.mark.skipif(ROOT, reason="root reads any file"),
    ),
    pytest.param(
        GOOD.replace("127.0.0.1:9", "${BOOT"), "'${BOOT' starts no ${VAR} reference", id="unclosed"
    ),
    pytest.param(
        GOOD.replace("127.0.0.1:9", "${KAFKA_ETL_NOT_SET}"),
        "field 'kafka.bootstrap.servers': environment variable KAFKA_ETL_NOT_SET is not set",
        id="env-missing",
    ),
    # -- what run or Dagster would refuse later
    pytest.param(
        with_kafka("foo.bar: 1"), "field 'kafka': No such configuration property", id="rdkafka-key"
    ),
    pytest.param(
        with_kafka("fetch.wait.max: 5", pipeline=True),
        "pipeline 'a', field 'kafka': No such configuration property: \"fetch.wait.max\"",
        id="rdkafka-key-in-pipeline",
    ),
    pytest.param(
        with_kafka("socket.timeout.ms: abc"),
        'Invalid value for configuration property "socket.timeout.ms"',
        id="rdkafka-bad-value",
    ),
    pytest.param(
        with_kafka("socket.timeout.ms: 1", pipeline=True),
        "outside allowed range 10..300000",
        id="rdkafka-out-of-range",
    ),
    pytest.param(
        with_kafka("ssl: {ca: x}"), "setting 'ssl' is dict; give a string", id="rdkafka-mapping"
    ),
    pytest.param(
        with_kafka("error_cb: print"), "not a setting a pipelines file can give", id="callback"
    ),
    pytest.param(
        GOOD.replace("127.0.0.1:9", "''"), "'bootstrap.servers' is required", id="no-bootstrap"
    ),
    pytest.param(
        GOOD.replace("duckdb:///w.duckdb", "oracle://u:pw@db/x"),
        "field 'target': 'oracle://u:***@db/x': unknown database 'oracle'",
        id="oracle-url",
    ),
    pytest.param(
        GOOD.replace("duckdb:///w.duckdb", "foo://x"), "unknown database 'foo'", id="foo-url"
    ),
    pytest.param(
        GOOD.replace("duckdb:///w.duckdb", "warehouse.duckdb"),
        "field 'target': not a database URL",
        id="no-url",
    ),
    pytest.param(
        GOOD.replace("duckdb:///w.duckdb", "postgresql+nosuch://h/db"),
        "unknown driver 'postgresql+nosuch'",
        id="unknown-driver",
    ),
    pytest.param(
        GOOD.replace("duckdb:///w.duckdb", "mysql+mysqldb://h/db"),
        "the driver for 'mysql+mysqldb' is not installed",
        id="driver-not-installed",
    ),
    pytest.param(
        GOOD.replace("duckdb:///w.duckdb", "duckdb:///w.duckdb?threads=many"),
        "option threads='many'",
        id="duckdb-option",
    ),
    pytest.param(
        GOOD.replace("duckdb:///w.duckdb", "postgresql+psycopg://h/db").replace(
            "table: a", f"table: {'t' * 64}"
        ),
        "pipeline 'a', field 'table': table name 'tttt",
        id="table-name-too-long",
    ),
    pytest.param(
        GOOD.replace("duckdb:///w.duckdb", "sqlite:///w.db") + "    schema: s\n",
        "pipeline 'a', field 'schema': not supported for sqlite targets",
        id="sqlite-schema",
    ),
    pytest.param(
        GOOD.replace("topic: events", "topic: my events!"), "not a Kafka topic name", id="topic"
    ),
    pytest.param(
        GOOD.replace("topic: events", f"topic: {'t' * 250}"), "not a Kafka topic name", id="long"
    ),
    pytest.param(GOOD.replace("topic: events", "topic: '..'"), "not a Kafka topic", id="dotdot"),
    pytest.param(
        with_field("schedule: '99 99 * * *'"), "minute '99' is not in 0-59", id="cron-range"
    ),
    pytest.param(with_field("schedule: '* * * * * *'"), "five fields", id="cron-seconds"),
    pytest.param(with_field("schedule: '0 0 30 2 *'"), "February has no day 30", id="cron-feb"),
    pytest.param(
        with_field("schedule_timezone: Mars/Olympus_Mons"),
        "field 'schedule_timezone': unknown time zone 'Mars/Olympus_Mons'",
        id="timezone",
    ),
    pytest.param(
        with_field("owners: [somebody]"),
        "field 'owners': 'somebody' is neither an email address nor 'team:<name>'",
        id="owner",
    ),
    pytest.param(with_field("lock_timeout: .inf"), "field 'lock_timeout'", id="infinite-timeout"),
    # -- foot-guns
    pytest.param(
        GOOD.replace("duckdb:///w.duckdb", "'duckdb:///:memory:'"), "in-memory", id="duckdb-memory"
    ),
    pytest.param(
        GOOD.replace("duckdb:///w.duckdb", "duckdb://"), "in-memory database", id="duckdb-no-file"
    ),
    pytest.param(
        GOOD.replace("duckdb:///w.duckdb", "sqlite://"), "in-memory database", id="sqlite-memory"
    ),
    pytest.param(
        with_kafka("isolation.level: read_uncommitted", pipeline=True),
        "would load the messages of aborted transactions",
        id="read-uncommitted",
    ),
    pytest.param(
        with_kafka("group.id: shared"),
        "field 'kafka': setting 'group.id' would replace every pipeline's consumer group",
        id="file-group-id",
    ),
    pytest.param(
        with_kafka("group.id: mine", pipeline=True),
        "pipeline 'a', field 'kafka': setting 'group.id' would replace the pipeline's",
        id="pipeline-group-id",
    ),
]


def _memory_limit() -> None:
    resource.setrlimit(resource.RLIMIT_AS, (MEMORY_LIMIT, MEMORY_LIMIT))


def _write(tmp_path: Path, content: Content | None) -> Path:
    path = tmp_path / "pipelines.yaml"
    if callable(content):
        path = content(tmp_path)
    elif isinstance(content, bytes):
        path.write_bytes(content)
    elif isinstance(content, str):
        path.write_text(content, encoding="utf-8")
    return path


def _check(
    run: Callable[[], subprocess.CompletedProcess[str]], path: Path, expected: str, bound: float
) -> None:
    before = resource.getrusage(resource.RUSAGE_CHILDREN)
    result = run()
    after = resource.getrusage(resource.RUSAGE_CHILDREN)
    cpu = (after.ru_utime - before.ru_utime) + (after.ru_stime - before.ru_stime)

    lines = result.stderr.splitlines()
    assert len(lines) == 1, result.stderr[-3000:]
    assert "Traceback" not in result.stderr and "MemoryError" not in result.stderr
    assert lines[0].startswith(f"kafka-etl: error: {path}: "), lines[0][:500]
    assert expected in lines[0], lines[0][:500]
    assert len(lines[0]) < 500, lines[0][:500]
    assert result.returncode == 1
    assert cpu < bound, f"{cpu:.2f}s of CPU"


def _case_id(request: pytest.FixtureRequest) -> str:
    return request.node.callspec.id


@pytest.mark.parametrize(("content", "expected"), CASES)
def test_a_broken_or_hostile_file_is_one_line_exit_1_bounded(
    tmp_path: Path, content: Content | None, expected: str, request: pytest.FixtureRequest
) -> None:
    path = _write(tmp_path, content)
    if not LIBYAML:
        expected = PURE_EXPECTED.get(_case_id(request), expected)
    bound = CPU_SECONDS if LIBYAML else PURE_CPU_SECONDS
    _check(
        lambda: cli(path, "validate", timeout=30, preexec_fn=_memory_limit), path, expected, bound
    )


@pytest.mark.parametrize(
    ("content", "expected"),
    [case for case in CASES if getattr(case, "id", None) in PURE_CASES],
)
def test_without_libyaml_the_worst_files_are_still_one_line_bounded(
    tmp_path: Path, content: Content | None, expected: str, request: pytest.FixtureRequest
) -> None:
    path = _write(tmp_path, content)
    expected = PURE_EXPECTED.get(_case_id(request), expected)
    command = [sys.executable, "-c", WITHOUT_LIBYAML, "-c", str(path), "validate"]

    def run() -> subprocess.CompletedProcess[str]:
        return subprocess.run(
            command,
            capture_output=True,
            text=True,
            timeout=30,
            check=False,
            env={**os.environ, "COLUMNS": "200"},
            preexec_fn=_memory_limit,
        )

    _check(run, path, expected, PURE_CPU_SECONDS)


def test_the_good_file_of_these_cases_is_valid(tmp_path: Path) -> None:
    path = tmp_path / "pipelines.yaml"
    path.write_text(GOOD, encoding="utf-8")
    result = cli(path, "validate", preexec_fn=_memory_limit)
    assert result.returncode == 0, result.stderr
    assert result.stderr == ""
