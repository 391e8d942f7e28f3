"""The Protobuf wire format split into field occurrences, for many messages at once.

``tokenize`` reads the field keys and values of every row of a cursor in lockstep rounds (round
k reads the k-th field of every message that has one), so the work is a handful of numpy
operations per round rather than Python per field. Occurrences come back sorted by field number,
then message, then wire order: each field's values for all messages are one contiguous slice.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from connector.formats.vector import Cursor

VARINT, I64, LEN, I32 = 0, 1, 2, 5


@dataclass(slots=True)
class Tokens:
    """The fields of a set of messages in wire order: one entry per field occurrence."""

    row: np.ndarray  # which message
    field: np.ndarray  # field number
    wire: np.ndarray  # wire type
    value: np.ndarray  # varint value, or the start of a LEN/I32/I64 payload (uint64)
    length: np.ndarray  # payload length (LEN), 4 or 8 (fixed), 0 (varint)

    def slice(self, a: int, b: int) -> Tokens:
        return Tokens(self.row[a:b], self.field[a:b], self.wire[a:b], self.value[a:b],
                      self.length[a:b])  # fmt: skip

    def take(self, index: np.ndarray) -> Tokens:
        return Tokens(
            self.row[index],
            self.field[index],
            self.wire[index],
            self.value[index],
            self.length[index],
        )


def tokenize(cur: Cursor) -> Tokens:
    """Split every row of ``cur`` into field occurrences (rows that fail stop early)."""
    rows = np.arange(len(cur.pos))
    active = rows[cur.pos < cur.end]
    parts: list[tuple[np.ndarray, ...]] = []
    while active.size:
        key = cur.varint(active, "field key")
        field = (key >> np.uint64(3)).astype(np.int64)
        wire = (key & np.uint64(7)).astype(np.int8)
        bad = (field == 0) | (field >= 2**29)
        if bad.any():
            cur.fail(active[bad], "invalid field number 0 or above 2^29-1")
        groups = (wire == 3) | (wire == 4)
        if groups.any():
            cur.fail(active[groups], "groups (wire types 3/4) are not supported")
        invalid = wire > 5
        if invalid.any():
            cur.fail(active[invalid], "invalid wire type 6 or 7")
        value = np.zeros(len(active), np.uint64)
        length = np.zeros(len(active), np.int64)
        for wt, size in ((I64, 8), (I32, 4)):
            m = np.flatnonzero(wire == wt)
            if m.size:
                value[m] = cur.fixed(active[m], size, "fixed-width value").astype(np.uint64)
                length[m] = size
        m = np.flatnonzero(wire == VARINT)
        if m.size:
            value[m] = cur.varint(active[m], "varint value")
        m = np.flatnonzero(wire == LEN)
        if m.size:
            n = cur.varint(active[m], "length").astype(np.int64)
            n = np.where(n < 0, -1, n)  # above 2^63: certainly past the end
            value[m] = cur.span(active[m], n, "length-delimited field").astype(np.uint64)
            length[m] = np.maximum(n, 0)
        ok = cur.code[active] == 0
        if ok.all():
            parts.append((active, field, wire, value, length))
        else:
            parts.append((active[ok], field[ok], wire[ok], value[ok], length[ok]))
            active = active[ok]
        active = active[cur.pos[active] < cur.end[active]]
    if not parts:
        empty = np.empty(0, np.int64)
        return Tokens(empty, empty, empty.astype(np.int8), empty.astype(np.uint64), empty)
    row, field, wire, value, length = (np.concatenate(c) for c in zip(*parts, strict=True))
    # By field, then message, then wire order: the concatenation is round by round, so a stable
    # sort on field and row keeps each message's occurrences of a field in wire order.
    order = np.argsort(field * len(cur.pos) + row, kind="stable")
    return Tokens(row[order], field[order], wire[order], value[order], length[order])


def unpack(
    cur: Cursor, wire: int, name: str, packed: Tokens
) -> tuple[Tokens, np.ndarray, np.ndarray]:
    """Elements of packed repeated fields as pseudo tokens: ``(tokens, index in its pack,
    which pack)``."""
    starts = packed.value.astype(np.int64)
    if wire in (I32, I64):
        size = 4 if wire == I32 else 8
        bad = packed.length % size != 0
        if bad.any():
            cur.fail(packed.row[bad], f"packed field {name!r} length is not whole values")
        counts = np.where(bad, 0, packed.length // size)
        which = np.repeat(np.arange(len(counts)), counts)
        first = np.cumsum(counts) - counts
        sub = np.arange(int(counts.sum())) - np.repeat(first, counts)
        value = (starts[which] + sub * size).astype(np.uint64)
        length = np.full(len(which), size, np.int64)
    else:
        sub_cur = Cursor(cur.data, starts, starts + packed.length)
        active = np.flatnonzero(sub_cur.pos < sub_cur.end)
        values, owners, subs = [], [], []
        k = 0
        while active.size:
            values.append(sub_cur.varint(active, f"packed field {name!r}"))
            owners.append(active)
            subs.append(np.full(len(active), k))
            active = active[
                (sub_cur.code[active] == 0) & (sub_cur.pos[active] < sub_cur.end[active])
            ]
            k += 1
        for i, reason in sub_cur.failures().items():
            cur.fail(packed.row[i : i + 1], reason)
        which = np.concatenate(owners) if owners else np.empty(0, np.int64)
        sub = np.concatenate(subs) if subs else np.empty(0, np.int64)
        value = np.concatenate(values) if values else np.empty(0, np.uint64)
        length = np.zeros(len(which), np.int64)
    rows = packed.row[which]
    return Tokens(rows, np.zeros(len(rows), np.int64), np.full(len(rows), wire, np.int8),
                  value, length), sub, which  # fmt: skip
