"""Arrow types named in pipeline definitions (``columns: {amount: float64}``)."""

from __future__ import annotations

import pyarrow as pa


def parse_arrow_type(name: str, field: str) -> pa.DataType:
    """Resolve a type alias through pyarrow: ``int64``, ``string``, ``timestamp[ms, tz=UTC]``."""
    text = name.strip()
    if text.startswith("timestamp[") and text.endswith("]"):
        unit, _, zone = text[len("timestamp[") : -1].partition(",")
        try:
            return pa.timestamp(unit.strip(), tz=zone.strip().removeprefix("tz=").strip() or None)
        except (ValueError, pa.ArrowInvalid):
            pass
    else:
        try:
            return pa.type_for_alias(text)
        except ValueError:
            pass
    msg = f"column {field!r}: unknown Arrow type {name!r} (e.g. int64, float64, string, bool)"
    raise ValueError(msg)
