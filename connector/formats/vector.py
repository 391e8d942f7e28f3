"""Reading binary encodings of many messages at once with numpy, for the Avro and Protobuf decoders.

All message bodies of a batch sit in one ``uint8`` array. A ``Cursor`` keeps one read position and
one end per row (a message, or a nested span such as an embedded Protobuf message), and every read
is one numpy operation over a set of rows: a varint of 200,000 messages is decoded by a handful of
array operations, not 200,000 Python calls. A row that runs past its end or holds a malformed
value is marked failed with a reason and takes no further part; the other rows go on.
"""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np
import pyarrow as pa

PAD = 16  # zero bytes after the data, so fixed-width reads near the end stay in bounds


def join(values: Sequence[bytes]) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """``(data, starts, ends)`` of the values laid end to end, ``data`` padded with ``PAD``."""
    lengths = np.fromiter(map(len, values), np.int64, len(values))
    ends = np.cumsum(lengths)
    starts = ends - lengths
    data = np.frombuffer(b"".join(values) + bytes(PAD), np.uint8)
    return data, starts, ends


class Cursor:
    """Read positions, ends and failures of a set of rows over one data buffer."""

    def __init__(self, data: np.ndarray, pos: np.ndarray, end: np.ndarray) -> None:
        self.data = data
        self.pos = pos.astype(np.int64, copy=True)
        self.end = end.astype(np.int64, copy=False)
        self.code = np.zeros(len(pos), np.int32)  # 0: fine, else 1 + index into reasons
        self.reasons: list[str] = []
        self._codes: dict[str, int] = {}
        self._limit = len(data) - PAD

    # -- failures --------------------------------------------------------------------------
    def fail(self, rows: np.ndarray, reason: str) -> None:
        """Mark ``rows`` failed with ``reason`` unless they failed before."""
        rows = rows[self.code[rows] == 0]
        if rows.size:
            code = self._codes.get(reason)
            if code is None:
                self.reasons.append(reason)
                code = self._codes[reason] = len(self.reasons)
            self.code[rows] = code

    def ok(self, rows: np.ndarray) -> np.ndarray:
        """The rows among ``rows`` that have not failed."""
        return rows[self.code[rows] == 0]

    def failures(self) -> dict[int, str]:
        bad = np.flatnonzero(self.code)
        return {int(i): self.reasons[int(c) - 1] for i, c in zip(bad, self.code[bad], strict=True)}

    def remaining(self, rows: np.ndarray) -> np.ndarray:
        return self.end[rows] - self.pos[rows]

    def _at(self, rows: np.ndarray) -> np.ndarray:
        # Positions never pass their row's end (see _advance), so reads up to PAD bytes
        # beyond them stay inside the buffer.
        return self.pos[rows]

    def _advance(self, rows: np.ndarray, by: np.ndarray | int, what: str) -> None:
        new = self.pos[rows] + by
        end = self.end[rows]
        over = new > end
        if over.any():
            self.fail(rows[over], f"truncated: {what} runs past the end of the message")
            new = np.minimum(new, end)
        self.pos[rows] = new

    # -- primitives ------------------------------------------------------------------------
    def varint(self, rows: np.ndarray, what: str = "varint") -> np.ndarray:
        """Unsigned LEB128 varints (up to 64 bits) as ``uint64``."""
        at = self._at(rows)
        byte = self.data[at]
        value = (byte & 0x7F).astype(np.uint64)
        length = np.ones(len(rows), np.int64)
        more = np.flatnonzero(byte & 0x80)
        k = 1
        # Byte k only for the rows whose varint is still going: most values are short.
        while more.size and k < 10:
            byte = self.data[at[more] + k]
            if k == 9:
                overflow = byte > 1
                if overflow.any():
                    self.fail(rows[more[overflow]], f"malformed {what} (more than 64 bits)")
            value[more] |= (byte & 0x7F).astype(np.uint64) << np.uint64(7 * k)
            length[more] += 1
            more = more[(byte & 0x80) != 0]
            k += 1
        if more.size:
            self.fail(rows[more], f"malformed {what} (more than 10 bytes)")
        self._advance(rows, length, what)
        return value

    def zigzag(self, rows: np.ndarray, what: str = "long") -> np.ndarray:
        """Zig-zag encoded varints as ``int64`` (Avro int/long, Protobuf sint)."""
        u = self.varint(rows, what)
        return ((u >> np.uint64(1)) ^ (np.uint64(0) - (u & np.uint64(1)))).view(np.int64)

    def fixed(self, rows: np.ndarray, size: int, what: str) -> np.ndarray:
        """Start positions of ``size``-byte values; the cursor moves past them."""
        at = self._at(rows)
        self._advance(rows, size, what)
        return at

    def little_endian(self, rows: np.ndarray, dtype: np.dtype, what: str) -> np.ndarray:
        size = dtype.itemsize
        at = self.fixed(rows, size, what)
        window = self.data[at[:, None] + np.arange(size)]
        return np.ascontiguousarray(window).view(dtype).reshape(len(rows))

    def span(self, rows: np.ndarray, lengths: np.ndarray, what: str) -> np.ndarray:
        """Start positions of values of the given lengths; checks they fit, moves past them."""
        bad = (lengths < 0) | (lengths > self.remaining(rows))
        if bad.any():
            self.fail(rows[bad], f"truncated: {what} length exceeds the bytes left in the message")
            lengths = np.where(bad, 0, lengths)
        at = self._at(rows)
        self._advance(rows, lengths, what)
        return at


