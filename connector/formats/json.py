"""JSON objects to Arrow, vectorised: every value of a batch in one ``pyarrow.json`` call.

Values are joined with newlines and parsed in one multi-threaded C++ call. Only when that fails,
or yields a different number of rows than there were values, are the values looked at in parts:
the batch is bisected until each failing part is one message (its own reason), and the good
parts are joined again. A field whose type differs between messages (a number here, text there)
keeps the type it had first; the later messages that carry the other type are set aside.
"""

from __future__ import annotations

import io
import re
from collections.abc import Sequence

import numpy as np
import pyarrow as pa
import pyarrow.json as pj

from connector.formats.base import INVALID_UTF8, MALFORMED, Decoded, Failure
from connector.formats.unify import combine

_ROW_SUFFIX = re.compile(r"\s*in row \d+$")
_MIN_BLOCK = 4 << 20
_SMALL = 8  # parts this small are parsed message by message


class JsonFormat:
    """JSON objects, one per message; ``explicit`` fixes the Arrow type of some fields."""

    def __init__(self, explicit: pa.Schema | None = None) -> None:
        self.explicit = explicit

    def decode_values(self, values: Sequence[bytes]) -> Decoded:
        n = len(values)
        if not n:
            return Decoded(pa.table({}), np.empty(0, np.int64))
        joined = _Joined(values)
        failures = _not_objects(values, joined)
        for i, failure in _invalid_utf8(values, joined).items():
            failures.setdefault(i, failure)
        if not failures:
            table = self._parse(values, joined)
            if table is not None:
                return Decoded(table, np.arange(n, dtype=np.int64))
        parts: list[tuple[np.ndarray, pa.Table]] = []
        index = np.arange(n, dtype=np.int64)
        if failures:
            index = index[[i not in failures for i in range(n)]]
        if len(index):
            self._bisect(values, index, parts, failures)
        table, rows = combine(parts, failures)
        return Decoded(table, rows, failures)

    # -- parsing -----------------------------------------------------------------------------
    def _parse(self, values: Sequence[bytes], joined: _Joined | None = None) -> pa.Table | None:
        """One table for all values, or None if they do not parse as one object each."""
        joined = joined or _Joined(values)
        # A value with a raw newline (pretty-printed JSON) needs the slower, exact splitter.
        embedded_newlines = joined.data.count(b"\n") != len(values) - 1
        try:
            table = pj.read_json(
                io.BytesIO(joined.data),
                read_options=pj.ReadOptions(block_size=max(_MIN_BLOCK, 2 * joined.longest + 2)),
                parse_options=self._parse_options(embedded_newlines),
            )
        except (pa.ArrowInvalid, pa.ArrowNotImplementedError):
            return None
        return table if table.num_rows == len(values) else None

    def _parse_options(self, newlines_in_values: bool) -> pj.ParseOptions:
        if self.explicit is None:
            return pj.ParseOptions(newlines_in_values=newlines_in_values)
        return pj.ParseOptions(
            explicit_schema=self.explicit,
            unexpected_field_behavior="infer",
            newlines_in_values=newlines_in_values,
        )

    def _bisect(
        self,
        values: Sequence[bytes],
        index: np.ndarray,
        parts: list[tuple[np.ndarray, pa.Table]],
        failures: dict[int, Failure],
    ) -> None:
        """Split ``index`` until every part parses or is one failing message (error path)."""
        if len(index) <= _SMALL:
            for i in index.tolist():
                table, reason = self._single(values[i])
                if table is None:
                    failures[i] = Failure(MALFORMED, reason)
                else:
                    parts.append((np.array([i], np.int64), table))
            return
        table = self._parse([values[i] for i in index.tolist()])
        if table is not None:
            parts.append((index, table))
            return
        half = len(index) // 2
        self._bisect(values, index[:half], parts, failures)
        self._bisect(values, index[half:], parts, failures)

    def _single(self, value: bytes) -> tuple[pa.Table | None, str]:
        try:
            table = pj.read_json(io.BytesIO(value), parse_options=self._parse_options(True))
        except (pa.ArrowInvalid, pa.ArrowNotImplementedError) as exc:
            return None, f"not a valid JSON object: {_ROW_SUFFIX.sub('', str(exc))}"
        if table.num_rows != 1:
            return None, f"expected one JSON object, found {table.num_rows}"
        return table, ""


_OPEN_BRACE = ord("{")
_WHITESPACE = frozenset(b" \t\r\n")


class _Joined:
    """Values joined with newlines, as ``pyarrow.json`` reads them, and where each one starts."""

    def __init__(self, values: Sequence[bytes]) -> None:
        self.lengths = np.fromiter(map(len, values), np.int64, len(values))
        self.data = b"\n".join(values)
        self.starts = np.cumsum(self.lengths + 1) - (self.lengths + 1)
        self.longest = int(self.lengths.max()) if len(values) else 0

    def first_bytes(self) -> np.ndarray:
        """The first byte of every value (0 for empty values)."""
        if not self.data:
            return np.zeros(len(self.lengths), np.uint8)
        buf = np.frombuffer(self.data, np.uint8)
        first = buf[np.minimum(self.starts, len(buf) - 1)]
        return np.where(self.lengths > 0, first, 0).astype(np.uint8)


def _invalid_utf8(values: Sequence[bytes], joined: _Joined) -> dict[int, Failure]:
    """Values that are not valid UTF-8 (pyarrow's JSON reader would pass such strings through
    into ``string`` columns that no database accepts). One vectorised check of the whole batch;
    only when it fails are the values checked one by one."""
    data = pa.py_buffer(joined.data)
    offsets = pa.py_buffer(np.array([0, len(joined.data)], np.int64))
    try:
        pa.Array.from_buffers(pa.large_binary(), 1, [None, offsets, data]).cast(pa.large_string())
    except pa.ArrowInvalid:
        pass
    else:
        return {}
    failures: dict[int, Failure] = {}
    for i, value in enumerate(values):
        try:
            value.decode("utf-8")
        except UnicodeDecodeError as exc:
            failures[i] = Failure(INVALID_UTF8, f"value is not valid UTF-8 (byte {exc.start})")
    return failures


def _not_objects(values: Sequence[bytes], joined: _Joined) -> dict[int, Failure]:
    """Values that cannot be a JSON object because they do not start with ``{``.

    Checked before pyarrow sees them: besides being wrong, a batch whose first value is the
    JSON literal ``null`` crashes pyarrow's JSON reader (segmentation fault, pyarrow 26).
    """
    failures: dict[int, Failure] = {}
    for i in np.flatnonzero(joined.first_bytes() != _OPEN_BRACE).tolist():
        value = values[i]
        if value and value[0] in _WHITESPACE:
            value = value.lstrip()
            if value[:1] == b"{":
                continue
        if not value:
            failures[i] = Failure(MALFORMED, "value is empty, not a JSON object")
        else:
            shown = chr(value[0]) if 32 < value[0] < 127 else f"0x{value[0]:02x}"
            failures[i] = Failure(
                MALFORMED, f"not a valid JSON object: the value starts with {shown!r}"
            )
    return failures
