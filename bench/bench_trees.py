"""Before and after a change, side by side in one run: ``kafka-etl run`` from two source trees.

Each run is its own process, started in one tree (whose packages then shadow the installed ones)
with this venv's Python, on the same topic, into a new DuckDB file or a new PostgreSQL table (the
COPY path), alternating between the trees so that a noisy machine slows both alike. Every run
and the median per tree are printed, with the ratio after/before.

    .venv/bin/python bench/bench_trees.py BEFORE_TREE AFTER_TREE [--messages 500000]
        [--repeat 3] [--targets duckdb,postgresql]

``BEFORE_TREE`` is e.g. a ``git worktree add /tmp/before main``. Uses $KAFKA_BOOTSTRAP_SERVERS
or starts the repo's local broker, and $KAFKA_ETL_BENCH_POSTGRESQL_URL or
``scripts/local-db start postgresql`` (a database per run, dropped at the end).
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

import sqlalchemy as sa
import yaml
from bench_json import event
from bench_postgres import server_url
from common import bootstrap, make_topic

_MAIN = "import sys; from pipelines.cli import main; sys.argv[0] = 'kafka-etl'; main()"


def one_run(tree: Path, servers: str, topic: str, target: str, workdir: Path) -> float:
    """rows/s of one ``kafka-etl run`` (process start included) from ``tree``."""
    name = f"t{uuid.uuid4().hex[:8]}"
    config = workdir / f"{name}.yaml"
    config.write_text(
        yaml.safe_dump(
            {
                "kafka": {"bootstrap.servers": servers},
                "pipelines": {name: {"topic": topic, "target": target, "table": name}},
            }
        )
    )
    env = {**os.environ, "PYTHONPATH": str(tree)}
    started = time.perf_counter()
    done = subprocess.run(
        [sys.executable, "-c", _MAIN, "-c", str(config), "run", name, "--json"],
        cwd=tree,
        env=env,
        capture_output=True,
        text=True,
        check=False,
    )
    wall = time.perf_counter() - started
    if done.returncode != 0:
        raise SystemExit(f"{tree}: kafka-etl run failed: {done.stderr.strip()}")
    rows = int(json.loads(done.stdout)["rows"])
    return rows / wall


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("before", type=Path)
    parser.add_argument("after", type=Path)
    parser.add_argument("--messages", type=int, default=500_000)
    parser.add_argument("--repeat", type=int, default=3)
    parser.add_argument("--targets", default="duckdb,postgresql")
    args = parser.parse_args()
    trees = {"before": args.before.resolve(), "after": args.after.resolve()}
    servers = bootstrap()
    topic = make_topic(servers, args.messages, event, "bench-trees")
    print(f"{args.messages:,} JSON events on {topic}; before={trees['before']}")
    print(f"after={trees['after']}; {args.repeat} runs each, alternating")
    admin_url = server_url() if "postgresql" in args.targets else ""
    for kind in args.targets.split(","):
        rates: dict[str, list[float]] = {"before": [], "after": []}
        with tempfile.TemporaryDirectory() as tmp:
            workdir = Path(tmp)
            database = f"bench_trees_{uuid.uuid4().hex[:8]}"
            if kind == "postgresql":
                admin = sa.create_engine(admin_url, isolation_level="AUTOCOMMIT")
                with admin.connect() as conn:
                    conn.exec_driver_sql(f'CREATE DATABASE "{database}"')
            try:
                for i in range(args.repeat):
                    order = ("before", "after") if i % 2 == 0 else ("after", "before")
                    for which in order:
                        if kind == "duckdb":
                            target = f"duckdb:///{workdir / uuid.uuid4().hex}.duckdb"
                        else:
                            url = sa.engine.make_url(admin_url).set(database=database)
                            target = url.render_as_string(hide_password=False)
                        rate = one_run(trees[which], servers, topic, target, workdir)
                        rates[which].append(rate)
                        print(f"  {kind:10} {which:6} run {i + 1}: {rate:,.0f} rows/s", flush=True)
            finally:
                if kind == "postgresql":
                    with admin.connect() as conn:
                        conn.exec_driver_sql(f'DROP DATABASE "{database}" WITH (FORCE)')
                    admin.dispose()
        before = statistics.median(rates["before"])
        after = statistics.median(rates["after"])
        print(
            f"{kind:10} median before {before:,.0f} rows/s, after {after:,.0f} rows/s:"
            f" after/before = {after / before:.2f}"
        )


if __name__ == "__main__":
    main()
