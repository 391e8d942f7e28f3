"""One table from parts decoded separately (JSON chunks, or one part per writer schema).

Parts are promoted to common types (``concat_tables(promote_options="permissive")``: missing
columns become null, int32 widens to int64, int to double, struct fields merge). Where that
fails, the rules are, per message rather than per batch:

* a field whose types cannot be joined keeps the type of the part that comes first in the
  batch; messages of later parts that carry a value for it are set aside (``type_conflict``);
* a value the joined type cannot hold exactly (an integer beyond 2^53 in a column that became
  double) sets its message aside rather than being rounded.

Rows come back in message order.
"""

from __future__ import annotations

import numpy as np
import pyarrow as pa

from connector.formats.base import TYPE_CONFLICT, Failure

Part = tuple[np.ndarray, pa.Table]  # positions of the part's rows, ascending; its table


def combine(parts: list[Part], failures: dict[int, Failure]) -> tuple[pa.Table, np.ndarray]:
    """``(table, positions)`` of all parts' rows in position order; conflicts go to failures."""
    parts = [p for p in parts if len(p[0])]
    if not parts:
        return pa.table({}), np.empty(0, np.int64)
    parts.sort(key=lambda p: int(p[0][0]))
    if len(parts) == 1:
        return parts[0][1], parts[0][0]
    try:
        table = pa.concat_tables([t for _, t in parts], promote_options="permissive")
    except (pa.ArrowTypeError, pa.ArrowInvalid):
        parts = _resolve(parts, failures)
        table = pa.concat_tables([t for _, t in parts], promote_options="permissive")
    positions = np.concatenate([i for i, _ in parts])
    if len(positions) > 1 and (np.diff(positions) < 0).any():
        order = np.argsort(positions, kind="stable")
        return table.take(pa.array(order)), positions[order]
    return table, positions


def _resolve(parts: list[Part], failures: dict[int, Failure]) -> list[Part]:
    """Drop conflicting values (first type wins), then cast every part to the joined schema."""
    schema = parts[0][1].schema
    typed: list[Part] = []
    for index, table in parts:
        for field in table.schema:
            if field.name not in schema.names:
                continue
            seen = schema.field(field.name)
            if compatible(seen.type, field.type):
                continue
            reason = f"field {field.name!r} is {field.type}, earlier messages had {seen.type}"
            index, table = _set_aside(index, table, field.name, reason, failures)
            position = table.schema.get_field_index(field.name)
            table = table.set_column(position, seen, pa.nulls(table.num_rows, seen.type))
        schema = pa.unify_schemas([schema, table.schema], promote_options="permissive")
        typed.append((index, table))
    return [_cast(index, table, schema, failures) for index, table in typed]


def _cast(
    index: np.ndarray, table: pa.Table, schema: pa.Schema, failures: dict[int, Failure]
) -> Part:
    for field in table.schema:
        target = schema.field(field.name).type
        if field.type == target:
            continue
        column = table.column(field.name)
        try:
            column.cast(target)
            continue
        except (pa.ArrowInvalid, pa.ArrowTypeError, pa.ArrowNotImplementedError):
            pass
        # Error path: the values that do not convert exactly, one by one.
        bad = np.zeros(table.num_rows, bool)
        for i, value in enumerate(column.to_pylist()):
            if value is not None:
                try:
                    pa.scalar(value, field.type).cast(target)
                except (pa.ArrowInvalid, pa.ArrowTypeError, pa.ArrowNotImplementedError):
                    bad[i] = True
        reason = f"field {field.name!r}: a value of this message does not fit {target} exactly"
        for i in index[bad].tolist():
            failures.setdefault(int(i), Failure(TYPE_CONFLICT, reason))
        table, index = table.filter(pa.array(~bad)), index[~bad]
    columns = [
        table.column(f.name).cast(f.type) if f.name in table.column_names else None for f in schema
    ]
    arrays = [
        c if c is not None else pa.nulls(table.num_rows, f.type)
        for c, f in zip(columns, schema, strict=True)
    ]
    return index, pa.Table.from_arrays(arrays, schema=schema)


def _set_aside(
    index: np.ndarray, table: pa.Table, name: str, reason: str, failures: dict[int, Failure]
) -> Part:
    carried = np.asarray(table.column(name).is_valid())
    for i in index[carried].tolist():
        failures.setdefault(int(i), Failure(TYPE_CONFLICT, reason))
    return index[~carried], table.filter(pa.array(~carried))


def compatible(a: pa.DataType, b: pa.DataType) -> bool:
    """Can columns of types ``a`` and ``b`` be joined by permissive promotion?"""
    try:
        pa.unify_schemas(
            [pa.schema([pa.field("f", a)]), pa.schema([pa.field("f", b)])],
            promote_options="permissive",
        )
    except (pa.ArrowTypeError, pa.ArrowInvalid):
        return False
    return True
