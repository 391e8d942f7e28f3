"""JSON throughput, measured side by side in one run on the same messages.

(a) raw consume: confluent-kafka ``consume()`` of every message, no decoding, twice: with
    librdkafka's defaults, and with the consumer settings kafka-etl itself uses
    (``connector.client.DEFAULT_SETTINGS``, whose fetch backoff makes reading about 3x faster);
(b) end to end: ``kafka-etl run`` into a new DuckDB file, in its own process (peak RSS via wait4),
    with the default ``decode_threads`` (b) and with ``decode_threads: 1`` (b1), on the same topic;
(c) a seed-style loop: per-message ``poll()``, ``json.loads``, one ``INSERT`` per row, on a slice.
Peak RSS of (b) is also taken on a backlog a quarter the size and, with ``--large N``, on one of
N messages, to show it does not grow with the backlog.

    .venv/bin/python bench/bench_json.py [--messages 1000000] [--slice 50000] [--large 3000000]

Uses $KAFKA_BOOTSTRAP_SERVERS, or starts the repo's local broker.
"""

from __future__ import annotations

import argparse
import json
import subprocess
import sys
import tempfile
import time
import uuid
from pathlib import Path

import duckdb
import yaml
from common import PARTITIONS, REPO, bootstrap, make_topic
from confluent_kafka import Consumer, TopicPartition

from connector.client import DEFAULT_SETTINGS
from connector.librdkafka import logged


def event(i: int) -> bytes:
    return json.dumps(
        {
            "user_id": 100_000 + i % 50_000,
            "action": ("login", "view", "click", "purchase", "logout")[i % 5],
            "session": f"{i * 2654435761 % 2**64:016x}{i:08x}",
            "page": f"/products/{i % 9973}",
            "ts": f"2026-11-21T14:{i // 60 % 60:02d}:{i % 60:02d}.{i % 1000:03d}Z",
            "amount": round((i % 10_000) / 7, 2),
            "device": {"os": ("android", "ios", "web")[i % 3], "v": i % 40},
        },
        separators=(",", ":"),
    ).encode()


def raw_consume(servers: str, topic: str, count: int, tuned: bool) -> float:
    settings = {
        **(DEFAULT_SETTINGS if tuned else {}),
        "bootstrap.servers": servers,
        "group.id": f"bench-{uuid.uuid4().hex}",
        "enable.auto.commit": False,
    }
    consumer = Consumer(logged(settings))
    consumer.assign([TopicPartition(topic, p, 0) for p in range(PARTITIONS)])
    seen = 0
    started = time.perf_counter()
    while seen < count:
        for m in consumer.consume(num_messages=10_000, timeout=1.0):
            if m.error() is None:
                seen += 1
    elapsed = time.perf_counter() - started
    consumer.close()
    return count / elapsed


# Runs argv[1:] and prints its peak RSS (KiB) as the last word on stderr.
_PEAK_RSS = """
import os, sys
pid = os.posix_spawn(sys.argv[1], sys.argv[1:], os.environ)
_, status, usage = os.wait4(pid, 0)
print(usage.ru_maxrss, file=sys.stderr)
sys.exit(os.waitstatus_to_exitcode(status))
"""


def end_to_end(
    servers: str, topic: str, workdir: Path, name: str, **settings: object
) -> tuple[float, float, int]:
    """rows/s, seconds and peak RSS (bytes) of `kafka-etl run` in a child process; ``settings``
    are more pipeline settings (``decode_threads=1``)."""
    config = workdir / f"{name}.yaml"
    config.write_text(
        yaml.safe_dump(
            {
                "kafka": {"bootstrap.servers": servers},
                "pipelines": {
                    name: {
                        "topic": topic,
                        "target": f"duckdb:///{name}.duckdb",
                        "table": name,
                        **settings,
                    }
                },
            }
        )
    )
    # The CLI of this checkout (a worktree's too), not whichever one the venv was installed from.
    cli = (
        "import sys; sys.path.insert(0, sys.argv.pop(1));"
        " from pipelines.cli import main; sys.exit(main())"
    )
    command = [sys.executable, "-c", cli, str(REPO), "-c", str(config), "run", name, "--json"]
    started = time.perf_counter()
    # Started by a small wrapper process: Linux carries a process's peak RSS over exec, so a
    # child forked from this (by now large) process would report this process's peak as its own.
    done = subprocess.run(
        [sys.executable, "-c", _PEAK_RSS, *command], capture_output=True, text=True, check=False
    )
    wall = time.perf_counter() - started
    if done.returncode != 0:
        raise SystemExit(f"kafka-etl run failed: {done.stderr}")
    *_, peak = done.stderr.split()
    summary = json.loads(done.stdout)
    return summary["rows"] / wall, wall, int(peak) * 1024


