"""``kafka-etl``: run, inspect and reset pipelines from the command line.

Every expected failure ends as one line on stderr and a non-zero exit; tracebacks are for bugs.
"""

from __future__ import annotations

import importlib.util
import json
import logging
import os
import sys
import time
from datetime import datetime
from pathlib import Path
from typing import TYPE_CHECKING, Annotated, Any

import typer
from rich.console import Console
from rich.markup import escape
from rich.table import Table

from kafka_etl.errors import KafkaEtlError, TerminalError
from pipelines import exits
from pipelines.ranges import CLI_NAMES, RangeError, parse_timestamp, replay_range
from pipelines.shards import Shard, ShardError, check_shard, parse_shard, shard_of

# The pipelines file, the runner (SQLAlchemy, pyarrow, librdkafka) and the progress bar are
# imported by the commands that use them: `--help` and a usage mistake answer at once.
if TYPE_CHECKING:
    from rich.progress import Progress

    from connector.client import ReadPlan
    from connector.lag import PartitionLag
    from pipelines.config import Pipeline, Project
    from pipelines.runner import Progress as RunProgress
    from pipelines.runner import ResetMove, ResetTarget, RunResult

app = typer.Typer(
    add_completion=False,
    no_args_is_help=True,
    pretty_exceptions_enable=False,
    help="Exactly-once loads from Kafka topics into DuckDB and SQL databases.",
)
out = Console()
err = Console(stderr=True)
_PROGRESS_AFTER = 2.0  # seconds before a progress bar appears

ConfigOption = Annotated[
    Path,
    typer.Option(
        "--config",
        "-c",
        envvar="KAFKA_ETL_CONFIG",
        help="Pipelines YAML file.",
        show_default=True,
    ),
]


def _parse_shard(text: str | None) -> Shard | None:
    if text is None:
        return None
    try:
        return parse_shard(text)
    except ShardError as exc:
        raise typer.BadParameter(str(exc)) from None


ShardOption = Annotated[
    Shard | None,
    typer.Option(
        "--shard",
        metavar="K/N",
        parser=_parse_shard,
        help="Load only shard K of N (numbered from 0): the partitions p with p % N == K.",
    ),
]


def _shard_of_pipeline(
    ctx: typer.Context, project: Project, name: str, shard: Shard | None
) -> None:
    """A shard of another split than the pipeline's ``shards: N`` is a usage error."""
    if shard is None:
        return
    try:
        check_shard(shard, project.pipeline(name).declared_shards, name)
    except ShardError as exc:
        raise typer.BadParameter(str(exc), ctx=ctx, param_hint="'--shard'") from None


TopicOption = Annotated[
    str | None,
    typer.Option(
        "--topic", help="A multi-topic pipeline: this topic only (default: every topic it reads)."
    ),
]


VerboseOption = Annotated[
    bool, typer.Option("--verbose", "-v", help="Log progress and librdkafka's lines to stderr.")
]


@app.callback()
def _root(
    ctx: typer.Context,
    config: ConfigOption = Path("pipelines.yaml"),
    verbose: VerboseOption = False,
) -> None:
    ctx.obj = config
    ctx.meta["kafka_etl.verbose"] = verbose
    if verbose:
        logging.basicConfig(
            level=logging.INFO, stream=sys.stderr, format="%(asctime)s %(name)s: %(message)s"
        )
        logging.getLogger("kafka_etl.librdkafka").setLevel(logging.DEBUG)


def _verbose(ctx: typer.Context) -> bool:
    return bool(ctx.meta.get("kafka_etl.verbose", False))


def _project(ctx: typer.Context) -> Project:
    from pipelines.config import load_project

    return load_project(ctx.obj)


@app.command()
def validate(ctx: typer.Context) -> None:
    """Check the pipelines file and print what it defines."""
    project = _project(ctx)
    for name, p in sorted(project.pipelines.items()):
        line = f"{name}: {p.topics_shown} -> {p.safe_target} table {p.table} ({p.mode}, {p.format})"
        out.print(escape(line))
    out.print(escape(f"{project.source}: {len(project.pipelines)} pipeline(s) valid"))


