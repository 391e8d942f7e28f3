"""The Kafka Connect JSON converter's output, with or without schemas, vectorised.

With ``schemas.enable=true`` every message is ``{"schema": {...}, "payload": {...}}``. The schema
cannot be read by ``pyarrow.json`` along with the data: its field defaults change type from field
to field (``"default": "false"`` here, ``0`` there). So a batch is read twice, both times in one
C++ call per group of messages: first only ``schema`` (with a fixed Arrow type for Connect
schemas, anything else in the message skipped), grouped by distinct schema (a fingerprint per
message, computed columnar); then, per distinct schema, only ``payload``, with the Arrow types
that schema gives (``connect.json_type``), and converted to the real logical types
(``connect.convert``). Messages without the envelope (``schemas.enable=false``) are plain JSON
objects, read as the ``json`` format reads them (types inferred, or fixed by ``columns:``).
"""

from __future__ import annotations

import io
import json
import threading
from collections.abc import Sequence
from typing import Any

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc
import pyarrow.json as pj

from connector.formats.base import MALFORMED, Decoded, Failure
from connector.formats.connect import (
    ConnectField,
    Problems,
    UnsupportedSchemaError,
    convert_table,
    json_type,
)
from connector.formats.json import JsonFormat
from connector.formats.unify import combine

_PREFIX = b'{"schema":'
_LEVELS = 6  # Connect schemas nested this deep: envelope, row, column, its fields, ...
_MIN_BLOCK = 4 << 20


def _schema_type(level: int = 0) -> pa.DataType:
    params = pa.struct([("scale", pa.string()), ("connect.decimal.precision", pa.string())])
    fields = [
        ("type", pa.string()),
        ("name", pa.string()),
        ("field", pa.string()),
        ("optional", pa.bool_()),
        ("parameters", params),
    ]
    if level < _LEVELS:
        child = _schema_type(level + 1)
        fields += [("fields", pa.list_(child)), ("items", child)]
    else:  # only to tell that there is more
        more = pa.struct([("type", pa.string())])
        fields += [("fields", pa.list_(more)), ("items", more)]
    return pa.struct(fields)


_SCHEMA = pa.schema([("schema", _schema_type())])


class ConnectJsonFormat:
    """Values (or keys) written by Kafka Connect's JSON converter. ``explicit`` types fields of
    the messages without schemas, as ``columns:`` does for the ``json`` format."""

    def __init__(self, explicit: pa.Schema | None = None) -> None:
        self.plain = JsonFormat(explicit)
        self._compiled: dict[str, tuple[ConnectField, pa.Schema] | str] = {}
        self._lock = threading.Lock()

    def decode_values(self, values: Sequence[bytes]) -> Decoded:
        n = len(values)
        if not n:
            return Decoded(pa.table({}), np.empty(0, np.int64))
        enveloped = _starts_with(values, _PREFIX)
        parts: list[tuple[np.ndarray, pa.Table]] = []
        failures: dict[int, Failure] = {}
        plain = np.flatnonzero(~enveloped)
        if len(plain):
            subset = values if len(plain) == n else [values[i] for i in plain.tolist()]
            decoded = self.plain.decode_values(subset)
            for i, failure in decoded.failures.items():
                failures[int(plain[i])] = failure
            parts.append((plain[decoded.rows], decoded.table))
        framed = np.flatnonzero(enveloped)
        if len(framed):
            self._enveloped(values, framed, parts, failures)
        table, rows = combine(parts, failures)
        return Decoded(table, rows, failures)

    # -- with schemas ------------------------------------------------------------------------
    def _enveloped(
        self,
        values: Sequence[bytes],
        index: np.ndarray,
        parts: list[tuple[np.ndarray, pa.Table]],
        failures: dict[int, Failure],
    ) -> None:
        subset = [values[i] for i in index.tolist()]
        schemas = _read(subset, _SCHEMA)
        if schemas is None:  # some are not JSON: find them one by one (the error path)
            good = []
            for i, value in zip(index.tolist(), subset, strict=True):
                reason = _not_json(value)
                if reason:
                    failures[i] = Failure(MALFORMED, reason)
                else:
                    good.append(i)
            if good:
                self._enveloped(values, np.array(good, np.int64), parts, failures)
            return
        column = schemas.column("schema").combine_chunks()
        prints = _fingerprint(column)
        encoded = pc.dictionary_encode(prints)
        groups = encoded.indices.to_numpy(zero_copy_only=False)
        for g, text in enumerate(encoded.dictionary.to_pylist()):
            members = np.flatnonzero(groups == g)
            compiled = self._compile(text, column, int(members[0]))
            rows = index[members]
            if isinstance(compiled, str):
                for i in rows.tolist():
                    failures[i] = Failure(MALFORMED, compiled)
                continue
            self._payloads(values, rows, compiled, parts, failures)

    def _compile(
        self, text: str, column: pa.StructArray, first: int
    ) -> tuple[ConnectField, pa.Schema] | str:
        """The Connect schema of a group and the payload's reading type (cached), or why not."""
        with self._lock:
            found = self._compiled.get(text)
            if found is not None:
                return found
            schema = column[first].as_py()
            try:
                if _too_deep(schema):
                    msg = f"the schema nests more than {_LEVELS} levels"
                    raise UnsupportedSchemaError(msg)
                top = ConnectField.from_json(schema)
                if top.type != "struct":
                    msg = f"the payload is a Connect {top.type or 'untyped'} value, not a struct"
                    raise UnsupportedSchemaError(msg)
                result: tuple[ConnectField, pa.Schema] | str = (
                    top,
                    pa.schema([("payload", json_type(top))]),
                )
            except UnsupportedSchemaError as exc:
                result = f"JSON converter schema: {exc}"
            if len(self._compiled) > 1000:
                self._compiled.clear()
            self._compiled[text] = result
            return result

    def _payloads(
        self,
        values: Sequence[bytes],
        rows: np.ndarray,
        compiled: tuple[ConnectField, pa.Schema],
        parts: list[tuple[np.ndarray, pa.Table]],
        failures: dict[int, Failure],
    ) -> None:
        top, schema = compiled
        subset = [values[i] for i in rows.tolist()]
        table = _read(subset, schema)
        if table is None:  # decimal.format=NUMERIC writes decimals as numbers
            table = _read(subset, pa.schema([("payload", json_type(top, numeric_decimals=True))]))
        if table is None:
            good = []
            for i, value in zip(rows.tolist(), subset, strict=True):
                if _read([value], schema) is None:
                    reason = _not_json(value) or "the payload does not match its schema"
                    failures[i] = Failure(MALFORMED, reason)
                else:
                    good.append(i)
            if good:
                self._payloads(values, np.array(good, np.int64), compiled, parts, failures)
            return
        payload = table.column("payload").combine_chunks()
        present = np.asarray(payload.is_valid())
        for i in rows[~present].tolist():
            failures[i] = Failure(MALFORMED, "the JSON converter's envelope has no payload")
        flat = pa.Table.from_arrays(payload.flatten(), names=[f.name for f in payload.type])
        problems = Problems()
        flat = convert_table(flat, top, problems)
        for i, failure in problems.failures.items():
            failures.setdefault(int(rows[i]), failure)
        parts.append((rows, flat))


