"""Kafka look-ups at scale: what a run costs before any data moves, as partitions and pipelines
grow, for this checkout and (``--compare``) any other, side by side in one run.

(a) planning: a fresh consumer, then ``plan_read`` (the topic's metadata, every partition's log
    start and high watermark) on topics of 10 / 100 / 1,000 partitions holding a few messages;
    the median of ``--repeat`` plans, and the ListOffsets requests the broker received for one
    plan (librdkafka's statistics): against a remote cluster each request kafka-etl waits for
    in turn costs a round trip.
(b) status: ``kafka-etl status --json`` of ``--pipelines`` pipelines (each on its own topic of
    ``--status-partitions`` partitions, all loaded once so every partition has a checkpoint),
    in its own process, start-up included; the median of 3.
(c) a multi-topic pipeline: ``topic_pattern`` over ``--pattern-topics`` topics (2 partitions,
    ``--pattern-events`` small JSON events each) into a DuckDB table per topic (``{topic}``),
    loaded once from scratch: the planning before any data moves (listing and matching the
    topics, then every member's ``plan_read``), the whole run's rows/s, and every table's row
    count checked. A tree without multi-topic pipelines shows "n/a".

(c) shards: one pipeline of ``--shard-partitions`` partitions holding ``--shard-rows`` events,
    loaded by 1, 2 and 4 concurrent ``kafka-etl run NAME --shard K/N`` processes (the same code
    path as the Dagster shard ops) into a fresh PostgreSQL database each time
    ($KAFKA_ETL_TEST_POSTGRESQL_URL or ``--postgresql``), and by 1 and 2 into DuckDB; wall time
    from the first start to the last exit, rows/s and speed-up over 1 shard, with exactly-once
    checked after each (rows = distinct (partition, offset) = produced). This tree only.

    .venv/bin/python bench/bench_scale.py [--repeat 5] [--pipelines 50] [--compare /work/main]
    .venv/bin/python bench/bench_scale.py --only shards [--shard-rows 400000]

Each tree is measured in a child process with ``PYTHONPATH=TREE``, so ``--compare`` takes the
root of another checkout (e.g. main, for the figures before a change). Uses
$KAFKA_BOOTSTRAP_SERVERS or starts the repo's local broker; the topics are deleted at the end.
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import subprocess
import sys
import tempfile
import time
import uuid
from pathlib import Path
from typing import Any

import yaml
from common import REPO, bootstrap
from confluent_kafka import KafkaException, Producer
from confluent_kafka.admin import AdminClient, NewTopic

from connector.librdkafka import logged
from pipelines.config import load_project
from pipelines.runner import run_pipeline

PLAN_PARTITIONS = (10, 100, 1_000)


def create_topics(admin: AdminClient, partitions: dict[str, int]) -> None:
    """Create the topics and wait until every partition has a leader (a plan made before
    then waits for the leader elections, which is not what is measured)."""
    futures = admin.create_topics([NewTopic(t, n, 1) for t, n in partitions.items()])
    for future in futures.values():
        future.result(timeout=120)
    deadline = time.monotonic() + 120
    for topic, count in partitions.items():
        while True:
            try:
                described = admin.list_topics(topic, timeout=10).topics[topic]
                led = [
                    p for p in described.partitions.values() if p.error is None and p.leader >= 0
                ]
                if described.error is None and len(led) == count:
                    break
            except KafkaException:
                pass
            if time.monotonic() > deadline:
                sys.exit(f"topic {topic}: partitions without a leader after 120s")
            time.sleep(0.2)


def produce_few(servers: str, topics: list[str], per_topic: int = 20) -> None:
    producer = Producer(
        logged({"bootstrap.servers": servers, "linger.ms": 20, "batch.size": 1_000_000})
    )
    for topic in topics:
        for i in range(per_topic):
            producer.produce(topic, json.dumps({"i": i}).encode(), key=str(i).encode())
            if i % 10_000 == 0:
                producer.poll(0)
    producer.flush(60)


def write_pattern_config(directory: Path, servers: str, prefix: str) -> Path:
    """One pipeline over every topic ``prefix.*``, a DuckDB table per topic."""
    body = {
        "topic_pattern": prefix.replace(".", r"\.") + r"\..*",
        "target": "duckdb:///pattern.duckdb",
        "table": "{topic}",
    }
    directory.mkdir(parents=True, exist_ok=True)
    path = directory / "pattern.yaml"
    document = {"kafka": {"bootstrap.servers": servers}, "pipelines": {"pattern": body}}
    path.write_text(yaml.safe_dump(document, sort_keys=False), encoding="utf-8")
    return path


def write_status_config(directory: Path, servers: str, topics: list[str]) -> Path:
    pipelines = {
        f"p{i:02d}": {"topic": t, "target": "duckdb:///status.duckdb", "table": f"events_{i:02d}"}
        for i, t in enumerate(topics)
    }
    path = directory / "pipelines.yaml"
    document = {"kafka": {"bootstrap.servers": servers}, "pipelines": pipelines}
    path.write_text(yaml.safe_dump(document, sort_keys=False), encoding="utf-8")
    return path


def cli(tree: Path, config: Path, *args: str) -> subprocess.CompletedProcess[str]:
    env = {**os.environ, "PYTHONPATH": str(tree)}
    return subprocess.run(
        [sys.executable, "-m", "pipelines.cli", "-c", str(config), *args],
        capture_output=True,
        text=True,
        env=env,
        cwd=config.parent,
        check=False,
        timeout=900,
    )


# -- the child: measure with whatever ``connector`` PYTHONPATH gives ---------------------------


def measure(spec: dict[str, Any]) -> dict[str, Any]:
    from connector.client import close_consumer, make_consumer, plan_read

    servers = spec["bootstrap"]
    planning: dict[str, Any] = {}
    for topic, count in spec["plan_topics"].items():
        seconds = []
        for _ in range(spec["repeat"]):
            began = time.perf_counter()
            consumer = make_consumer({"bootstrap.servers": servers}, "bench-scale")
            plan = plan_read(consumer, topic, {})
            seconds.append(time.perf_counter() - began)
            close_consumer(consumer)
            if len(plan.end) != count:
                sys.exit(f"{topic}: a plan of {len(plan.end)} partitions, not {count}")
        planning[str(count)] = {
            "median": statistics.median(seconds),
            "requests": _list_offsets_requests(servers, topic),
        }
    config = Path(spec["status_config"])
    seconds = []
    for _ in range(3):
        began = time.perf_counter()
        res = cli(Path(spec["tree"]), config, "status", "--json")
        seconds.append(time.perf_counter() - began)
        if res.returncode != 0:
            sys.exit(f"kafka-etl status failed (exit {res.returncode}): {res.stderr.strip()}")
        reports = json.loads(res.stdout)
        if len(reports) != spec["pipelines"] or any(r["lag"] != 0 for r in reports):
            sys.exit(f"kafka-etl status: unexpected answer {res.stdout[:500]}")
    return {
        "planning": planning,
        "status": statistics.median(seconds),
        "pattern": _measure_pattern(spec),
    }


def _measure_pattern(spec: dict[str, Any]) -> dict[str, Any] | None:
    """(c): plan, then load, the pattern pipeline of ``spec["pattern_config"]``."""
    try:
        from pipelines.runner import members, run_members
    except ImportError:  # a tree before multi-topic pipelines
        return None
    import duckdb

    from connector.client import close_consumer, make_consumer, plan_read

    config = Path(spec["pattern_config"])
    project = load_project(config)
    began = time.perf_counter()
    found = members(project, "pattern")
    consumer = make_consumer(project.consumer_settings(found[0]), "bench-scale")
    try:
        planned = sum(plan_read(consumer, m.topic, {}).total_lag for m in found)
    finally:
        close_consumer(consumer)
    planning = time.perf_counter() - began
    expected = spec["pattern_topics"] * spec["pattern_events"]
    if len(found) != spec["pattern_topics"] or planned != expected:
        sys.exit(f"pattern: {len(found)} topics planned with {planned} offsets, not {expected}")
    done = run_members(project, "pattern")
    con = duckdb.connect(str(config.parent / "pattern.duckdb"), read_only=True)
    try:
        counts = {t: con.execute(f'SELECT count(*) FROM "{t}"').fetchone() for t in done.tables}
    finally:
        con.close()
    wrong = {t: c for t, c in counts.items() if c != (spec["pattern_events"],)}
    if done.rows != expected or len(counts) != spec["pattern_topics"] or wrong:
        sys.exit(f"pattern: loaded {done.rows} rows into {len(counts)} tables; wrong: {wrong}")
    return {
        "planning": planning,
        "listing": done.planning_seconds,
        "seconds": done.seconds,
        "rows_per_second": done.rows_per_second,
        "rows": done.rows,
    }


def _list_offsets_requests(servers: str, topic: str) -> int:
    """The ListOffsets requests one plan sends (librdkafka's per-broker statistics)."""
    from connector.client import close_consumer, make_consumer, plan_read

    stats: list[str] = []
    settings = {
        "bootstrap.servers": servers,
        "statistics.interval.ms": 50,
        "stats_cb": stats.append,
    }
    consumer = make_consumer(settings, "bench-scale")
    try:
        plan_read(consumer, topic, {})
        after = time.monotonic()
        while time.monotonic() - after < 0.3:  # statistics emitted after the plan
            consumer.poll(0.05)
    finally:
        close_consumer(consumer)
    brokers = json.loads(stats[-1])["brokers"].values()
    return sum(b.get("req", {}).get("ListOffsets", 0) for b in brokers)


# -- the parent: topics, pipelines, one child per tree, the table --------------------------------


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--repeat", type=int, default=5)
    parser.add_argument("--pipelines", type=int, default=50)
    parser.add_argument("--status-partitions", type=int, default=20)
    parser.add_argument("--pattern-topics", type=int, default=20)
    parser.add_argument("--pattern-events", type=int, default=5_000)
    parser.add_argument("--compare", type=Path, action="append", default=[])
    parser.add_argument("--measure", help=argparse.SUPPRESS)  # the child's JSON spec
    add_shard_arguments(parser)
    args = parser.parse_args()
    if args.measure:
        print(json.dumps(measure(json.loads(args.measure))))
        return
    if args.only == "shards":
        print_shards(shard_figures(bootstrap(), args), args)
        return

    servers = bootstrap()
    admin = AdminClient(logged({"bootstrap.servers": servers}))
    run = uuid.uuid4().hex[:6]
    plan_topics = {f"bench-scale-{run}-{n}": n for n in PLAN_PARTITIONS}
    status_topics = [f"bench-scale-{run}-status-{i:02d}" for i in range(args.pipelines)]
    prefix = f"bench-scale-{run}-pattern"
    pattern_topics = [f"{prefix}.t{i:02d}" for i in range(args.pattern_topics)]
    trees = [REPO, *(t.resolve() for t in args.compare)]
    try:
        create_topics(
            admin,
            {
                **plan_topics,
                **{t: args.status_partitions for t in status_topics},
                **dict.fromkeys(pattern_topics, 2),
            },
        )
        produce_few(servers, [*plan_topics, *status_topics])
        produce_few(servers, pattern_topics, args.pattern_events)
        with tempfile.TemporaryDirectory(prefix="bench-scale-") as tmp:
            config = write_status_config(Path(tmp), servers, status_topics)
            project = load_project(config)
            for name in project.pipelines:  # every partition gets a checkpoint
                run_pipeline(project, name)
            results = [
                _child(
                    tree,
                    servers,
                    plan_topics,
                    config,
                    write_pattern_config(Path(tmp) / f"tree{i}", servers, prefix),
                    args,
                )
                for i, tree in enumerate(trees)
            ]
    finally:
        admin.delete_topics([*plan_topics, *status_topics, *pattern_topics])
    _print(trees, results, args)
    if args.only != "scale":
        print()
        print_shards(shard_figures(servers, args), args)


def _child(
    tree: Path,
    servers: str,
    plan_topics: dict[str, int],
    config: Path,
    pattern_config: Path,
    args: Any,
) -> dict[str, Any]:
    spec = {
        "tree": str(tree),
        "bootstrap": servers,
        "plan_topics": plan_topics,
        "repeat": args.repeat,
        "status_config": str(config),
        "pipelines": args.pipelines,
        "pattern_config": str(pattern_config),
        "pattern_topics": args.pattern_topics,
        "pattern_events": args.pattern_events,
    }
    env = {**os.environ, "PYTHONPATH": str(tree)}
    out = subprocess.run(
        [sys.executable, __file__, "--measure", json.dumps(spec)],
        capture_output=True,
        text=True,
        env=env,
        check=False,
        timeout=3600,
    )
    if out.returncode != 0:
        sys.exit(f"measuring {tree} failed: {out.stderr.strip()}")
    result: dict[str, Any] = json.loads(out.stdout.strip().splitlines()[-1])
    return result


def _print(trees: list[Path], results: list[dict[str, Any]], args: Any) -> None:
    width = max(36, *(len(str(t)) + 2 for t in trees))
    print(f"planning a run: fresh consumer + plan_read, median of {args.repeat}")
    print("partitions".ljust(12) + "".join(str(t).ljust(width) for t in trees))
    for n in PLAN_PARTITIONS:
        cells = [r["planning"][str(n)] for r in results]
        row = [f"{c['median']:.3f} s ({c['requests']} ListOffsets)" for c in cells]
        print(f"{n:<12,}" + "".join(cell.ljust(width) for cell in row))
    print()
    print(
        f"kafka-etl status --json of {args.pipelines} pipelines"
        f" x {args.status_partitions} partitions (own process), median of 3"
    )
    print(" " * 12 + "".join(f"{r['status']:.2f} s".ljust(width) for r in results))
    print()
    print(
        f"topic_pattern over {args.pattern_topics} topics x 2 partitions x"
        f" {args.pattern_events:,} events into a DuckDB table per topic, one run from scratch"
    )
    rows = {
        "planning": lambda c: f"{c['planning']:.3f} s (listing {c['listing']:.3f} s)",
        "load": lambda c: f"{c['seconds']:.2f} s, {c['rows_per_second']:,.0f} rows/s",
        "per topic": lambda c: f"{c['seconds'] / args.pattern_topics:.3f} s",
    }
    for label, cell in rows.items():
        cells = [cell(r["pattern"]) if r.get("pattern") else "n/a" for r in results]
        print(label.ljust(12) + "".join(c.ljust(width) for c in cells))


# -- (c) shards ------------------------------------------------------------------------------
SHARD_COUNTS = {"postgresql": (1, 2, 4), "duckdb": (1, 2)}


def add_shard_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--only", choices=("scale", "shards"), help="only (a)+(b), or only (c)")
    parser.add_argument("--shard-rows", type=int, default=400_000)
    parser.add_argument("--shard-partitions", type=int, default=8)
    parser.add_argument("--postgresql", default=os.environ.get("KAFKA_ETL_TEST_POSTGRESQL_URL"))


def shard_figures(servers: str, args: Any) -> list[dict[str, Any]]:
    """Load one topic with 1/2/4 concurrent shard processes per target; verify each load."""
    admin = AdminClient(logged({"bootstrap.servers": servers}))
    topic = f"bench-shards-{uuid.uuid4().hex[:6]}"
    parts = args.shard_partitions
    figures = []
    try:
        create_topics(admin, {topic: parts})
        _produce_events(servers, topic, parts, args.shard_rows)
        for backend, counts in SHARD_COUNTS.items():
            if backend == "postgresql" and not args.postgresql:
                print("shards into PostgreSQL skipped: set --postgresql or the test URL")
                continue
            for n in counts:
                with (
                    tempfile.TemporaryDirectory(prefix="bench-shards-") as tmp,
                    _target(backend, args.postgresql, Path(tmp)) as url,
                ):
                    config = _shard_config(Path(tmp), servers, topic, url, n)
                    seconds = _run_shards(config, n)
                    _verify(url, Path(tmp), args.shard_rows)
                figures.append({"backend": backend, "shards": n, "seconds": seconds})
    finally:
        admin.delete_topics([topic])
    return figures


def _produce_events(servers: str, topic: str, partitions: int, rows: int) -> None:
    producer = Producer(logged({"bootstrap.servers": servers, "linger.ms": 50}))
    actions = ("login", "logout", "view", "click", "purchase")
    for i in range(rows):
        value = json.dumps({"user_id": i % 5000, "action": actions[i % 5], "seq": i})
        while True:
            try:
                producer.produce(topic, value.encode(), partition=i % partitions)
                break
            except BufferError:
                producer.poll(0.05)
    if producer.flush(120):
        raise SystemExit(f"{topic}: not every message was delivered")


class _target:
    """A fresh PostgreSQL database (dropped after) or a DuckDB file in ``directory``."""

    def __init__(self, backend: str, server: str | None, directory: Path) -> None:
        self.backend, self.server, self.directory = backend, server, directory
        self.name = f"bench_{uuid.uuid4().hex[:10]}"

    def _admin(self) -> Any:
        import sqlalchemy as sa

        return sa.create_engine(str(self.server), isolation_level="AUTOCOMMIT")

    def __enter__(self) -> str:
        if self.backend == "duckdb":
            return "duckdb:///warehouse.duckdb"
        import sqlalchemy as sa

        engine = self._admin()
        with engine.connect() as conn:
            conn.execute(sa.text(f'CREATE DATABASE "{self.name}"'))
        engine.dispose()
        url = sa.make_url(str(self.server)).set(database=self.name)
        return url.render_as_string(hide_password=False)

    def __exit__(self, *_exc: object) -> None:
        if self.backend == "duckdb":
            return
        import sqlalchemy as sa

        engine = self._admin()
        with engine.connect() as conn:
            conn.execute(sa.text(f'DROP DATABASE IF EXISTS "{self.name}" WITH (FORCE)'))
        engine.dispose()


def _shard_config(directory: Path, servers: str, topic: str, url: str, shards: int) -> Path:
    body = {"topic": topic, "target": url, "table": "events", "shards": shards}
    if url.startswith("duckdb"):
        body["lock_timeout"] = 600  # shards of one file take turns: wait for the others
    document = {"kafka": {"bootstrap.servers": servers}, "pipelines": {"events": body}}
    path = directory / "pipelines.yaml"
    path.write_text(yaml.safe_dump(document, sort_keys=False), encoding="utf-8")
    return path


def _run_shards(config: Path, shards: int) -> float:
    """Wall seconds of ``shards`` concurrent ``kafka-etl run --shard K/N`` processes."""
    command = [sys.executable, "-m", "pipelines.cli", "-c", str(config), "run", "events"]
    env = {**os.environ, "PYTHONPATH": str(REPO)}
    started = time.monotonic()
    procs = [
        subprocess.Popen(
            [*command, "--shard", f"{k}/{shards}"],
            env=env,
            cwd=config.parent,
            stdout=subprocess.DEVNULL,
            stderr=subprocess.PIPE,
            text=True,
        )
        for k in range(shards)
    ]
    errors = [(p.wait(timeout=3600), p.stderr.read() if p.stderr else "") for p in procs]
    seconds = time.monotonic() - started
    for code, err in errors:
        if code != 0:
            raise SystemExit(f"a shard exited {code}: {err.strip()[-500:]}")
    return seconds


def _verify(url: str, directory: Path, produced: int) -> None:
    """Exactly once: as many rows as distinct (partition, offset) pairs as produced."""
    query = "SELECT COUNT(*), COUNT(DISTINCT (_partition, _offset)) FROM events"
    if url.startswith("duckdb:///"):
        import duckdb

        con = duckdb.connect(str(directory / url.removeprefix("duckdb:///")), read_only=True)
        try:
            rows, distinct = con.execute(query).fetchone() or (0, 0)
        finally:
            con.close()
    else:
        import sqlalchemy as sa

        engine = sa.create_engine(url)
        try:
            with engine.connect() as conn:
                rows, distinct = conn.execute(sa.text(query)).one()
        finally:
            engine.dispose()
    if not rows == distinct == produced:
        raise SystemExit(f"not exactly once: {rows} rows, {distinct} distinct, {produced} sent")


def print_shards(figures: list[dict[str, Any]], args: Any) -> None:
    print(
        f"shards: {args.shard_rows:,} events on {args.shard_partitions} partitions, N concurrent"
        " `kafka-etl run --shard K/N` processes, wall time; exactly once verified after each"
    )
    base: dict[str, float] = {}
    for f in figures:
        base.setdefault(f["backend"], f["seconds"])
        rate = args.shard_rows / f["seconds"]
        speedup = base[f["backend"]] / f["seconds"]
        print(
            f"{f['backend']:<12}{f['shards']} shard(s)  {f['seconds']:7.2f} s"
            f"  {rate:10,.0f} rows/s  x{speedup:.2f}"
        )


if __name__ == "__main__":
    main()