@app.command()
def run(
    ctx: typer.Context,
    name: Annotated[str, typer.Argument(help="Pipeline to run.")],
    as_json: Annotated[bool, typer.Option("--json", help="Print the summary as JSON.")] = False,
    shard: ShardOption = None,
    topic: TopicOption = None,
) -> None:
    """Load everything up to the current high watermarks, exactly once (with --shard, only
    that shard's partitions; the other shards' checkpoints are left alone). A multi-topic
    pipeline loads each of its topics (with --topic, that one), a topic after the other."""
    from pipelines.runner import run_pipeline
    from pipelines.summary import loaded_offsets

    project = _project(ctx)
    _shard_of_pipeline(ctx, project, name, shard)
    if project.pipeline(name).multi_topic:
        _run_members(ctx, project, name, as_json, shard, topic)
        return
    bar = _LazyBar(enabled=not as_json)
    try:
        result = run_pipeline(
            project, name, shard=shard, on_start=bar.start, on_progress=bar.update
        )
    finally:
        bar.stop()
    _report_to_dagster(project, name, result)
    if as_json:
        out.print_json(json.dumps(_summary(result)))
        return
    ranges = loaded_offsets(result.ranges, verbose=_verbose(ctx))
    out.print(
        f"{_who(result)}: {result.rows:,} rows into {escape(result.table)} in"
        f" {result.seconds:.2f}s ({result.rows_per_second:,.0f} rows/s); offsets {escape(ranges)}"
    )
    if result.tombstones:
        out.print(f"  {result.tombstones:,} tombstones (null values) skipped")
    if result.dead_lettered:
        out.print(
            f"  [yellow]{result.dead_lettered:,} messages dead-lettered[/] into"
            f" {escape(result.table)}__dlq (see `kafka-etl dlq {result.pipeline}`)"
        )
    if result.columns_added:
        out.print(escape(f"  new columns: {', '.join(result.columns_added)}"))
    for gap in result.gaps:
        out.print(
            f"  [yellow]gap[/]: {result.topic}/{gap.partition} offsets"
            f" [{gap.expected},{gap.log_start}) were deleted before loading ({gap.lost:,} lost)"
        )
    lag = f"{sum(result.lag_after.values()):,}" if result.lag_after else "unknown"
    out.print(f"  lag after run: {lag}; table rows: {_count(result.table_rows)}")


def _run_members(
    ctx: typer.Context,
    project: Project,
    name: str,
    as_json: bool,
    shard: Shard | None,
    topic: str | None,
) -> None:
    """``run`` of a multi-topic pipeline: one line of totals, ``-v`` one line per topic."""
    from pipelines.runner import run_members
    from pipelines.summary import loaded_offsets

    done = run_members(project, name, shard=shard, topic=topic)
    for member, result in zip(done.members, done.results, strict=True):
        _report_to_dagster(project, member, result)
    if as_json:
        summary = {
            "pipeline": name,
            "shard": None if shard is None else str(shard),
            "topics": done.topics,
            "partitions": done.partitions,
            "rows": done.rows,
            "planning_seconds": round(done.planning_seconds, 3),
            "seconds": round(done.seconds, 3),
            "members": [_summary(r) for r in done.results],
        }
        out.print_json(json.dumps(summary))
        return
    who = name if shard is None else f"{name} (shard {shard})"
    tables = done.tables
    into = escape(tables[0]) if len(tables) == 1 else f"{len(tables):,} tables"
    out.print(
        f"{escape(who)}: {done.rows:,} rows from {done.topics:,} topic(s), {done.partitions:,}"
        f" partition(s) into {into} in {done.seconds:.2f}s ({done.rows_per_second:,.0f} rows/s;"
        f" topics listed in {done.planning_seconds:.2f}s)"
    )
    verbose = _verbose(ctx)
    for result in done.results:
        if verbose:
            ranges = loaded_offsets(result.ranges, verbose=True)
            out.print(
                escape(
                    f"  {result.topic} -> {result.table}: {result.rows:,} rows; offsets {ranges}"
                )
            )
        for gap in result.gaps:
            out.print(
                f"  [yellow]gap[/]: {escape(result.topic)}/{gap.partition} offsets"
                f" [{gap.expected},{gap.log_start}) were deleted before loading"
                f" ({gap.lost:,} lost)"
            )
        if result.dead_lettered:
            out.print(
                f"  [yellow]{result.dead_lettered:,} messages of {escape(result.topic)}"
                f" dead-lettered[/] into {escape(result.table)}__dlq"
            )
    # A topic's lag is unknown ({}) when the brokers did not answer after its last commit.
    known = all(r.lag_after for r in done.results)
    lag = f"{sum(sum(r.lag_after.values()) for r in done.results):,}" if known else "unknown"
    out.print(f"  lag after run: {lag}")


