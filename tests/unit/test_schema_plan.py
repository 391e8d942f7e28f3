"""Fitting a batch to an existing table: new columns, safe casts, refused conflicts."""

from __future__ import annotations

import pyarrow as pa
import pytest

from kafka_etl.errors import SchemaConflictError
from sinks.schema import Widening, plan_schema, widened_type

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
        pytest.param("f", pa.array([True]), id="bool-into-float"),
        pytest.param("s", pa.array([{"x": 1}]), id="struct-into-string"),
    ],
)
def test_lossy_or_incompatible_types_are_refused_naming_pipeline_and_field(
    column: str, value: pa.Array
) -> None:
    with pytest.raises(SchemaConflictError, match=rf"pipeline 'p': field '{column}' arrived as"):
        plan_schema(TABLE, pa.table({column: value}), "p")


# -- widening ----------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("value", "column", "wider"),
    [
        pytest.param(pa.int64(), pa.int32(), pa.int64(), id="int32-to-int64"),
        pytest.param(pa.int32(), pa.int16(), pa.int32(), id="int16-to-int32"),
        pytest.param(pa.float64(), pa.int64(), pa.float64(), id="int-to-float64"),
        pytest.param(pa.float32(), pa.int32(), pa.float64(), id="int-to-float64-from-float32"),
        pytest.param(pa.float64(), pa.float32(), pa.float64(), id="float32-to-float64"),
        pytest.param(pa.int64(), pa.float32(), pa.float64(), id="big-int-into-float32"),
        pytest.param(
            pa.decimal128(12, 2), pa.decimal128(5, 2), pa.decimal128(12, 2), id="decimal-precision"
        ),
        pytest.param(
            pa.decimal128(6, 4),
            pa.decimal128(5, 1),
            pa.decimal128(8, 4),
            id="decimal-scale-keeps-digits",
        ),
        pytest.param(pa.int64(), pa.decimal128(5, 2), pa.decimal128(21, 2), id="int-into-decimal"),
    ],
)
def test_widening_rules(value: pa.DataType, column: pa.DataType, wider: pa.DataType) -> None:
    assert widened_type(value, column) == wider


@pytest.mark.parametrize(
    ("value", "column"),
    [
        pytest.param(pa.string(), pa.int64(), id="string-into-int"),
        pytest.param(pa.int64(), pa.string(), id="int-into-string"),
        pytest.param(pa.uint64(), pa.int64(), id="uint64-into-int64"),
        pytest.param(pa.struct([("x", pa.int64())]), pa.int64(), id="struct-into-int"),
        pytest.param(pa.int64(), pa.struct([("x", pa.int64())]), id="int-into-struct"),
        pytest.param(pa.decimal128(38, 0), pa.decimal128(38, 10), id="decimal-beyond-38"),
        pytest.param(pa.bool_(), pa.int64(), id="bool-into-int"),
    ],
)
def test_no_widening_without_a_type_that_holds_both(
    value: pa.DataType, column: pa.DataType
) -> None:
    assert widened_type(value, column) is None


def test_widen_to_string_takes_any_scalar_but_never_nested_values() -> None:
    assert widened_type(pa.string(), pa.int64(), widen_to_string=True) == pa.string()
    assert widened_type(pa.string(), pa.timestamp("us"), widen_to_string=True) == pa.string()
    assert widened_type(pa.string(), pa.struct([("x", pa.int8())]), widen_to_string=True) is None
    plan = plan_schema(
        pa.schema([("s", pa.string())]), pa.table({"s": [1, 2]}), "p", widen_to_string=True
    )
    assert plan.widened == ()
    assert plan.rows.column("s").to_pylist() == ["1", "2"]


def test_a_plan_lists_widenings_and_casts_the_batch_to_the_new_type() -> None:
    rows = pa.table({"a": pa.array([1.5]), "f": pa.array([1], pa.int64()), "s": ["x"]})
    table = pa.schema([("a", pa.int32()), ("f", pa.float32()), ("s", pa.string())])
    plan = plan_schema(table, rows, "p")
    assert plan.widened == (
        Widening("a", pa.int32(), pa.float64()),
        Widening("f", pa.float32(), pa.float64()),
    )
    assert plan.rows.schema.field("f").type == pa.float64()
    assert plan.new_fields == ()


def test_key_columns_are_never_widened() -> None:
    table = pa.schema([("_offset", pa.int32()), ("id", pa.int32())])
    rows = pa.table({"_offset": pa.array([1], pa.int64()), "id": pa.array([1], pa.int64())})
    with pytest.raises(SchemaConflictError, match=r"field 'id' arrived as int64 .* int32"):
        plan_schema(table, rows.select(["id"]), "p", protected=("_offset", "id"))


def test_a_conflict_message_is_one_line_naming_pipeline_field_and_both_types() -> None:
    table = pa.schema([("a", pa.float64())])
    with pytest.raises(SchemaConflictError) as info:
        plan_schema(table, pa.table({"a": ["x"]}), "orders")
    assert str(info.value) == (
        "pipeline 'orders': field 'a' arrived as string but the table column is double"
    )
