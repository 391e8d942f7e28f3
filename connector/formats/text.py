"""``string`` and ``bytes``: the whole value as one ``value`` column (also the key formats).

``string`` checks UTF-8 in one vectorised cast; only when that fails are the offending messages
looked for one by one. ``bytes`` takes anything, including empty values.
"""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np
import pyarrow as pa

from connector.formats.base import INVALID_UTF8, Decoded, Failure


class BytesFormat:
    """Values as a ``binary`` column."""

    def decode_values(self, values: Sequence[bytes]) -> Decoded:
        array = pa.array(values, pa.binary())
        return Decoded(pa.table({"value": array}), np.arange(len(values)), {}, scalar=True)


class StringFormat:
    """Values as a ``string`` column; invalid UTF-8 is a per-message failure."""

    def decode_values(self, values: Sequence[bytes]) -> Decoded:
        raw = pa.array(values, pa.binary())
        try:
            text = raw.cast(pa.string())
        except pa.ArrowInvalid:
            failures = {
                i: Failure(INVALID_UTF8, "value is not valid UTF-8")
                for i, v in enumerate(values)
                if not _is_utf8(v)
            }
            good = [v for i, v in enumerate(values) if i not in failures]
            table = pa.table({"value": pa.array(good, pa.binary()).cast(pa.string())})
            keep = np.array([i not in failures for i in range(len(values))], bool)
            return Decoded(table, np.flatnonzero(keep), failures, scalar=True)
        return Decoded(pa.table({"value": text}), np.arange(len(values)), {}, scalar=True)


def _is_utf8(data: bytes) -> bool:
    try:
        data.decode("utf-8")
    except UnicodeDecodeError:
        return False
    return True
