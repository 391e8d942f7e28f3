"""Fitting a batch's Arrow schema to an existing table: shared by every sink.

New fields become new nullable columns. A value whose type the table's column can hold without
loss is cast to it. Anything else is a conflict, refused with a message naming the pipeline,
the field and both types, unless the column can be widened to hold both (below).
A JSON column (SQL sinks report it as Arrow's ``arrow.json`` extension type) takes any nested
value: the sink writes it as JSON text.

Widening (the column's type changes; every stored value keeps its meaning): a wider integer
(int32 -> int64), an integer or float32 into float64 (int -> float64, float32 -> float64), a
decimal with more digits (precision up, scale never down), and, with ``widen_to_string``, any
scalar into a string column. Columns of the table's key (``protected``) are never widened.
"""

from __future__ import annotations

from dataclasses import dataclass

import pyarrow as pa

from kafka_etl.errors import SchemaConflictError

_JSON = pa.json_()
# Decimal digits needed to hold every value of an integer type.
_DECIMAL_DIGITS = {
    pa.int8(): 3,
    pa.int16(): 5,
    pa.int32(): 10,
    pa.int64(): 19,
    pa.uint8(): 3,
    pa.uint16(): 5,
    pa.uint32(): 10,
    pa.uint64(): 20,
}


@dataclass(frozen=True, slots=True)
class Widening:
    """A column whose type changes from ``old`` to ``new`` (``new`` holds every ``old``)."""

    name: str
    old: pa.DataType
    new: pa.DataType


@dataclass(frozen=True, slots=True)
class SchemaPlan:
    rows: pa.Table  # the batch, cast to the table's types where they differ
    new_fields: tuple[pa.Field, ...]  # columns to add, in batch order
    widened: tuple[Widening, ...] = ()  # columns whose type grows, in batch order


def plan_schema(
    table: pa.Schema | None,
    rows: pa.Table,
    pipeline: str,
    *,
    widen_to_string: bool = False,
    protected: tuple[str, ...] = (),
) -> SchemaPlan:
    """Cast ``rows`` to ``table`` where safe, list the columns the table lacks and the ones
    to widen; refuse anything else (``SchemaConflictError``)."""
    # A column whose every value is null has no type yet; it is created once a value arrives.
    untyped = [f.name for f in rows.schema if pa.types.is_null(f.type)]
    if table is None:
        if untyped:
            rows = rows.drop_columns(untyped)
        return SchemaPlan(rows, tuple(rows.schema))
    existing = {f.name: f.type for f in table}
    new_fields: list[pa.Field] = []
    widened: list[Widening] = []
    for index, field in enumerate(rows.schema):
        target = existing.get(field.name)
        if target is None:
            if not pa.types.is_null(field.type):
                new_fields.append(field.with_nullable(True))
            continue
        if field.type == target or _storable(field.type, target):
            if field.type != target and _castable_here(field.type, target):
                rows = rows.set_column(index, field.name, rows.column(index).cast(target))
            continue
        if widen_to_string and _is_text(target) and not pa.types.is_nested(field.type):
            rows = rows.set_column(index, field.name, rows.column(index).cast(target))
            continue
        wider = widened_type(field.type, target, widen_to_string=widen_to_string)
        if wider is not None and field.name not in protected:
            widened.append(Widening(field.name, target, wider))
            if field.type != wider:
                rows = rows.set_column(index, field.name, rows.column(index).cast(wider))
            continue
        msg = (
            f"pipeline {pipeline!r}: field {field.name!r} arrived as {field.type}"
            f" but the table column is {target}"
        )
        raise SchemaConflictError(msg, field=field.name)
    missing = [name for name in untyped if name not in existing]
    if missing:
        rows = rows.drop_columns(missing)
    return SchemaPlan(rows, tuple(new_fields), tuple(widened))


def widened_type(
    value: pa.DataType, column: pa.DataType, *, widen_to_string: bool = False
) -> pa.DataType | None:
    """The type a ``column`` must become to hold ``value`` too, or None if no widening can."""
    t = pa.types
    if t.is_nested(value) or t.is_nested(column) or column == _JSON or value == _JSON:
        return None
    if t.is_integer(column) and t.is_integer(value):
        if t.is_signed_integer(column) and t.is_signed_integer(value):
            return value if value.bit_width > column.bit_width else None
        return None
    if (t.is_integer(column) or t.is_floating(column)) and (
        t.is_integer(value) or t.is_floating(value)
    ):
        return pa.float64()
    if t.is_decimal(column) and (t.is_decimal(value) or t.is_integer(value)):
        value_scale = value.scale if t.is_decimal(value) else 0
        value_digits = (
            value.precision - value.scale if t.is_decimal(value) else _DECIMAL_DIGITS[value]
        )
        scale = max(column.scale, value_scale)
        precision = max(column.precision - column.scale, value_digits) + scale
        if precision <= 38:
            return pa.decimal128(precision, scale)
        return None
    if widen_to_string and _is_text(value) and not _is_text(column):
        return pa.string()
    return None


def _storable(value: pa.DataType, column: pa.DataType) -> bool:
    """Can every ``value`` be stored in ``column`` without loss?"""
    t = pa.types
    if t.is_null(value):
        return True
    if column == _JSON:
        return t.is_nested(value) or t.is_interval(value) or value == _JSON
    if t.is_integer(value) and t.is_integer(column):
        return column.bit_width >= value.bit_width and (
            t.is_signed_integer(column) or t.is_unsigned_integer(value)
        )
    if t.is_integer(value) and t.is_floating(column):
        return value.bit_width <= 32 or column.bit_width == 64
    if t.is_integer(value) and t.is_decimal(column):
        return column.precision - column.scale >= _DECIMAL_DIGITS[value]
    if t.is_floating(value) and t.is_floating(column):
        return column.bit_width >= value.bit_width
    if t.is_timestamp(value) and t.is_timestamp(column):
        return True
    if _is_text(value) and _is_text(column):
        return True
    if t.is_struct(value) and t.is_struct(column):
        inner = {column.field(i).name: column.field(i).type for i in range(column.num_fields)}
        return all(
            f.name in inner and _storable(f.type, inner[f.name])
            for f in (value.field(i) for i in range(value.num_fields))
        )
    if _is_list(value) and _is_list(column):
        return _storable(value.value_type, column.value_type)
    return False


def _castable_here(value: pa.DataType, column: pa.DataType) -> bool:
    """Flat casts are done in Arrow; nested ones are left to the database's by-name insert,
    and values bound for a JSON column are encoded by the sink itself."""
    return not (pa.types.is_nested(value) or pa.types.is_nested(column) or column == _JSON)


def _is_text(t: pa.DataType) -> bool:
    return pa.types.is_string(t) or pa.types.is_large_string(t) or pa.types.is_string_view(t)


def _is_list(t: pa.DataType) -> bool:
    return pa.types.is_list(t) or pa.types.is_large_list(t)
