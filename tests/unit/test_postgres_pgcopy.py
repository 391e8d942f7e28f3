"""PostgreSQL binary COPY encoding from Arrow, decoded back here by an independent reader."""

from __future__ import annotations

import struct
from datetime import UTC, date, datetime, timedelta
from typing import Any

import pyarrow as pa
import pytest
import sqlalchemy as sa
from sqlalchemy.dialects import postgresql

from sinks.postgres import pgcopy

PG_EPOCH = datetime(2000, 1, 1, tzinfo=UTC)


def decode(data: bytes, kinds: list[str]) -> list[tuple[Any, ...]]:
    """A plain-Python reader of the format (the spec, not the encoder's numpy tricks)."""
    assert data[:11] == b"PGCOPY\n\xff\r\n\x00"
    assert struct.unpack(">ii", data[11:19]) == (0, 0)
    pos = 19
    rows: list[tuple[Any, ...]] = []
    while True:
        (count,) = struct.unpack(">h", data[pos : pos + 2])
        pos += 2
        if count == -1:
            assert pos == len(data)
            return rows
        assert count == len(kinds)
        row: list[Any] = []
        for kind in kinds:
            (size,) = struct.unpack(">i", data[pos : pos + 4])
            pos += 4
            if size == -1:
                row.append(None)
                continue
            raw = data[pos : pos + size]
            pos += size
            row.append(_value(raw, kind))
        rows.append(tuple(row))


def _value(raw: bytes, kind: str) -> Any:
    fixed = {"int2": ">h", "int4": ">i", "int8": ">q", "float4": ">f", "float8": ">d"}
    if kind in fixed:
        return struct.unpack(fixed[kind], raw)[0]
    if kind == "bool":
        return raw == b"\x01"
    if kind == "timestamp":
        return PG_EPOCH + timedelta(microseconds=struct.unpack(">q", raw)[0])
    if kind == "date":
        return date(2000, 1, 1) + timedelta(days=struct.unpack(">i", raw)[0])
    if kind == "jsonb":
        assert raw[:1] == b"\x01"
        return raw[1:].decode()
    return raw.decode()


def test_every_supported_type_with_nulls_round_trips() -> None:
    rows = pa.table(
        {
            "b": pa.array([True, None, False]),
            "s": pa.array([2, None, -3], pa.int16()),
            "i": pa.array([2**31 - 1, -5, None], pa.int32()),
            "l": pa.array([None, 2**63 - 1, -(2**63)]),
            "f": pa.array([1.5, None, -0.25], pa.float32()),
            "d": pa.array([1e300, -0.0, None]),
            "t": pa.array(["héllo", "", None]),
            "j": pa.array(['{"a": [1]}', None, "[]"]),
            "ts": pa.array([0, None, 1_700_000_000_123_456], pa.int64()).cast(
                pa.timestamp("us", "UTC")
            ),
            "day": pa.array([0, 19_000, None], pa.int32()).cast(pa.date32()),
        }
    )
    kinds = ["bool", "int2", "int4", "int8", "float4", "float8", "text", "jsonb", "timestamp"]
    kinds.append("date")
    encoded = pgcopy.encode(rows, list(kinds))
    assert encoded is not None
    data, order = encoded
    # Fixed-width columns without NULLs go first; here none qualifies, so the order is kept.
    assert order == rows.column_names
    epoch = datetime(1970, 1, 1, tzinfo=UTC)
    assert decode(data, kinds) == [
        (True, 2, 2**31 - 1, None, 1.5, 1e300, "héllo", '{"a": [1]}', epoch, date(1970, 1, 1)),
        (None, None, -5, 2**63 - 1, None, -0.0, "", None, None, date(2022, 1, 8)),
        (
            False,
            -3,
            None,
            -(2**63),
            -0.25,
            None,
            None,
            "[]",
            epoch + timedelta(microseconds=1_700_000_000_123_456),
            None,
        ),
    ]


def test_columns_without_nulls_lead_and_slices_and_chunks_are_honoured(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    monkeypatch.setattr(pgcopy, "_ROWS_PER_JOIN", 7)  # several joins per batch
    n = 50
    full = pa.table(
        {
            "name": pa.array([None if i % 5 == 0 else f"n{i}" * (i % 4) for i in range(n)]),
            "id": pa.array(range(n), pa.int64()),
            "ok": pa.array([i % 2 == 0 for i in range(n)]),
        }
    )
    rows = full.slice(3, 40)  # Arrow offsets that do not start at 0
    encoded = pgcopy.encode(rows, ["text", "int8", "bool"])
    assert encoded is not None
    data, order = encoded
    assert order == ["id", "ok", "name"]
    expected = [(i, i % 2 == 0, None if i % 5 == 0 else f"n{i}" * (i % 4)) for i in range(3, 43)]
    assert decode(data, ["int8", "bool", "text"]) == expected


def test_types_without_a_binary_encoder_fall_back() -> None:
    rows = pa.table({"x": pa.array([1], pa.int64())})
    assert pgcopy.encode(rows, [None]) is None
    text_as_int = pa.table({"x": pa.array(["a"])})
    assert pgcopy.encode(text_as_int, ["int8"]) is None
    assert pgcopy.wire_kind(postgresql.NUMERIC(10, 2)) is None
    assert pgcopy.wire_kind(postgresql.JSONB()) == "jsonb"
    assert pgcopy.wire_kind(postgresql.DOUBLE_PRECISION()) == "float8"
    assert pgcopy.wire_kind(postgresql.REAL()) == "float4"
    assert pgcopy.wire_kind(sa.BigInteger()) == "int8"
    assert pgcopy.wire_kind(postgresql.TIMESTAMP(timezone=True)) == "timestamp"
