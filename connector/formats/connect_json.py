"""The Kafka Connect JSON converter's output, with or without schemas, vectorised.

With ``schemas.enable=true`` every message is ``{"schema":S,"payload":P}``, and every message of
one table version carries the same schema text S, byte for byte. ``pyarrow.json`` cannot read S
along with the data (its field defaults change type from field to field: ``"default":"false"``
here, ``0`` there), and S is most of each message. So the schema is read once per distinct
schema: the first message not yet grouped is parsed up to the end of S (``raw_decode``, one
message), all messages starting with the same ``{"schema":S,"payload":`` are found in one
vectorised ``starts_with``, their payloads are cut out in one ``binary_slice`` and read in one
``pyarrow.json`` call with the Arrow types S gives (``connect.json_type``), then converted to the
real logical types (``connect.convert``). The loop runs once per distinct schema in a batch.
Messages without the envelope (``schemas.enable=false``) are plain JSON objects, read as the
``json`` format reads them (types inferred, or fixed by ``columns:``).
"""

from __future__ import annotations

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
_PAYLOAD = ',"payload":'
_MIN_BLOCK = 4 << 20
_CACHE = 1000  # compiled schemas kept per format


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
        array = _binary(values)
        enveloped = np.asarray(pc.fill_null(pc.starts_with(array, pattern=_PREFIX.decode()), False))
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
            self._enveloped(values, array, framed, parts, failures)
        table, rows = combine(parts, failures)
        return Decoded(table, rows, failures)

    # -- with schemas ------------------------------------------------------------------------
    def _enveloped(
        self,
        values: Sequence[bytes],
        everything: pa.Array,
        index: np.ndarray,
        parts: list[tuple[np.ndarray, pa.Table]],
        failures: dict[int, Failure],
    ) -> None:
        whole = len(index) == len(values)
        array = everything if whole else everything.take(pa.array(index))
        subset = _Positions(values, index)
        remaining = np.arange(len(subset), dtype=np.int64)
        while len(remaining):
            first = int(remaining[0])
            found = self._schema_of(subset[first])
            if found is None:
                failures[int(index[first])] = Failure(MALFORMED, _not_json(subset[first]))
                remaining = remaining[1:]
                continue
            prefix, compiled = found
            pending = array if len(remaining) == len(subset) else array.take(pa.array(remaining))
            same = np.asarray(
                pc.fill_null(pc.starts_with(pending, pattern=prefix.decode("utf-8")), False)
            )
            same[0] = True
            members, remaining = remaining[same], remaining[~same]
            if isinstance(compiled, str):
                for i in index[members].tolist():
                    failures[i] = Failure(MALFORMED, compiled)
                continue
            taken = pending.filter(pa.array(same))
            self._payloads(taken, len(prefix), index[members], compiled, parts, failures)

    def _schema_of(self, value: bytes) -> tuple[bytes, tuple[ConnectField, pa.Schema] | str] | None:
        """The bytes up to the payload (``{"schema":S,"payload":``) and what S compiles to; None
        if the message is not that envelope."""
        try:
            text = value.decode("utf-8")
            _, end = _DECODER.raw_decode(text, len(_PREFIX))
        except (UnicodeDecodeError, ValueError, RecursionError):
            return None
        if not text.startswith(_PAYLOAD, end):
            return None
        schema_text = text[len(_PREFIX) : end]
        prefix = value[: len(text[: end + len(_PAYLOAD)].encode("utf-8"))]
        with self._lock:
            compiled = self._compiled.get(schema_text)
        if compiled is None:
            compiled = _compile(json.loads(schema_text))
            with self._lock:
                if len(self._compiled) >= _CACHE:
                    self._compiled.clear()
                self._compiled[schema_text] = compiled
        return prefix, compiled

    def _payloads(
        self,
        messages: pa.Array,
        start: int,
        rows: np.ndarray,
        compiled: tuple[ConnectField, pa.Schema],
        parts: list[tuple[np.ndarray, pa.Table]],
        failures: dict[int, Failure],
    ) -> None:
        """Read the payloads of messages sharing one schema, ``start`` bytes into each."""
        top, schema = compiled
        closed = np.asarray(pc.fill_null(pc.ends_with(messages, pattern="}"), False))
        for i in rows[~closed].tolist():
            failures[i] = Failure(MALFORMED, "not a valid JSON object: it does not end with '}'")
        # A payload that is no object (null: a JSON literal first in a block crashes pyarrow).
        opened = np.asarray(
            pc.fill_null(
                pc.starts_with(pc.binary_slice(messages, start, start + 1), pattern="{"), False
            )
        )
        for i in rows[closed & ~opened].tolist():
            failures[i] = Failure(MALFORMED, "the JSON converter's payload is not an object")
        closed &= opened
        if not closed.all():
            messages, rows = messages.filter(pa.array(closed)), rows[closed]
        if not len(rows):
            return
        payloads = pc.binary_slice(messages, start, -1)
        table = _read(payloads, schema)
        if table is None:  # decimal.format=NUMERIC writes decimals as numbers
            table = _read(payloads, pa.schema([("payload", json_type(top, numeric_decimals=True))]))
        if table is None:  # the error path: one by one, to name the bad ones
            good = []
            for j, i in enumerate(rows.tolist()):
                if _read(payloads.slice(j, 1), schema) is None:
                    value = messages[j].as_py()
                    reason = _not_json(value) or "the payload does not match its schema"
                    failures[i] = Failure(MALFORMED, reason)
                else:
                    good.append(j)
            if good:
                keep = pa.array(good, pa.int64())
                self._payloads(messages.take(keep), start, rows[good], compiled, parts, failures)
            return
        payload = table.column("payload").combine_chunks()
        flat = pa.Table.from_arrays(payload.flatten(), names=[f.name for f in payload.type])
        problems = Problems()
        flat = convert_table(flat, top, problems)
        for i, failure in problems.failures.items():
            failures.setdefault(int(rows[i]), failure)
        parts.append((rows, flat))