def gather(data: np.ndarray, starts: np.ndarray, lengths: np.ndarray) -> tuple[np.ndarray, bytes]:
    """Arrow-style ``(offsets, bytes)`` of the byte ranges ``[start, start + length)``."""
    lengths = lengths.astype(np.int64, copy=False)
    offsets = np.zeros(len(lengths) + 1, np.int64)
    np.cumsum(lengths, out=offsets[1:])
    total = int(offsets[-1])
    if total == 0:
        return offsets, b""
    index = np.repeat(starts - offsets[:-1], lengths) + np.arange(total, dtype=np.int64)
    return offsets, data[index].tobytes()


def binary_array(
    data: np.ndarray, starts: np.ndarray, lengths: np.ndarray, valid: np.ndarray | None = None
) -> pa.Array:
    """A ``binary`` array of the byte ranges (null where ``valid`` is False)."""
    offsets, payload = gather(data, starts, lengths)
    if offsets[-1] >= 2**31:
        msg = "more than 2 GiB of bytes in one column of one batch"
        raise OverflowError(msg)
    mask = None if valid is None else pa.array(valid).buffers()[1]
    buffers = [mask, pa.py_buffer(offsets.astype(np.int32)), pa.py_buffer(payload)]
    return pa.Array.from_buffers(pa.binary(), len(lengths), buffers)


def as_text(cursor: Cursor, rows: np.ndarray, raw: pa.Array, what: str) -> pa.Array:
    """Cast a binary array to ``string``, failing the rows whose bytes are not valid UTF-8."""
    try:
        return raw.cast(pa.string())
    except pa.ArrowInvalid:
        pass
    # Error path only: find the offending rows one by one.
    values = raw.to_pylist()
    bad = np.zeros(len(values), bool)
    for i, value in enumerate(values):
        if value is not None:
            try:
                value.decode("utf-8")
            except UnicodeDecodeError:
                bad[i] = True
    cursor.fail(rows[bad], f"{what} is not valid UTF-8")
    cleaned = pa.array([None if b else v for v, b in zip(values, bad, strict=True)], raw.type)
    return cleaned.cast(pa.string())


def list_offsets(counts: np.ndarray) -> pa.Array:
    offsets = np.zeros(len(counts) + 1, np.int64)
    np.cumsum(counts, out=offsets[1:])
    if offsets[-1] >= 2**31:
        msg = "more than 2^31 list items in one batch"
        raise OverflowError(msg)
    return pa.array(offsets.astype(np.int32))


def regroup(pieces: list[pa.Array], owners: list[np.ndarray], typ: pa.DataType) -> pa.Array:
    """Items decoded round by round (item k of every row) put back row by row."""
    if not pieces:
        return pa.array([], typ)
    owner = np.concatenate(owners)
    order = np.argsort(owner, kind="stable")
    return pa.concat_arrays(pieces).take(pa.array(order))


def scatter(child: pa.Array, where: np.ndarray, n: int) -> pa.Array:
    """An array of length ``n`` with ``child``'s values at positions ``where``, null elsewhere."""
    index = np.full(n, -1, np.int64)
    index[where] = np.arange(len(where))
    return child.take(pa.array(index, mask=index < 0))


def map_array(counts: np.ndarray, keys: pa.Array, values: pa.Array, typ: pa.DataType) -> pa.Array:
    """A map column from per-row entry counts; a key repeated within one map keeps its last
    value, as decoders that build dictionaries do (and as DuckDB's MAP requires)."""
    n = len(counts)
    if keys.null_count:  # keys of messages that failed (e.g. invalid UTF-8): any placeholder
        keys = keys.fill_null(_placeholder(keys.type))
    owner = np.repeat(np.arange(n), counts)
    if len(owner):
        pairs = pa.table({"row": owner, "key": keys, "at": np.arange(len(owner))})
        last = pairs.group_by(["row", "key"]).aggregate([("at", "max")])
        if last.num_rows < len(owner):
            keep = np.sort(np.asarray(last.column("at_max")))
            keys, values = keys.take(pa.array(keep)), values.take(pa.array(keep))
            counts = np.bincount(owner[keep], minlength=n)
    return pa.MapArray.from_arrays(list_offsets(counts), keys, values, type=typ)


def _placeholder(typ: pa.DataType) -> pa.Scalar:
    if pa.types.is_string(typ):
        return pa.scalar("", typ)
    if pa.types.is_binary(typ):
        return pa.scalar(b"", typ)
    if pa.types.is_boolean(typ):
        return pa.scalar(False, typ)
    return pa.scalar(0, typ)