def seed_loop(servers: str, topic: str, count: int, workdir: Path) -> float:
    """What a first script does: one poll, one json.loads and one INSERT per message."""
    con = duckdb.connect(str(workdir / "seed.duckdb"))
    con.execute(
        "CREATE TABLE events (user_id BIGINT, action VARCHAR, session VARCHAR, page VARCHAR,"
        ' ts VARCHAR, amount DOUBLE, partition INTEGER, "offset" BIGINT)'
    )
    consumer = Consumer(
        logged(
            {
                "bootstrap.servers": servers,
                "group.id": f"seed-{uuid.uuid4().hex}",
                "enable.auto.commit": False,
            }
        )
    )
    consumer.assign([TopicPartition(topic, p, 0) for p in range(PARTITIONS)])
    done = 0
    started = time.perf_counter()
    while done < count:
        m = consumer.poll(1.0)
        if m is None or m.error() is not None:
            continue
        v = json.loads(m.value())
        con.execute(
            "INSERT INTO events VALUES (?, ?, ?, ?, ?, ?, ?, ?)",
            [
                v["user_id"],
                v["action"],
                v["session"],
                v["page"],
                v["ts"],
                v["amount"],
                m.partition(),
                m.offset(),
            ],
        )
        done += 1
    elapsed = time.perf_counter() - started
    consumer.close()
    con.close()
    return count / elapsed


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--messages", type=int, default=1_000_000)
    parser.add_argument("--slice", type=int, default=50_000)
    parser.add_argument("--large", type=int, default=0, help="also peak RSS on this backlog")
    args = parser.parse_args()
    servers = bootstrap()
    size = len(event(12345))
    print(
        f"broker {servers}; producing {args.messages:,} + {args.messages // 4:,} events"
        f" of ~{size} bytes over {PARTITIONS} partitions ...",
        flush=True,
    )
    big = make_topic(servers, args.messages, event, "bench-json")
    small = make_topic(servers, args.messages // 4, event, "bench-json")
    large = make_topic(servers, args.large, event, "bench-json") if args.large else None
    with tempfile.TemporaryDirectory(prefix="bench-json-") as tmp:
        workdir = Path(tmp)
        a = raw_consume(servers, big, args.messages, tuned=False)
        a_tuned = raw_consume(servers, big, args.messages, tuned=True)
        b, b_seconds, rss = end_to_end(servers, big, workdir, "big")
        b1, b1_seconds, rss1 = end_to_end(servers, big, workdir, "big1", decode_threads=1)
        _, _, rss_small = end_to_end(servers, small, workdir, "small")
        rss_large = end_to_end(servers, large, workdir, "large")[2] if large else None
        c = seed_loop(servers, big, args.slice, workdir)
    print(f"(a)  raw consume(), librdkafka defaults     {a:>10,.0f} msg/s")
    print(f"(a*) raw consume(), kafka-etl's settings    {a_tuned:>10,.0f} msg/s")
    print(
        f"(b)  kafka-etl run -> DuckDB                {b:>10,.0f} rows/s  ({args.messages:,}"
        f" rows in {b_seconds:.2f}s, process start included)"
    )
    print(
        f"(b1) the same, decode_threads: 1           {b1:>10,.0f} rows/s  ({args.messages:,}"
        f" rows in {b1_seconds:.2f}s; peak RSS {rss1 / 2**20:.0f} MB, default"
        f" {rss / 2**20:.0f} MB)"
    )
    print(f"(c)  seed loop (poll/loads/INSERT, {args.slice:,} msgs) {c:>8,.0f} rows/s")
    print(f"b/a  = {b / a:.2f}   (target >= 0.50)")
    print(f"b/a* = {b / a_tuned:.2f}   (the same, against the faster consumer settings)")
    print(f"b/c  = {b / c:.1f}x  (target >= 20x)")
    sizes = [(args.messages // 4, rss_small), (args.messages, rss)]
    if rss_large is not None:
        sizes.append((args.large, rss_large))
    figures = ", ".join(f"{r / 2**20:.0f} MB at {n:,}" for n, r in sizes)
    print(f"peak RSS of (b): {figures} messages (target < 500 MB)")
    return 0


if __name__ == "__main__":
    sys.exit(main())