_DECODER = json.JSONDecoder()


def _compile(schema: Any) -> tuple[ConnectField, pa.Schema] | str:
    """A message schema and the reading type of its payload, or why it cannot be read."""
    try:
        if not isinstance(schema, dict):
            msg = "the schema is not a JSON object"
            raise UnsupportedSchemaError(msg)
        top = ConnectField.from_json(schema)
        if top.type != "struct":
            msg = f"the payload is a Connect {top.type or 'untyped'} value, not a struct"
            raise UnsupportedSchemaError(msg)
        return top, pa.schema([("payload", json_type(top))])
    except (UnsupportedSchemaError, AttributeError, TypeError, ValueError) as exc:
        return f"JSON converter schema: {exc}"


def _read(payloads: pa.Array, schema: pa.Schema) -> pa.Table | None:
    """Payloads (one JSON value each) read with ``schema``'s ``payload`` type in one call."""
    kind = payloads.type
    lines = pc.binary_join_element_wise(payloads, pa.scalar(b"\n", kind), pa.scalar(b"", kind))
    width = np.int64 if pa.types.is_large_binary(lines.type) else np.int32
    offsets = np.frombuffer(lines.buffers()[1], width)[lines.offset : lines.offset + len(lines) + 1]
    data = lines.buffers()[2]
    if data is None:
        return None
    block = data[int(offsets[0]) : int(offsets[-1])]
    longest = int(np.diff(offsets).max()) if len(offsets) > 1 else 0
    newlines = block.to_pybytes().count(b"\n") != len(payloads)
    try:
        table = pj.read_json(
            pa.BufferReader(block),
            read_options=pj.ReadOptions(block_size=max(_MIN_BLOCK, 2 * longest + 2)),
            parse_options=pj.ParseOptions(
                explicit_schema=pa.schema(list(schema.field("payload").type)),
                unexpected_field_behavior="ignore",
                newlines_in_values=newlines,
            ),
        )
    except (pa.ArrowInvalid, pa.ArrowNotImplementedError):
        return None
    if table.num_rows != len(payloads):
        return None
    struct = pa.StructArray.from_arrays(
        [c.combine_chunks() for c in table.columns], fields=list(table.schema)
    )
    return pa.table({"payload": struct})


def _not_json(value: bytes) -> str:
    try:
        json.loads(value)
    except (ValueError, RecursionError) as exc:
        return f"not a valid JSON object: {exc}"
    return 'not the JSON converter\'s envelope ({"schema":...,"payload":...})'


def _binary(values: Sequence[bytes]) -> pa.Array:
    """The values as one binary array, built from one joined buffer."""
    lengths = np.fromiter(map(len, values), np.int64, len(values))
    offsets = np.zeros(len(values) + 1, np.int64)
    np.cumsum(lengths, out=offsets[1:])
    data = pa.py_buffer(b"".join(values))
    return pa.Array.from_buffers(
        pa.large_binary(), len(values), [None, pa.py_buffer(offsets), data]
    )


class _Positions:
    """``values[index[j]]`` as ``self[j]``, without copying the list."""

    def __init__(self, values: Sequence[bytes], index: np.ndarray) -> None:
        self.values = values
        self.index = index

    def __getitem__(self, j: int) -> bytes:
        return self.values[int(self.index[j])]

    def __len__(self) -> int:
        return len(self.index)
