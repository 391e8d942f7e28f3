"""Fitting a batch to an existing table: new columns, safe casts, refused conflicts."""

from __future__ import annotations

import pyarrow as pa
import pytest

from kafka_etl.errors import SchemaConflictError
from sinks.schema import plan_schema

TABLE = pa.schema([("a", pa.int64()), ("f", pa.float64()), ("s", pa.string())])


def test_a_new_table_takes_the_batch_schema_without_untyped_columns() -> None:
    rows = pa.table({"a": [1], "nothing": pa.nulls(1)})
    plan = plan_schema(None, rows, "p")
    assert plan.rows.column_names == ["a"]
    assert [f.name for f in plan.new_fields] == ["a"]


def test_new_fields_are_added_and_narrower_types_cast() -> None:
    rows = pa.table(
        {
            "a": pa.array([1], pa.int32()),
            "f": pa.array([2], pa.int64()),
            "new": ["x"],
            "s": pa.nulls(1),
        }
    )
    plan = plan_schema(TABLE, rows, "p")
    assert [f.name for f in plan.new_fields] == ["new"]
    assert plan.rows.schema.field("a").type == pa.int64()
    assert plan.rows.schema.field("f").type == pa.float64()
    assert plan.rows.schema.field("s").type == pa.string()


@pytest.mark.parametrize(
    ("column", "value"),
    [
        pytest.param("a", pa.array(["x"]), id="string-into-int"),
        pytest.param("a", pa.array([1.5]), id="float-into-int"),
        pytest.param("s", pa.array([{"x": 1}]), id="struct-into-string"),
    ],
)
def test_lossy_or_incompatible_types_are_refused_naming_pipeline_and_field(
    column: str, value: pa.Array
) -> None:
    with pytest.raises(SchemaConflictError, match=rf"pipeline 'p': field '{column}' arrived as"):
        plan_schema(TABLE, pa.table({column: value}), "p")
