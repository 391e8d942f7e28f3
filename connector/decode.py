"""Decoding a micro-batch to Arrow, vectorised: the JSON decoder and the metadata columns.

The formats live in ``connector.formats`` (JSON, Avro, Protobuf, JSON Schema, string, bytes);
this module keeps the names the rest of kafka-etl has always imported from here.
"""

from __future__ import annotations

import numpy as np
import pyarrow as pa

from connector.formats.base import Failure, FrameDecoder
from connector.formats.json import JsonFormat
from connector.formats.text import StringFormat
from connector.reader import RawBatch
from kafka_etl.errors import RecordError


class JsonDecoder(FrameDecoder):
    """``RawBatch`` JSON objects to an Arrow table with the metadata columns; UTF-8 keys."""

    def __init__(self, explicit: pa.Schema | None = None, *, include_headers: bool = False) -> None:
        super().__init__(JsonFormat(explicit), StringFormat(), include_headers=include_headers)


def metadata_columns(raw: RawBatch) -> pa.Table:
    """``_topic``, ``_partition``, ``_offset``, ``_timestamp`` and ``_key`` (UTF-8 text) of every
    message; raises ``RecordError`` for the first key that is not valid UTF-8."""
    failures: dict[int, Failure] = {}
    decoder = FrameDecoder(StringFormat(), StringFormat())
    keys = decoder.key_column(raw, failures)
    if failures:
        first = min(failures)
        raise RecordError(
            raw.topic, int(raw.partitions[first]), int(raw.offsets[first]), "key is not valid UTF-8"
        )
    return decoder.metadata(raw, keys, np.arange(len(raw), dtype=np.int64))
