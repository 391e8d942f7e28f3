"""Dead letters: messages set aside by ``decode_tolerant``, as an Arrow table for the sinks.

A sink writes them to its dead-letter table (named in ``sinks.dead_letter_table``) in the
transaction that writes the batch's rows and moves its checkpoint, so every offset read ends up
in exactly one of: the table, the dead-letter table, or (tombstones in append mode) nowhere by
design. The raw key, value and headers are kept as they
arrived, so ``kafka-etl dlq NAME --replay`` can decode them again after a fix.
"""

from __future__ import annotations

import base64
import json
from collections.abc import Sequence

import numpy as np
import pyarrow as pa

from connector.formats.base import Reject
from connector.reader import Headers, RawBatch

# What a sink stores per dead letter; it adds ``first_seen`` (sinks.dead_letter_table).
DLQ_SCHEMA = pa.schema(
    [
        pa.field("_topic", pa.string(), nullable=False),
        pa.field("_partition", pa.int32(), nullable=False),
        pa.field("_offset", pa.int64(), nullable=False),
        pa.field("_timestamp", pa.timestamp("ms", tz="UTC")),
        pa.field("key", pa.binary()),
        pa.field("value", pa.binary()),
        pa.field("headers", pa.string()),  # JSON: [[name, base64 value or null], ...]
        pa.field("error_class", pa.string(), nullable=False),
        pa.field("error_message", pa.string(), nullable=False),
    ]
)


def rejects_table(topic: str, rejects: Sequence[Reject]) -> pa.Table:
    """The dead-letter rows of one batch's rejects (``DLQ_SCHEMA``)."""
    return pa.Table.from_pydict(
        {
            "_topic": [topic] * len(rejects),
            "_partition": [r.partition for r in rejects],
            "_offset": [r.offset for r in rejects],
            "_timestamp": [r.timestamp for r in rejects],
            "key": [r.key for r in rejects],
            "value": [r.value for r in rejects],
            "headers": [_headers_json(r.headers) for r in rejects],
            "error_class": [r.error for r in rejects],
            "error_message": [r.message for r in rejects],
        },
        schema=DLQ_SCHEMA,
    )


def raw_batch(topic: str, letters: pa.Table) -> RawBatch:
    """Dead letters (any columns including those of ``DLQ_SCHEMA``) as a ``RawBatch`` to decode
    again; ``ranges`` is empty because re-decoding never moves a checkpoint."""
    letters = letters.sort_by([("_partition", "ascending"), ("_offset", "ascending")])
    stamps = letters.column("_timestamp").cast(pa.timestamp("ms", tz="UTC")).cast(pa.int64())
    timestamps = stamps.to_numpy(zero_copy_only=False)
    values = letters.column("value").to_pylist()
    return RawBatch(
        topic=topic,
        values=values,
        keys=letters.column("key").to_pylist(),
        partitions=letters.column("_partition").to_numpy(zero_copy_only=False).astype(np.int32),
        offsets=letters.column("_offset").to_numpy(zero_copy_only=False).astype(np.int64),
        timestamps=np.asarray(timestamps, np.int64),
        ranges={},
        nbytes=sum(len(v) for v in values if v is not None),
        headers=[_headers_from_json(h) for h in letters.column("headers").to_pylist()],
    )


def _headers_json(headers: Headers) -> str | None:
    if not headers:
        return None
    pairs = [[k, None if v is None else base64.b64encode(v).decode()] for k, v in headers]
    return json.dumps(pairs, separators=(",", ":"))


def _headers_from_json(text: str | None) -> Headers:
    if not text:
        return None
    return [(str(k), None if v is None else base64.b64decode(v)) for k, v in json.loads(text)]
