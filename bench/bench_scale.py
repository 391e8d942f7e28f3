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

    .venv/bin/python bench/bench_scale.py [--repeat 5] [--pipelines 50] [--compare /work/main]

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
    args = parser.parse_args()
    if args.measure:
        print(json.dumps(measure(json.loads(args.measure))))
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


if __name__ == "__main__":
    main()
