"""``on_schema_conflict: dlq``: conflicting messages become dead letters, the rest loads."""

from __future__ import annotations

import json

import numpy as np
import pyarrow as pa
import pytest

from connector.batch import Batch, OffsetRange
from connector.reader import RawBatch
from kafka_etl.errors import SchemaConflictError, TerminalError
from pipelines.conflicts import (
    SCHEMA_CONFLICT,
    ErrorBudget,
    charge_conflicts,
    set_aside_conflicts,
)
from sinks.base import TableSpec

TABLE = pa.schema([("_topic", pa.string()), ("_partition", pa.int32()), ("_offset", pa.int64())])
TABLE = TABLE.append(pa.field("n", pa.float64())).append(pa.field("s", pa.string()))
SPEC = TableSpec(pipeline="p", topic="t", table="tbl")


def _batch(values: list[dict[str, object]]) -> tuple[Batch, RawBatch]:
    n = len(values)
    raw = RawBatch(
        topic="t",
        values=[json.dumps(v).encode() for v in values],
        keys=[None] * n,
        partitions=np.zeros(n, np.int32),
        offsets=np.arange(n, dtype=np.int64),
        timestamps=np.full(n, 1_700_000_000_000, np.int64),
        ranges={0: OffsetRange(0, 0, n)},
        nbytes=0,
    )
    columns = {name: [v.get(name) for v in values] for name in values[0]}
    rows = pa.table(
        {
            "_topic": ["t"] * n,
            "_partition": pa.array([0] * n, pa.int32()),
            "_offset": pa.array(range(n), pa.int64()),
            **columns,
        }
    )
    return Batch("t", rows, raw.ranges), raw


def test_messages_carrying_a_conflicting_field_are_set_aside_and_the_rest_kept() -> None:
    batch, raw = _batch([{"n": "x", "s": "a"}, {"n": None, "s": "b"}, {"n": "y", "s": "c"}])
    fitted = set_aside_conflicts(TABLE, batch, raw, SPEC)
    assert fitted.rows.column_names == ["_topic", "_partition", "_offset", "s"]
    assert fitted.rows.column("_offset").to_pylist() == [1]
    assert fitted.rejects is not None
    letters = fitted.rejects.to_pylist()
    assert [(r["_offset"], r["error_class"]) for r in letters] == [
        (0, SCHEMA_CONFLICT),
        (2, SCHEMA_CONFLICT),
    ]
    assert letters[0]["value"] == raw.values[0]
    assert letters[0]["error_message"] == (
        "pipeline 'p': field 'n' arrived as string but the table column is double"
    )


def test_a_batch_that_fits_is_returned_as_it_is() -> None:
    batch, raw = _batch([{"n": 1, "s": "a"}])
    assert set_aside_conflicts(TABLE, batch, raw, SPEC) is batch
    assert set_aside_conflicts(None, batch, raw, SPEC) is batch


def test_a_conflict_on_a_kafka_coordinate_is_not_set_aside() -> None:
    batch, raw = _batch([{"n": 1.0}])
    odd = batch.rows.set_column(2, "_offset", pa.array(["0"]))
    with pytest.raises(SchemaConflictError):
        set_aside_conflicts(TABLE, Batch("t", odd, batch.ranges), raw, SPEC)


def test_schema_conflicts_are_charged_to_the_runs_error_budget() -> None:
    batch, raw = _batch([{"n": "x"}, {"n": None}])
    fitted = set_aside_conflicts(TABLE, batch, raw, SPEC)
    lenient = ErrorBudget("p", 0.5, min_messages=1)
    lenient.charge(0, 2)
    charge_conflicts(lenient, batch, fitted)
    strict = ErrorBudget("p", 0.1, min_messages=1)
    strict.charge(0, 2)
    with pytest.raises(
        TerminalError, match=r"pipeline 'p': 1 of the 2 messages .* t/0@0: pipeline"
    ):
        charge_conflicts(strict, batch, fitted)


def test_one_bad_message_in_a_small_batch_is_within_the_budget() -> None:
    budget = ErrorBudget("p", 0.01, min_messages=1000)
    budget.charge(1, 11, "t/0@3: bad")
    for _ in range(9):  # up to 10 bad messages while fewer than 1,000 were read
        budget.charge(1, 11, "t/0@3: bad")
    with pytest.raises(TerminalError) as failed:
        budget.charge(1, 11, "t/0@113: bad")
    assert str(failed.value) == (
        "pipeline 'p': 11 of the 121 messages read so far could not be decoded or do not fit"
        " the table, more than max_error_ratio 0.01 allows (of at least 1,000 messages,"
        " min_messages_for_ratio); first bad one of this batch: t/0@113: bad; nothing from"
        " this batch was committed"
    )


@pytest.mark.parametrize(
    ("batches", "fails"),
    [
        pytest.param([(2000, 2000)], True, id="2000-of-2000-in-one-batch"),
        pytest.param([(2500, 5000)], True, id="half-of-5000"),
        pytest.param([(0, 100_000), (900, 1000)], False, id="900-after-100000-good"),
        pytest.param([(0, 100_000), (1100, 1100)], True, id="1100-after-100000-good"),
        pytest.param([(5, 200)] * 4, True, id="5-in-each-of-4-small-batches"),
        pytest.param([(10, 1000)] * 10, False, id="exactly-the-ratio"),
    ],
)
def test_the_budget_counts_over_the_run(batches: list[tuple[int, int]], fails: bool) -> None:
    budget = ErrorBudget("p", 0.01, min_messages=1000)
    failed = False
    for bad, messages in batches:
        try:
            budget.charge(bad, messages, "t/0@0: bad")
        except TerminalError:
            failed = True
            break
    assert failed == fails
