"""End to end through the real webserver and daemon (`scripts/ui`, GraphQL): what the asset
shows between Dagster runs. The observation sensor runs in the daemon (on by default, every
15 s); a CLI load reaches the instance of the same DAGSTER_HOME."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from typing import Any

from tests.dagster import test_dagster_ui
from tests.dagster.support import wait_for
from tests.dagster.test_dagster_ui import Services
from tests.fixtures.kafka import produce_json
from tests.helpers import events

services = test_dagster_ui.services  # the module's own webserver and daemon (fixture)
OBSERVE_TIMEOUT = 120.0  # a 15 s sensor, ticked by the daemon's sensor loop

LATEST = """
query($key: AssetKeyInput!) {
  assetOrError(assetKey: $key) {
    ... on Asset {
      assetMaterializations(limit: 1) { runId timestamp metadataEntries { label
        ... on IntMetadataEntry { intValue } ... on TextMetadataEntry { text } } }
      assetObservations(limit: 20) { runId timestamp metadataEntries { label
        ... on IntMetadataEntry { intValue } ... on FloatMetadataEntry { floatValue }
        ... on TableMetadataEntry { table { records } } } }
    }
  }
}"""


def _entries(event: dict[str, Any]) -> dict[str, Any]:
    out: dict[str, Any] = {}
    for e in event["metadataEntries"]:
        for field in ("intValue", "text", "floatValue", "table"):
            if e.get(field) is not None:
                out[e["label"]] = e[field]
    return out


def _asset(services: Services, path: list[str]) -> dict[str, Any]:
    return dict(services.gql(LATEST, {"key": {"path": path}})["assetOrError"])


def _observed_after(services: Services, since_ms: int, path: list[str]) -> list[dict[str, Any]]:
    """The sensor's observations (no run) newer than ``since_ms``, oldest first."""
    found = [
        _entries(o) | {"at": int(o["timestamp"])}
        for o in _asset(services, path)["assetObservations"]
        if not o["runId"] and int(o["timestamp"]) > since_ms
    ]
    return sorted(found, key=lambda o: o["at"])


def _now_ms(services: Services) -> int:
    latest = _asset(services, ["events"])["assetObservations"]
    return max((int(o["timestamp"]) for o in latest), default=0)


def test_a_cli_load_shows_its_rows_and_offsets_then_lag_is_plotted_and_a_no_op_run_keeps_it(
    services: Services,
) -> None:
    # 1. A load from the CLI, with DAGSTER_HOME set to the instance the UI reads.
    produce_json(services.bootstrap, services.topic, events(50_000, 700))
    config = services.folder / "pipelines.yaml"
    env = {**os.environ, "DAGSTER_HOME": str(services.folder / "home")}
    env["KAFKA_BOOTSTRAP_SERVERS"] = services.bootstrap
    done = subprocess.run(
        [sys.executable, "-m", "pipelines.cli", "-c", str(config), "run", "events", "--json"],
        capture_output=True,
        text=True,
        env=env,
        timeout=300,
        check=False,
    )
    assert done.returncode == 0, done.stderr
    summary = json.loads(done.stdout)
    latest = _asset(services, ["events"])["assetMaterializations"][0]
    assert latest["runId"] == ""  # runless: no Dagster run did it
    meta = _entries(latest)
    assert meta["dagster/row_count"] == summary["table_rows"]
    ranges = ", ".join(f"{p}:[{a},{b})" for p, (a, b) in summary["ranges"].items())
    assert meta["offset_ranges"] == ranges

    # 2. A growing backlog: each new observation's lag is larger; the topic's marks grow.
    since = _now_ms(services)
    lags = []
    for i in range(2):
        produce_json(services.bootstrap, services.topic, events(60_000 + i * 300, 300))
        want = 300 * (i + 1)
        seen = wait_for(
            f"an observation with lag {want}",
            lambda want=want, since=since: [
                o for o in _observed_after(services, since, ["events"]) if o["lag"] >= want
            ],
            OBSERVE_TIMEOUT,
            every=2,
        )
        lags.append(seen[0]["lag"])
        since = seen[0]["at"]
    assert lags == [300, 600]
    topic = _observed_after(services, 0, ["kafka", services.topic])
    assert topic and topic[-1]["high_watermarks"] > 0

    # 3. A load through Dagster: the lag falls to 0 in the next observation.
    run_id = services.launch("events_load")
    assert services.finished(run_id)["status"] == "SUCCESS"
    loaded = _asset(services, ["events"])["assetMaterializations"][0]
    assert loaded["runId"] == run_id
    since = int(loaded["timestamp"])
    zero = wait_for(
        "an observation with lag 0 after the load",
        lambda: [o for o in _observed_after(services, since, ["events"]) if o["lag"] == 0],
        OBSERVE_TIMEOUT,
        every=2,
    )
    assert zero[0]["dagster/row_count"] == _entries(loaded)["dagster/row_count"]

    # 4. A run with nothing new: an observation, and the latest materialization is unchanged.
    noop = services.launch("events_load")
    assert services.finished(noop)["status"] == "SUCCESS"
    asset = _asset(services, ["events"])
    assert asset["assetMaterializations"][0]["runId"] == run_id
    from_noop = [o for o in asset["assetObservations"] if o["runId"] == noop]
    assert len(from_noop) == 1
    entries = _entries(from_noop[0])
    assert entries["lag"] == 0
    checkpoints = entries["partitions"]["records"]
    assert len(checkpoints) == 2 and all('"checkpoint"' in r for r in checkpoints)