@app.command()
def status(
    ctx: typer.Context,
    names: Annotated[list[str] | None, typer.Argument(help="Pipelines (default: all).")] = None,
    as_json: Annotated[bool, typer.Option("--json", help="Print a JSON list.")] = False,
) -> None:
    """Checkpoint, log start, high watermark and lag per pipeline and partition.

    A pipeline that cannot be inspected (its topic deleted, its database down) is one error
    line; the others are still shown, and the exit code is the worst one met."""
    from pipelines.runner import pipeline_status

    project = _project(ctx)
    reports: list[dict[str, Any]] = []
    worst = exits.OK
    for name in names or sorted(project.pipelines):
        report: dict[str, Any] = {"pipeline": name}
        try:
            pipeline = project.pipeline(name)
            report.update(topic=pipeline.topic, table=pipeline.table, shards=pipeline.shards)
            if pipeline.multi_topic:
                report.update(topic=pipeline.topics_shown)
                _member_status(project, name, report, as_json)
                reports.append(report)
                continue
            rows = pipeline_status(project, name)
        except KafkaEtlError as exc:
            worst = exits.worse(worst, exits.exit_code(exc))
            exits.error(f"status {name}: {exc}")
            reports.append({**report, "partitions": [], "lag": None, "error": str(exc)})
            continue
        lag = sum(s.lag for s in rows)
        shards = pipeline.shards
        partitions = [_partition_json(s, shards) for s in rows]
        reports.append({**report, "partitions": partitions, "lag": lag, "error": None})
        if not as_json:
            title = f"{name}: {pipeline.topic} -> {pipeline.table}"
            if shards > 1:
                title += f" ({shards} shards: partition p in shard p % {shards})"
            out.print(_status_table(title, rows, shards))
    if as_json:
        out.print_json(json.dumps(reports))
    if worst != exits.OK:
        raise typer.Exit(worst)


def _member_status(project: Project, name: str, report: dict[str, Any], as_json: bool) -> None:
    """``status`` of a multi-topic pipeline: one table, a row per topic and partition."""
    from pipelines.runner import members, pipeline_status

    pipeline = project.pipeline(name)
    shards = pipeline.shards
    rows = [(m, s) for m in members(project, name) for s in pipeline_status(project, m)]
    partitions = [
        {"topic": m.topic, "table": m.table, **_partition_json(s, shards)} for m, s in rows
    ]
    lag = sum(s.lag for _, s in rows)
    report.update(partitions=partitions, lag=lag, error=None)
    if as_json:
        return
    title = f"{name}: {pipeline.topics_shown} -> {pipeline.table}"
    if shards > 1:
        title += f" ({shards} shards: partition p of each topic in shard p % {shards})"
    table = Table(title=escape(title), title_justify="left")
    table.add_column("topic")
    table.add_column("table")
    sharded = shards > 1
    columns = ("partition", "shard") if sharded else ("partition",)
    for column in (*columns, "checkpoint", "log start", "high watermark", "lag"):
        table.add_column(column, justify="right")
    for m, s in rows:
        shard = (f"{shard_of(s.partition, shards)}/{shards}",) if sharded else ()
        table.add_row(
            escape(m.topic),
            escape(m.table),
            str(s.partition),
            *shard,
            "-" if s.position is None else f"{s.position:,}",
            f"{s.log_start:,}",
            f"{s.high_watermark:,}",
            f"{s.lag:,}",
        )
    topics = len({m.topic for m, _ in rows})
    blanks = ("",) * len(columns)
    table.add_row(f"total: {topics:,} topics", "", *blanks, "", "", f"{lag:,}", style="bold")
    out.print(table)


