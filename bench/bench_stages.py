"""Where a JSON load's time goes: consume, decode and write, each timed alone on the same messages.

The end-to-end run overlaps the three (reading on the main thread, decoding ahead on
``decode_threads`` threads, the DuckDB transaction of the previous batch on the writer's), so its
wall time is close to the slowest stage plus what the stages take from each other's cores. To see
which stage bounds it, this runs each stage by itself, in this process, with kafka-etl's own code:

(a*) raw ``consume()`` with kafka-etl's consumer settings (the reference of bench_json.py);
(1)  read: the ``BoundedReader`` over the run's plan, building ``RawBatch`` columns, no decoding;
(2)  decode: ``decoded()`` of each of those batches (pyarrow's JSON reader + metadata columns);
(3)  write: ``sink.write()`` of each decoded batch into a new DuckDB file, one transaction each;
(b)  ``kafka-etl run`` end to end into another new DuckDB file, in its own process.

    .venv/bin/python bench/bench_stages.py [--messages 1000000]

Uses $KAFKA_BOOTSTRAP_SERVERS, or starts the repo's local broker.
"""

from __future__ import annotations

import argparse
import gc
import sys
import tempfile
import time
import uuid
from pathlib import Path

import yaml
from bench_json import end_to_end, event, raw_consume
from common import bootstrap, make_topic

from connector.client import close_consumer, make_consumer, plan_read
from connector.reader import BoundedReader
from pipelines.config import load_project
from pipelines.definition import PipelineDefinition, decoded


def stages(servers: str, topic: str, workdir: Path) -> tuple[int, float, float, float]:
    """Messages, and the seconds of read, decode and write, each stage run alone."""
    config = workdir / "stages.yaml"
    name = "stages"
    config.write_text(
        yaml.safe_dump(
            {
                "kafka": {"bootstrap.servers": servers},
                "pipelines": {
                    name: {"topic": topic, "target": f"duckdb:///{name}.duckdb", "table": name}
                },
            }
        )
    )
    definition = PipelineDefinition.of(load_project(config), name)
    pipeline = definition.pipeline
    consumer = make_consumer(definition.consumer_settings, f"bench-{uuid.uuid4().hex}")
    try:
        plan = plan_read(consumer, topic, {})
        reader = BoundedReader(
            consumer,
            plan,
            max_rows=pipeline.batch_max_rows,
            max_bytes=pipeline.batch_max_bytes,
        )
        started = time.perf_counter()
        raws = list(reader)
        read = time.perf_counter() - started
    finally:
        close_consumer(consumer)
    messages = sum(len(r) for r in raws)
    decoder = definition.decoder()
    started = time.perf_counter()
    batches = [decoded(pipeline, decoder, raw).batch for raw in raws]
    decode = time.perf_counter() - started
    del raws
    gc.collect()
    with definition.open_sink() as sink:
        started = time.perf_counter()
        for batch in batches:
            assert batch is not None
            sink.write(batch)
        write = time.perf_counter() - started
        assert sink.row_count() == messages, (sink.row_count(), messages)
    return messages, read, decode, write


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--messages", type=int, default=1_000_000)
    args = parser.parse_args()
    servers = bootstrap()
    print(f"broker {servers}; producing {args.messages:,} events ...", flush=True)
    topic = make_topic(servers, args.messages, event, "bench-stages")
    with tempfile.TemporaryDirectory(prefix="bench-stages-") as tmp:
        workdir = Path(tmp)
        raw = raw_consume(servers, topic, args.messages, tuned=True)
        n, read, decode, write = stages(servers, topic, workdir)
        b, b_seconds, rss = end_to_end(servers, topic, workdir, "e2e")
    total = read + decode + write
    print(f"(a*) raw consume(), kafka-etl's settings  {raw:>10,.0f} msg/s  ({n / raw:.2f}s)")
    for label, seconds in (("(1)  read (BoundedReader)", read), ("(2)  decode", decode)):
        print(f"{label:<40}  {n / seconds:>10,.0f} msg/s  ({seconds:.2f}s, {seconds / total:.0%})")
    print(
        f"{'(3)  write (DuckDB, one txn per batch)':<40}  {n / write:>10,.0f} rows/s"
        f"  ({write:.2f}s, {write / total:.0%})"
    )
    print(f"     stages one after another              {n / total:>10,.0f} rows/s  ({total:.2f}s)")
    print(
        f"(b)  kafka-etl run -> DuckDB (overlapped)  {b:>10,.0f} rows/s  ({b_seconds:.2f}s, process"
        f" start included; peak RSS {rss / 2**20:.0f} MB)"
    )
    slowest = min(n / read, n / decode, n / write)
    print(f"     b / a* = {b / raw:.2f}; the slowest stage alone / a* = {slowest / raw:.2f}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
