"""Builders shared by the format tests."""

from __future__ import annotations

import io
import uuid
from collections.abc import Sequence
from typing import Any

import fastavro
import numpy as np

from connector.batch import OffsetRange
from connector.reader import Headers, RawBatch


def raw_batch(
    values: Sequence[bytes | None],
    keys: Sequence[bytes | None] | None = None,
    headers: Sequence[Headers] | None = None,
    topic: str = "t",
) -> RawBatch:
    """Messages on partition 0 at offsets 100, 101, ..."""
    n = len(values)
    return RawBatch(
        topic=topic,
        values=list(values),
        keys=list(keys) if keys is not None else [None] * n,
        partitions=np.zeros(n, np.int32),
        offsets=np.arange(100, 100 + n, dtype=np.int64),
        timestamps=np.full(n, 1_700_000_000_000, np.int64),
        ranges={0: OffsetRange(0, 100, 100 + n)} if n else {},
        nbytes=sum(len(v) for v in values if v),
        headers=list(headers) if headers is not None else None,
    )


def framed(schema_id: int, payload: bytes) -> bytes:
    """Confluent wire format: magic byte, 4-byte schema id, payload."""
    return b"\x00" + schema_id.to_bytes(4, "big") + payload


def avro_bytes(schema: Any, record: Any) -> bytes:
    out = io.BytesIO()
    fastavro.schemaless_writer(out, fastavro.parse_schema(schema), record)
    return out.getvalue()


def unique(prefix: str) -> str:
    """A fresh subject name: the session's registry is shared by all tests."""
    return f"{prefix}-{uuid.uuid4().hex[:10]}"
