"""What a replay range or a reset time given as text means, checked once for the CLI and Dagster.

Both take the same choices under different spellings (``--from-offset`` on the command line,
``from_offset`` in a Dagster run config), so the checks take the spellings as ``RangeNames``
and every message names the option as the user wrote it.
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime


class RangeError(ValueError):
    """A replay range or a timestamp that cannot mean anything; the message says what to give."""


@dataclass(frozen=True, slots=True)
class RangeNames:
    """How the caller spells each choice, as shown in messages."""

    since: str
    until: str
    partition: str
    from_offset: str
    to_offset: str


CLI_NAMES = RangeNames("--from", "--to", "--partition", "--from-offset", "--to-offset")


@dataclass(frozen=True, slots=True)
class ReplayRange:
    """A replay by time (``since``/``until``), by offsets of one partition, or neither (the
    caller then has a window of its own, e.g. a Dagster partition's day)."""

    since: datetime | None = None
    until: datetime | None = None
    offsets: dict[int, tuple[int, int]] | None = None


def parse_timestamp(name: str, text: str, choices: str = "") -> datetime:
    """An ISO-8601 timestamp with a time zone (``Z`` allowed); ``choices`` names what else the
    option takes, for the message."""
    try:
        when = datetime.fromisoformat(text.replace("Z", "+00:00"))
    except ValueError:
        msg = f"{name} {text!r}: expected {choices}an ISO-8601 timestamp such as 2026-11-01T00:00Z"
        raise RangeError(msg) from None
    if when.tzinfo is None:
        msg = f"{name} {text!r}: give a time zone (e.g. {text}Z)"
        raise RangeError(msg)
    return when


def replay_range(
    names: RangeNames,
    *,
    since: str | None,
    until: str | None,
    partition: int | None,
    from_offset: int | None,
    to_offset: int | None,
    window_required: bool = True,
) -> ReplayRange:
    """The one range these choices describe, or ``RangeError``: offsets come with their
    partition and without times, times come in pairs."""
    n = names
    if partition is not None:
        if from_offset is None or to_offset is None or since or until:
            msg = (
                f"{n.partition} needs {n.from_offset} and {n.to_offset}"
                f" (and no {n.since}/{n.until})"
            )
            raise RangeError(msg)
        return ReplayRange(offsets={partition: (from_offset, to_offset)})
    neither = f"give {n.since} and {n.until} timestamps, or {n.partition} with offsets"
    if from_offset is not None or to_offset is not None:
        raise RangeError(neither)
    if since or until:
        if not (since and until):
            msg = f"give both {n.since} and {n.until} (ISO-8601 timestamps with a time zone)"
            raise RangeError(msg)
        return ReplayRange(parse_timestamp(n.since, since), parse_timestamp(n.until, until))
    if window_required:
        raise RangeError(neither)
    return ReplayRange()