def _partition_json(s: PartitionLag, shards: int) -> dict[str, Any]:
    return {
        "partition": s.partition,
        "shard": shard_of(s.partition, shards),
        "checkpoint": s.position,
        "log_start": s.log_start,
        "high_watermark": s.high_watermark,
        "lag": s.lag,
    }


def _status_table(title: str, rows: list[PartitionLag], shards: int = 1) -> Table:
    """One row per partition; a shard column when the pipeline has more than one shard."""
    table = Table(title=escape(title), title_justify="left")
    sharded = shards > 1
    columns = ("partition", "shard") if sharded else ("partition",)
    for column in (*columns, "checkpoint", "log start", "high watermark", "lag"):
        table.add_column(column, justify="right")
    for s in rows:
        shard = (f"{shard_of(s.partition, shards)}/{shards}",) if sharded else ()
        table.add_row(
            str(s.partition),
            *shard,
            "-" if s.position is None else f"{s.position:,}",
            f"{s.log_start:,}",
            f"{s.high_watermark:,}",
            f"{s.lag:,}",
        )
    blanks = ("",) * (len(columns) - 1)
    total = f"{sum(s.lag for s in rows):,}"
    table.add_row("total", *blanks, "", "", "", total, style="bold")
    return table


@app.command()
def schema(
    ctx: typer.Context,
    name: Annotated[str, typer.Argument(help="Pipeline whose table to describe.")],
    topic: TopicOption = None,
) -> None:
    """The target table's current columns and the history of schema changes applied to it
    (a multi-topic pipeline: each of its tables, or that of --topic)."""
    from pipelines.runner import members

    project = _project(ctx)
    tables: dict[str, Pipeline] = {}
    for member in members(project, name, topic=topic):
        tables.setdefault(member.table, member)
    for pipeline in tables.values():
        _schema(name, project, pipeline)


def _schema(name: str, project: Project, pipeline: Pipeline) -> None:
    from pipelines.runner import pipeline_schema

    columns, history = pipeline_schema(project, pipeline)
    where = f"{pipeline.db_schema}.{pipeline.table}" if pipeline.db_schema else pipeline.table
    where = escape(where)
    if columns is None:
        out.print(f"{name}: table {where} does not exist yet (nothing loaded)")
    else:
        table = Table(title=f"{name}: table {where}", title_justify="left")
        table.add_column("column")
        table.add_column("type")
        for field in columns:
            table.add_row(escape(field.name), escape(str(field.type)))
        out.print(table)
    changes = Table(title=f"{name}: schema history", title_justify="left")
    for column in ("applied at", "change", "column", "old type", "new type", "first offsets"):
        changes.add_column(column)
    for change in history:
        changes.add_row(
            change.applied_at.isoformat(sep=" ", timespec="seconds"),
            escape(change.change),
            *(escape(text) for text in (change.column, change.old_type or "", change.new_type)),
            escape(change.first_offsets),
        )
    out.print(changes)


