"""``flatten: N``: struct fields become top-level ``parent__child`` columns, N levels deep.

Applied to a decoded batch before the sink sees it, so every sink stores the same columns. A
null struct gives nulls in each of its child columns; lists and maps are left as they are
(a list of structs has no single value per row to spread into columns).
"""

from __future__ import annotations

from collections import Counter

import pyarrow as pa
import pyarrow.compute as pc

from kafka_etl.errors import SchemaConflictError

SEPARATOR = "__"


def flatten_structs(rows: pa.Table, depth: int, pipeline: str) -> pa.Table:
    """``rows`` with struct columns spread into ``a__b`` columns, ``depth`` levels deep."""
    for _ in range(depth):
        if not any(pa.types.is_struct(f.type) for f in rows.schema):
            break
        rows = _one_level(rows, pipeline)
    return rows


def _one_level(rows: pa.Table, pipeline: str) -> pa.Table:
    names: list[str] = []
    columns: list[pa.ChunkedArray] = []
    for field, column in zip(rows.schema, rows.columns, strict=True):
        if not pa.types.is_struct(field.type):
            names.append(field.name)
            columns.append(column)
            continue
        for index in range(field.type.num_fields):
            child = field.type.field(index)
            names.append(f"{field.name}{SEPARATOR}{child.name}")
            # struct_field honours the parent's validity: a null struct gives null children.
            columns.append(pc.struct_field(column, [index]))
    twice = [name for name, n in Counter(names).items() if n > 1]
    if twice:
        msg = (
            f"pipeline {pipeline!r}: flatten makes column {twice[0]!r}, which the message also"
            " has as a field of its own"
        )
        raise SchemaConflictError(msg)
    return pa.Table.from_arrays(columns, names=names)
