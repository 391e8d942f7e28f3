"""The one replay-range validator and timestamp parser the CLI and Dagster share."""

from __future__ import annotations

from datetime import UTC, datetime

import pytest

from pipelines.ranges import (
    CLI_NAMES,
    RangeError,
    RangeNames,
    ReplayRange,
    parse_timestamp,
    replay_range,
)

# As dagster_project.assets spells them (imported there; this test needs no Dagster).
DAGSTER_NAMES = RangeNames("'from'", "'to'", "'partition'", "'from_offset'", "'to_offset'")


def test_timestamps_need_a_time_zone() -> None:
    assert parse_timestamp("--from", "2026-11-01T00:00Z") == datetime(2026, 11, 1, tzinfo=UTC)
    with pytest.raises(RangeError, match=r"--to '2026-11-01T00:00': give a time zone"):
        parse_timestamp("--to", "2026-11-01T00:00")
    with pytest.raises(RangeError, match="expected earliest or an ISO-8601 timestamp"):
        parse_timestamp("--to", "soon", "earliest or ")


def test_a_range_is_offsets_of_one_partition_or_a_pair_of_times() -> None:
    by_offsets = replay_range(
        CLI_NAMES, since=None, until=None, partition=0, from_offset=1, to_offset=5
    )
    assert by_offsets == ReplayRange(offsets={0: (1, 5)})
    by_time = replay_range(
        CLI_NAMES, since="2026-11-01T00:00Z", until="2026-11-02T00:00Z", partition=None,
        from_offset=None, to_offset=None,
    )  # fmt: skip
    assert by_time.since is not None and by_time.until is not None and by_time.offsets is None
    none = dict(since=None, until=None, partition=None, from_offset=None, to_offset=None)
    assert replay_range(DAGSTER_NAMES, **none, window_required=False) == ReplayRange()  # type: ignore[arg-type]


@pytest.mark.parametrize(
    ("names", "choices", "message"),
    [
        (CLI_NAMES, {"partition": 0}, "--partition needs --from-offset and --to-offset"),
        (DAGSTER_NAMES, {"partition": 0, "from_offset": 1}, "'partition' needs 'from_offset'"),
        (CLI_NAMES, {"from_offset": 1}, "give --from and --to timestamps, or --partition"),
        (DAGSTER_NAMES, {"since": "2026-11-01T00:00Z"}, "give both 'from' and 'to'"),
        (CLI_NAMES, {}, "give --from and --to timestamps"),
    ],
    ids=[
        "cli-partition-alone",
        "dagster-one-offset",
        "cli-offset-alone",
        "dagster-one-time",
        "cli-nothing",
    ],
)
def test_each_mistake_is_named_as_the_caller_spells_it(
    names: object, choices: dict[str, object], message: str
) -> None:
    given: dict[str, object] = dict.fromkeys(
        ("since", "until", "partition", "from_offset", "to_offset")
    )
    with pytest.raises(RangeError, match=message):
        replay_range(names, **{**given, **choices})  # type: ignore[arg-type]