@app.command()
def reset(
    ctx: typer.Context,
    name: Annotated[str, typer.Argument(help="Pipeline to reset.")],
    to: Annotated[
        str | None, typer.Option("--to", help="earliest, latest or an ISO-8601 timestamp.")
    ] = None,
    partition: Annotated[
        int | None, typer.Option("--partition", min=0, help="Move this partition only.")
    ] = None,
    to_offset: Annotated[
        int | None,
        typer.Option("--to-offset", min=0, help="Offset to move --partition to (next to read)."),
    ] = None,
    dry_run: Annotated[
        bool, typer.Option("--dry-run", help="Show each move and the rows it would delete.")
    ] = False,
    yes: Annotated[bool, typer.Option("--yes", "-y", help="Delete rows without asking.")] = False,
    topic: TopicOption = None,
) -> None:
    """Move a pipeline's checkpoints. In append mode, rows at or after them are deleted in the
    same transaction, so the next run reloads them exactly once. A reset that deletes rows
    asks first on a terminal, and needs --yes otherwise."""
    from pipelines.runner import members

    if (to is None) == (to_offset is None):
        msg = "give one of --to or --to-offset"
        ctx.fail(msg)
    if to_offset is not None and partition is None:
        msg = "--to-offset needs --partition"
        ctx.fail(msg)
    target: ResetTarget = to_offset if to_offset is not None else _reset_target(ctx, to or "")
    from pipelines.runner import plan_reset, reset_pipeline

    project = _project(ctx)
    found = members(project, name, topic=topic)
    if partition is not None and len(found) > 1:
        msg = f"pipeline {name!r} reads several topics; --partition needs --topic"
        raise typer.BadParameter(msg, ctx=ctx, param_hint="'--topic'")
    planned = [(m, plan_reset(project, m, target, partition)) for m in found]
    moves = [move for _, some in planned for move in some]
    doomed = sum(m.rows for m in moves)
    table = ", ".join(dict.fromkeys(m.table for m in found)) or project.pipeline(name).table
    if dry_run:
        for m in moves:
            out.print(f"{name}: {_move(m)}, {m.rows:,} rows to delete")
        out.print(
            f"{name}: dry run, nothing changed; {doomed:,} rows would be deleted from {table}"
        )
        return
    if doomed and not yes:
        ask = f"{name}: delete {doomed:,} rows from {table} and move {len(moves)} checkpoint(s)?"
        if not sys.stdin.isatty():
            msg = (
                f"reset {name}: would delete {doomed:,} rows from {table}; refused without --yes"
                " (see them with --dry-run)"
            )
            raise TerminalError(msg)
        if not exits.confirm(ask):
            msg = f"reset {name}: not confirmed; nothing was changed"
            raise TerminalError(msg)
    multi = project.pipeline(name).multi_topic
    set_to: list[str] = []
    deleted = 0
    for member, some in planned:
        offsets, rows = reset_pipeline(project, member, target, partition, planned=some)
        deleted += rows
        at = f"{member.topic}/" if multi else ""
        set_to += [f"{at}{p}@{o}" for p, o in sorted(offsets.items())]
    moved = ", ".join(set_to) or "nothing (no topic)"
    out.print(escape(f"{name}: checkpoints set to {moved}; {deleted:,} rows deleted"))


def _move(m: ResetMove) -> str:
    start = "-" if m.checkpoint is None else f"{m.checkpoint:,}"
    where = f"{m.topic} " if m.topic else ""
    return escape(f"{where}partition {m.partition}: {start} -> {m.offset:,}")


