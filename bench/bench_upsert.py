"""Upsert throughput with tombstones, at the sink (no broker): what delete markers cost.

The same decoded batches (``--messages`` over ``--keys`` Kafka keys on 3 partitions, 12% of
them tombstones) are written by one sink into a fresh table: first as a normal load (the
checkpoint moves), then all again as a replay (``replay=True``, every row refused as older or
deleted later). Decoding happens once, before the clock starts. Run it with the code to measure
first on ``PYTHONPATH``, e.g. the main checkout against a branch, in one session:

    PYTHONPATH=/work/main .venv/bin/python bench/bench_upsert.py --target duckdb
    PYTHONPATH=. .venv/bin/python bench/bench_upsert.py --target postgresql

PostgreSQL: $KAFKA_ETL_BENCH_POSTGRESQL_URL or $KAFKA_ETL_TEST_POSTGRESQL_URL (a server URL;
each run creates a database and drops it).
"""

from __future__ import annotations

import argparse
import json
import os
import random
import tempfile
import time
import uuid
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

import numpy as np
import sqlalchemy as sa
from sqlalchemy.engine import make_url

from connector.batch import Batch, OffsetRange
from connector.formats.base import FrameDecoder
from connector.formats.json import JsonFormat
from connector.formats.text import StringFormat
from connector.reader import RawBatch
from sinks.base import TableSpec
from sinks.factory import open_sink

PARTITIONS = 3
T0 = 1_750_000_000_000


def batches(messages: int, keys: int, size: int) -> list[Batch]:
    rng = random.Random(7)
    decoder = FrameDecoder(JsonFormat(None), StringFormat())
    next_offset = [0] * PARTITIONS
    out = []
    for start in range(0, messages, size):
        values: list[bytes | None] = []
        key_bytes: list[bytes | None] = []
        parts, offsets = [], []
        first = list(next_offset)
        for i in range(start, min(start + size, messages)):
            n = rng.randrange(keys)
            p = n % PARTITIONS
            key_bytes.append(f"user-{n}".encode())
            tombstone = rng.random() < 0.12
            values.append(None if tombstone else json.dumps({"id": n, "score": i}).encode())
            parts.append(p)
            offsets.append(next_offset[p])
            next_offset[p] += 1
        ranges = {
            p: OffsetRange(p, first[p], next_offset[p])
            for p in range(PARTITIONS)
            if next_offset[p] > first[p]
        }
        raw = RawBatch(
            topic="bench",
            values=values,
            keys=key_bytes,
            partitions=np.array(parts, np.int32),
            offsets=np.array(offsets, np.int64),
            timestamps=T0 + np.arange(start, start + len(values), dtype=np.int64),
            ranges=ranges,
            nbytes=0,
        )
        out.append(decoder.decode(raw))
    return out


@contextmanager
def target(kind: str) -> Iterator[str]:
    if kind == "duckdb":
        with tempfile.TemporaryDirectory() as folder:
            yield f"duckdb:///{Path(folder) / 'bench.duckdb'}"
        return
    server = (
        os.environ.get("KAFKA_ETL_BENCH_POSTGRESQL_URL")
        or os.environ["KAFKA_ETL_TEST_POSTGRESQL_URL"]
    )
    name = f"bench_{uuid.uuid4().hex[:10]}"
    admin = sa.create_engine(server, isolation_level="AUTOCOMMIT", poolclass=sa.pool.NullPool)
    with admin.connect() as conn:
        conn.execute(sa.text(f'CREATE DATABASE "{name}"'))
    try:
        yield make_url(server).set(database=name).render_as_string(hide_password=False)
    finally:
        with admin.connect() as conn:
            conn.execute(sa.text(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)'))
        admin.dispose()


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--target", choices=["duckdb", "postgresql"], default="duckdb")
    parser.add_argument("--messages", type=int, default=400_000)
    parser.add_argument("--keys", type=int, default=50_000)
    parser.add_argument("--batch", type=int, default=50_000)
    args = parser.parse_args()
    prepared = batches(args.messages, args.keys, args.batch)
    spec = TableSpec(
        pipeline="bench",
        topic="bench",
        table="users",
        mode="upsert",
        key=("id",),
        delete_on_tombstone=True,
    )
    with target(args.target) as url, open_sink(url, spec) as sink:
        timings = []
        for replay in (False, True):
            started = time.perf_counter()
            for b in prepared:
                sink.write(b, replay=replay)
            timings.append(time.perf_counter() - started)
        rows = sink.row_count()
    load, again = timings
    print(
        f"{args.target}: {args.messages:,} messages, {args.keys:,} keys, {rows:,} rows left:"
        f" load {args.messages / load:,.0f} msg/s ({load:.2f} s),"
        f" replay {args.messages / again:,.0f} msg/s ({again:.2f} s)"
    )


if __name__ == "__main__":
    main()
