"""The Confluent wire format: magic byte 0, a 4-byte big-endian schema id, then the payload.

The 5-byte headers of a whole batch are read with numpy; messages are grouped by schema id, each
group is decoded by the reader compiled for that writer schema (cached per id), and the groups
are joined into one table in message order (see ``unify``). Too-short values and a wrong magic
byte are per-message ``wire_format`` failures, an id the registry does not know is an
``unknown_schema`` failure for the messages that carry it.
"""

from __future__ import annotations

import threading
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import Protocol

import numpy as np
import pyarrow as pa

from connector.formats.base import UNKNOWN_SCHEMA, WIRE_FORMAT, Decoded, Failure
from connector.formats.registry import UnknownSchemaError
from connector.formats.unify import combine
from connector.formats.vector import join

HEADER = 5


@dataclass(frozen=True, slots=True)
class Frame:
    """The messages of one schema id: payloads at ``data[pos:end]``, original values too."""

    data: np.ndarray
    pos: np.ndarray
    end: np.ndarray
    values: Sequence[bytes]


class GroupDecoder(Protocol):
    """Decodes the payloads of messages written with one writer schema."""

    def decode(self, frame: Frame) -> Decoded: ...


class WrongSchemaType:
    """All messages of a schema id whose schema is not of the pipeline's format."""

    def __init__(self, message: str) -> None:
        self.message = message

    def decode(self, frame: Frame) -> Decoded:
        failures = {i: Failure(WIRE_FORMAT, self.message) for i in range(len(frame.pos))}
        return Decoded(pa.table({}), np.empty(0, np.int64), failures)


class ConfluentFormat:
    """Values framed with a schema id; ``compile`` builds the decoder for one schema id and
    raises ``UnknownSchemaError`` if the registry does not know it."""

    def __init__(self, compile: Callable[[int], GroupDecoder]) -> None:
        self._compile = compile
        self._decoders: dict[int, GroupDecoder] = {}
        # Batches may be decoded on several threads at once: each id is fetched and compiled once.
        self._compiling = threading.Lock()

    def decode_values(self, values: Sequence[bytes]) -> Decoded:
        n = len(values)
        if not n:
            return Decoded(pa.table({}), np.empty(0, np.int64))
        data, starts, ends = join(values)
        failures: dict[int, Failure] = {}
        ids, framed = split_header(data, starts, ends, failures)
        parts: list[tuple[np.ndarray, pa.Table]] = []
        scalar = False
        unknown: set[int] = set()
        for schema_id in np.unique(ids[framed]).tolist():
            rows = framed[ids[framed] == schema_id]
            decoder = self._decoder(schema_id, unknown)
            if decoder is None:
                for i in rows.tolist():
                    failures[i] = Failure(
                        UNKNOWN_SCHEMA, f"schema id {schema_id} is not in the schema registry"
                    )
                continue
            group = [values[i] for i in rows.tolist()]
            decoded = decoder.decode(Frame(data, starts[rows] + HEADER, ends[rows], group))
            scalar = scalar or decoded.scalar
            for i, failure in decoded.failures.items():
                failures[int(rows[i])] = failure
            parts.append((rows[decoded.rows], decoded.table))
        table, positions = combine(parts, failures)
        return Decoded(table, positions, failures, scalar)

    def _decoder(self, schema_id: int, unknown: set[int]) -> GroupDecoder | None:
        decoder = self._decoders.get(schema_id)
        if decoder is not None or schema_id in unknown:
            return decoder
        with self._compiling:
            decoder = self._decoders.get(schema_id)
            if decoder is None:
                try:
                    decoder = self._decoders[schema_id] = self._compile(schema_id)
                except UnknownSchemaError:
                    unknown.add(schema_id)  # for this batch only: it may be registered later
        return decoder


def split_header(
    data: np.ndarray, starts: np.ndarray, ends: np.ndarray, failures: dict[int, Failure]
) -> tuple[np.ndarray, np.ndarray]:
    """Schema ids of all messages (garbage where framing failed) and the well-framed positions."""
    lengths = ends - starts
    short = lengths < HEADER
    magic = data[starts]
    wrong = ~short & (magic != 0)
    head = data[starts[:, None] + np.arange(1, HEADER)].astype(np.uint32)
    ids = (head[:, 0] << 24) | (head[:, 1] << 16) | (head[:, 2] << 8) | head[:, 3]
    for i in np.flatnonzero(short).tolist():
        failures[i] = Failure(
            WIRE_FORMAT,
            f"{int(lengths[i])} bytes: too short for the Confluent wire format"
            " (magic byte and 4-byte schema id)",
        )
    for i in np.flatnonzero(wrong).tolist():
        failures[i] = Failure(
            WIRE_FORMAT,
            f"magic byte is 0x{int(magic[i]):02x}, not 0x00: not in the Confluent wire format",
        )
    # Schema ids are signed 32-bit integers and never negative: no registry has these.
    negative = ~short & ~wrong & (ids >= 2**31)
    for i in np.flatnonzero(negative).tolist():
        failures[i] = Failure(
            UNKNOWN_SCHEMA, f"schema id {int(ids[i]) - 2**32} is negative: no registry has it"
        )
    return ids, np.flatnonzero(~short & ~wrong & ~negative)


__all__ = [
    "HEADER",
    "ConfluentFormat",
    "Frame",
    "GroupDecoder",
    "UnknownSchemaError",
    "WrongSchemaType",
]