def _read(values: Sequence[bytes], schema: pa.Schema) -> pa.Table | None:
    data = b"\n".join(values)
    longest = max(map(len, values), default=0)
    newlines = data.count(b"\n") != len(values) - 1
    try:
        table = pj.read_json(
            io.BytesIO(data),
            read_options=pj.ReadOptions(block_size=max(_MIN_BLOCK, 2 * longest + 2)),
            parse_options=pj.ParseOptions(
                explicit_schema=schema,
                unexpected_field_behavior="ignore",
                newlines_in_values=newlines,
            ),
        )
    except (pa.ArrowInvalid, pa.ArrowNotImplementedError):
        return None
    return table if table.num_rows == len(values) else None


def _not_json(value: bytes) -> str:
    try:
        json.loads(value)
    except (ValueError, RecursionError) as exc:
        return f"not a valid JSON object: {exc}"
    return ""


def _starts_with(values: Sequence[bytes], prefix: bytes) -> np.ndarray:
    """Which values start with ``prefix``, without a Python loop."""
    lengths = np.fromiter(map(len, values), np.int64, len(values))
    data = np.frombuffer(b"".join(values) + b"\x00" * len(prefix), np.uint8)
    starts = np.cumsum(lengths) - lengths
    head = data[starts[:, None] + np.arange(len(prefix))]
    return (lengths >= len(prefix)) & (head == np.frombuffer(prefix, np.uint8)).all(axis=1)


def _fingerprint(array: pa.Array) -> pa.Array:
    """One string per element that is equal exactly when the elements are (nulls included)."""
    if pa.types.is_struct(array.type):
        children = []
        for i in range(array.type.num_fields):
            child = array.field(i)
            if array.offset or len(child) != len(array):
                child = child.slice(array.offset, len(array))
            children.append(_fingerprint(child))
        if not children:
            joined = pa.array([""] * len(array), pa.string())
        else:
            joined = pc.binary_join_element_wise(*children, "\x1f")
        if array.null_count:
            joined = pc.if_else(pc.is_null(array), pa.scalar("\x00"), joined)
        return pc.binary_join_element_wise("\x02", joined, "\x03")
    if pa.types.is_list(array.type):
        lengths = pc.fill_null(pc.list_value_length(array), 0).to_numpy().astype(np.int32)
        items = _fingerprint(pc.list_flatten(array))
        offsets = np.zeros(len(array) + 1, np.int32)
        np.cumsum(lengths, out=offsets[1:])
        joined = pc.binary_join(pa.ListArray.from_arrays(pa.array(offsets), items), "\x1e")
        if array.null_count:
            joined = pc.if_else(pc.is_null(array), pa.scalar("\x00"), joined)
        return pc.binary_join_element_wise("\x04", joined, "\x05")
    text = array.cast(pa.string())
    return pc.fill_null(pc.binary_join_element_wise("\x01", text, ""), "\x00")


def _too_deep(schema: Any, level: int = 0) -> bool:
    if not isinstance(schema, dict):
        return False
    if level >= _LEVELS:
        return bool(schema.get("fields") or schema.get("items"))
    return any(_too_deep(f, level + 1) for f in schema.get("fields") or ()) or _too_deep(
        schema.get("items"), level + 1
    )