@app.command()
def backfill(
    ctx: typer.Context,
    name: Annotated[str, typer.Argument(help="Pipeline to replay.")],
    since: Annotated[
        str | None,
        typer.Option("--from", help="ISO-8601 start (inclusive), e.g. 2026-11-01T00:00Z"),
    ] = None,
    until: Annotated[str | None, typer.Option("--to", help="ISO-8601 end (exclusive).")] = None,
    partition: Annotated[int | None, typer.Option(min=0, help="Partition, with offsets.")] = None,
    from_offset: Annotated[
        int | None, typer.Option(min=0, help="First offset (inclusive).")
    ] = None,
    to_offset: Annotated[int | None, typer.Option(min=0, help="Last offset (exclusive).")] = None,
    as_json: Annotated[bool, typer.Option("--json", help="Print the summary as JSON.")] = False,
    shard: ShardOption = None,
    topic: TopicOption = None,
) -> None:
    """Replay an already-loaded range (by time or by offsets); the checkpoint never moves.
    With --shard, only that shard's partitions are replayed. A multi-topic pipeline replays
    each of its topics (with --topic, that one; replaying offsets needs it)."""
    from pipelines.runner import members

    try:
        wanted = replay_range(
            CLI_NAMES,
            since=since,
            until=until,
            partition=partition,
            from_offset=from_offset,
            to_offset=to_offset,
        )
    except RangeError as exc:
        ctx.fail(str(exc))
    from pipelines.runner import replay_pipeline

    project = _project(ctx)
    _shard_of_pipeline(ctx, project, name, shard)
    if shard is not None and partition is not None and not shard.owns(partition):
        msg = (
            f"partition {partition} belongs to shard {shard_of(partition, shard.count)}/"
            f"{shard.count}, not to shard {shard}"
        )
        raise typer.BadParameter(msg, ctx=ctx, param_hint="'--shard'")
    found = members(project, name, topic=topic)
    if wanted.offsets is not None and len(found) > 1:
        msg = f"pipeline {name!r} reads several topics; --partition needs --topic"
        raise typer.BadParameter(msg, ctx=ctx, param_hint="'--topic'")
    summaries = []
    for member in found:
        bar = _LazyBar(enabled=not as_json)
        try:
            result = replay_pipeline(
                project,
                member,
                since=wanted.since,
                until=wanted.until,
                offsets=wanted.offsets,
                shard=shard,
                on_start=bar.start,
                on_progress=bar.update,
            )
        finally:
            bar.stop()
        if as_json:
            summaries.append(_summary(result))
        else:
            _replayed(ctx, result, project.pipeline(name).multi_topic)
    if as_json:
        multi = project.pipeline(name).multi_topic
        out.print_json(json.dumps(summaries if multi else summaries[0]))


def _replayed(ctx: typer.Context, result: RunResult, multi: bool) -> None:
    from pipelines.summary import loaded_offsets

    ranges = loaded_offsets(
        result.ranges, verbose=_verbose(ctx), empty="nothing loaded in that range"
    )
    source = f" from {escape(result.topic)}" if multi else ""
    out.print(
        f"{_who(result)}: replayed {result.rows:,} rows{source} into {escape(result.table)} in"
        f" {result.seconds:.2f}s; offsets {ranges}; table rows: {_count(result.table_rows)}"
    )
    for gap in result.gaps:
        out.print(
            f"  [yellow]gap[/]: {result.topic}/{gap.partition} offsets"
            f" [{gap.expected},{gap.log_start}) no longer exist in Kafka ({gap.lost:,})"
        )


@app.command()
def dlq(
    ctx: typer.Context,
    name: Annotated[str, typer.Argument(help="Pipeline whose dead letters to show.")],
    replay: Annotated[
        bool, typer.Option("--replay", help="Decode them again; move those that now succeed.")
    ] = False,
    limit: Annotated[int, typer.Option("--limit", min=1, help="Rows to list.")] = 50,
    topic: TopicOption = None,
) -> None:
    """List the messages set aside in <table>__dlq, or replay them after fixing the pipeline
    (a multi-topic pipeline: those of each of its topics, or of --topic)."""
    from pipelines.runner import members

    project = _project(ctx)
    for member in members(project, name, topic=topic):
        _dlq(project, name, member, replay, limit)


def _dlq(project: Project, name: str, member: Pipeline, replay: bool, limit: int) -> None:
    from pipelines.dead_letters import list_dead_letters, replay_dead_letters

    who = f"{name} ({member.topic})" if project.pipeline(name).multi_topic else name
    if replay:
        done = replay_dead_letters(project, member)
        out.print(
            f"{escape(who)}: {done.moved:,} of {done.examined:,} dead letters now decode and"
            f" were moved into the table; {done.still_failing:,} remain"
        )
        return
    letters = list_dead_letters(project, member, limit)
    table = Table(title=escape(f"{who}: dead letters"), title_justify="left")
    for column in ("partition", "offset", "error class", "message", "first seen"):
        table.add_column(column, justify="right" if column in ("partition", "offset") else "left")
    for row in letters.to_pylist():
        table.add_row(
            str(row["_partition"]),
            str(row["_offset"]),
            escape(row["error_class"] or ""),
            escape(row["error_message"] or ""),
            str(row["first_seen"]),
        )
    out.print(table)
    out.print(f"{letters.num_rows:,} shown (--limit {limit})")


