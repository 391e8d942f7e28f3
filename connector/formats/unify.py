"""One table from parts decoded separately (JSON chunks, or one part per writer schema).

Parts are promoted to common types (``concat_tables(promote_options="permissive")``: missing
columns become null, int32 widens to int64, int to double, struct fields merge). A field whose
types cannot be joined keeps the type of the part that comes first in the batch; the messages of
later parts that carry a value for it are set aside as ``type_conflict``. Rows come back in
message order.
"""

from __future__ import annotations

import numpy as np
import pyarrow as pa

from connector.formats.base import TYPE_CONFLICT, Failure

Part = tuple[np.ndarray, pa.Table]  # positions of the part's rows, ascending; its table


def combine(
    parts: list[Part], failures: dict[int, Failure], *, label: str = ""
) -> tuple[pa.Table, np.ndarray]:
    """``(table, positions)`` of all parts' rows in position order; conflicts go to failures.

    ``label`` names what distinguishes the parts in conflict messages, e.g. "schema id".
    """
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
    schema = parts[0][1].schema
    kept: list[Part] = []
    for index, table in parts:
        for field in table.schema:
            if field.name not in schema.names:
                continue
            seen = schema.field(field.name)
            if compatible(seen.type, field.type):
                continue
            carried = np.asarray(table.column(field.name).is_valid())
            reason = f"field {field.name!r} is {field.type}, earlier messages had {seen.type}"
            for i in index[carried].tolist():
                failures.setdefault(i, Failure(TYPE_CONFLICT, reason))
            table = table.filter(pa.array(~carried))
            index = index[~carried]
            position = table.schema.get_field_index(field.name)
            table = table.set_column(position, seen, pa.nulls(table.num_rows, seen.type))
        schema = pa.unify_schemas([schema, table.schema], promote_options="permissive")
        kept.append((index, table))
    return kept


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
