"""JSON decoding to Arrow without a broker: metadata columns, tombstones, and diagnosis."""

from __future__ import annotations

import numpy as np
import pyarrow as pa
import pytest

from connector.batch import OffsetRange
from connector.reader import RawBatch
from kafka_etl.errors import RecordError
from tests.helpers import JsonDecoder


def raw(values: list[bytes | None], keys: list[bytes | None] | None = None) -> RawBatch:
    n = len(values)
    return RawBatch(
        topic="t",
        values=values,
        keys=keys if keys is not None else [None] * n,
        partitions=np.zeros(n, np.int32),
        offsets=np.arange(100, 100 + n, dtype=np.int64),
        timestamps=np.full(n, 1_700_000_000_000, np.int64),
        ranges={0: OffsetRange(0, 100, 100 + n)},
        nbytes=sum(len(v) for v in values if v),
    )


def test_values_become_columns_with_metadata_and_nested_structs() -> None:
    batch = JsonDecoder().decode(
        raw([b'{"a": 1, "n": {"b": [1, 2]}}', b'{"a": 2.5, "s": "x"}'], [b"k1", None])
    )
    rows = batch.rows
    assert rows.column_names == [
        "a",
        "n",
        "s",
        "_topic",
        "_partition",
        "_offset",
        "_timestamp",
        "_key",
    ]
    assert rows.column("a").to_pylist() == [1.0, 2.5]
    assert rows.column("n").to_pylist() == [{"b": [1, 2]}, None]
    assert rows.column("_offset").to_pylist() == [100, 101]
    assert rows.column("_key").to_pylist() == ["k1", None]
    assert rows.schema.field("_timestamp").type == pa.timestamp("ms", tz="UTC")


def test_pretty_printed_values_with_newlines_are_parsed_exactly() -> None:
    batch = JsonDecoder().decode(raw([b'{\n  "a": 1\n}', b'{"a":\n2}']))
    assert batch.rows.column("a").to_pylist() == [1, 2]


def test_tombstones_are_set_aside_with_their_coordinates() -> None:
    batch = JsonDecoder().decode(raw([b'{"a": 1}', None, b'{"a": 3}'], [b"x", b"y", b"z"]))
    assert batch.rows.column("a").to_pylist() == [1, 3]
    assert batch.tombstones is not None
    assert batch.tombstones.column("_offset").to_pylist() == [101]
    assert batch.tombstones.column("_key").to_pylist() == ["y"]


def test_explicit_column_types_win_over_inference() -> None:
    decoder = JsonDecoder(pa.schema([pa.field("a", pa.float64())]))
    assert decoder.decode(raw([b'{"a": 1}'])).rows.schema.field("a").type == pa.float64()


@pytest.mark.parametrize(
    ("bad", "reason"),
    [
        pytest.param(b'{"a": ', "not a valid JSON object", id="truncated"),
        pytest.param(b"", "value is empty", id="empty"),
        pytest.param(b"[1, 2]", "not a valid JSON object", id="array"),
        pytest.param(b'{"a": 1}{"a": 2}', "expected one JSON object, found 2", id="two-objects"),
        pytest.param(
            b'{"a": "text"}', "field 'a' is string, earlier messages had int64", id="type-change"
        ),
        pytest.param(b'{"_offset": 5}', "clashes with kafka-etl's metadata column", id="reserved"),
    ],
)
def test_a_bad_message_is_named_by_topic_partition_offset(bad: bytes, reason: str) -> None:
    with pytest.raises(RecordError) as caught:
        JsonDecoder().decode(raw([b'{"a": 1}', b'{"a": 2}', bad, b'{"a": 4}']))
    assert (caught.value.partition, caught.value.offset) == (0, 102)
    assert str(caught.value).startswith("t/0@102: ")
    assert reason in str(caught.value)


def test_a_key_that_is_not_utf8_is_named() -> None:
    with pytest.raises(RecordError, match=r"t/0@101: key is not valid UTF-8"):
        JsonDecoder().decode(raw([b'{"a": 1}', b'{"a": 2}'], [b"ok", b"\xff\xfe"]))