def _timestamp(ctx: typer.Context, option: str, text: str, choices: str = "") -> datetime:
    try:
        return parse_timestamp(option, text, choices)
    except RangeError as exc:
        ctx.fail(str(exc))


def _reset_target(ctx: typer.Context, text: str) -> ResetTarget:
    if text == "earliest":
        return "earliest"
    if text == "latest":
        return "latest"
    return _timestamp(ctx, "--to", text, choices="earliest, latest or ")


def _report_to_dagster(project: Project, name: str | Pipeline, result: RunResult) -> None:
    """Record the load in the Dagster instance of ``$DAGSTER_HOME``, if set and Dagster is
    installed (the core install has no Dagster, and never imports it). Best effort: the load
    committed whatever happens here, so a failure is a warning."""
    if not os.environ.get("DAGSTER_HOME") or importlib.util.find_spec("dagster") is None:
        return
    try:
        from dagster_project.report import report_load  # the optional extra, imported late

        report_load(project, name, result)
    except Exception as exc:  # any failure of the optional report is only a warning
        err.print(escape(f"kafka-etl: warning: not recorded in Dagster ($DAGSTER_HOME): {exc}"))


def _who(result: RunResult) -> str:
    """The pipeline a summary is of, and its shard if the run loaded one."""
    return result.pipeline if result.shard is None else f"{result.pipeline} (shard {result.shard})"


def _count(rows: int | None) -> str:
    return "unknown" if rows is None else f"{rows:,}"


def _summary(result: RunResult) -> dict[str, Any]:
    return {
        "pipeline": result.pipeline,
        "shard": None if result.shard is None else str(result.shard),
        "topic": result.topic,
        "table": result.table,
        "rows": result.rows,
        "tombstones": result.tombstones,
        "dead_lettered": result.dead_lettered,
        "batches": result.batches,
        "seconds": round(result.seconds, 3),
        "rows_per_second": round(result.rows_per_second, 1),
        "ranges": {str(p): [r.first, r.next] for p, r in result.ranges.items()},
        "lag_after": {str(p): lag for p, lag in result.lag_after.items()},
        "gaps": [
            {"partition": g.partition, "expected": g.expected, "log_start": g.log_start}
            for g in result.gaps
        ],
        "columns_added": list(result.columns_added),
        "table_rows": result.table_rows,
    }


class _LazyBar:
    """A progress bar that appears only once a run has lasted a couple of seconds."""

    def __init__(self, enabled: bool) -> None:
        self._enabled = enabled and err.is_terminal
        self._began = time.monotonic()
        self._progress: Progress | None = None
        self._task: Any = None
        self._total = 0

    def start(self, plan: ReadPlan) -> None:
        self._total = plan.total_lag

    def update(self, progress: RunProgress) -> None:
        if not self._enabled or time.monotonic() - self._began < _PROGRESS_AFTER:
            return
        if self._progress is None:
            from rich.progress import BarColumn, MofNCompleteColumn, Progress, TimeElapsedColumn

            self._progress = Progress(
                "[progress.description]{task.description}",
                BarColumn(),
                MofNCompleteColumn(),
                TimeElapsedColumn(),
                console=err,
                transient=True,
            )
            self._task = self._progress.add_task("offsets", total=self._total)
            self._progress.start()
        self._progress.update(self._task, completed=progress.offsets_done)

    def stop(self) -> None:
        if self._progress is not None:
            self._progress.stop()


def main(argv: list[str] | None = None) -> int:
    """Console entry point; the exit codes are in ``pipelines.exits``."""
    return exits.run_cli(app, argv)


if __name__ == "__main__":
    os.environ.setdefault("PYTHONUNBUFFERED", "1")
    sys.exit(main())
