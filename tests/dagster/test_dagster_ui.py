"""End to end: `scripts/ui` (webserver + daemon) on a free port, driven through GraphQL and a
real browser, against the real broker: loads, replays, checks, sensors, and what the asset shows
between runs. One set of services serves the whole module (starting one takes ~15 s)."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
import uuid
from collections.abc import Iterator
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import pytest
from confluent_kafka import Producer
from confluent_kafka.admin import AdminClient, NewTopic

from tests.dagster.support import TARGET, GraphQL, table_rows, wait_for
from tests.fixtures.kafka import produce_json
from tests.helpers import events, expected_offsets, high_watermarks, table_offsets, write_pipelines

REPO = Path(__file__).resolve().parents[2]
SCREENSHOTS = REPO / ".local" / "screenshots"
CHROMIUM = "/usr/bin/chromium"
CHROMIUM_ARGS = [
    "--no-sandbox",
    "--disable-gpu",
    "--disable-background-networking",
    "--disable-component-update",
    "--disable-sync",
    "--no-first-run",
    "--disable-quic",
]
LOCATION = {"repositoryLocationName": "dagster_project", "repositoryName": "__repository__"}
RUN_TIMEOUT = 180.0
BACKFILL_TIMEOUT = 240.0  # the backfill daemon looks at backfills every 30 s
OBSERVE_TIMEOUT = 120.0  # a 15 s sensor, ticked by the daemon's sensor loop

LAUNCH_RUN = """
mutation($params: ExecutionParams!) {
  launchRun(executionParams: $params) {
    __typename
    ... on LaunchRunSuccess { run { runId } }
    ... on PythonError { message }
    ... on RunConfigValidationInvalid { errors { message } }
  }
}"""
RUN = """
query($id: ID!) {
  runOrError(runId: $id) { ... on Run { status startTime endTime } }
}"""
LATEST_MATERIALIZATION = """
query($key: AssetKeyInput!) {
  assetOrError(assetKey: $key) {
    ... on Asset {
      assetMaterializations(limit: 1) {
        runId
        metadataEntries { label ... on IntMetadataEntry { intValue } }
      }
    }
  }
}"""
RUN_TAGS = """
query($id: ID!) { runOrError(runId: $id) { ... on Run { tags { key value } } } }"""
CHECK_EXECUTIONS = """
query($key: AssetKeyInput!, $name: String!) {
  assetCheckExecutions(assetKey: $key, checkName: $name, limit: 1) {
    runId status
    evaluation {
      success description metadataEntries { label ... on IntMetadataEntry { intValue } }
    }
  }
}"""
SENSOR_DRY_RUN = """
mutation($selector: SensorSelector!) {
  sensorDryRun(selectorData: $selector, cursor: null) {
    __typename
    ... on DryRunInstigationTick {
      evaluationResult { runRequests { runKey } skipReason error { message } }
    }
    ... on PythonError { message }
  }
}"""
LATEST_OBSERVATION = """
query($key: AssetKeyInput!) {
  assetOrError(assetKey: $key) {
    ... on Asset {
      assetObservations(limit: 50) {
        runId description metadataEntries { label ... on IntMetadataEntry { intValue } }
      }
    }
  }
}"""
PARTITIONS = """
query($selector: RepositorySelector!, $name: String!) {
  partitionSetOrError(repositorySelector: $selector, partitionSetName: $name) {
    ... on PartitionSet { partitionsOrError { ... on Partitions { results { name } } } }
  }
}"""
LAUNCH_BACKFILL = """
mutation($params: LaunchBackfillParams!) {
  launchPartitionBackfill(backfillParams: $params) {
    __typename
    ... on LaunchBackfillSuccess { backfillId }
    ... on PythonError { message }
  }
}"""
BACKFILL = """
query($id: String!) {
  partitionBackfillOrError(backfillId: $id) {
    ... on PartitionBackfill { status runs { runId status } }
  }
}"""


@dataclass
class Services:
    url: str
    gql: GraphQL
    folder: Path
    topic: str
    bootstrap: str
    poison: str

    def launch(self, job: str, config: dict[str, Any] | None = None) -> str:
        params = {"selector": {**LOCATION, "jobName": job}, "runConfigData": config or {}}
        answer = self.gql(LAUNCH_RUN, {"params": params})["launchRun"]
        assert answer["__typename"] == "LaunchRunSuccess", answer
        return str(answer["run"]["runId"])

    def run(self, run_id: str) -> dict[str, Any]:
        return dict(self.gql(RUN, {"id": run_id})["runOrError"])

    def finished(self, run_id: str) -> dict[str, Any]:
        def done() -> dict[str, Any] | None:
            run = self.run(run_id)
            return run if run["status"] in ("SUCCESS", "FAILURE", "CANCELED") else None

        return dict(wait_for(f"run {run_id}", done, RUN_TIMEOUT))

    def tags(self, run_id: str) -> dict[str, str]:
        run = self.gql(RUN_TAGS, {"id": run_id})["runOrError"]
        return {t["key"]: t["value"] for t in run["tags"]}

    def latest_check(self, check: str, key: str = "events") -> dict[str, Any]:
        variables = {"key": {"path": [key]}, "name": check}
        [latest] = self.gql(CHECK_EXECUTIONS, variables)["assetCheckExecutions"]
        return dict(latest)

    def sensor(self, name: str) -> dict[str, Any]:
        selector = {
            "repositoryLocationName": LOCATION["repositoryLocationName"],
            "repositoryName": LOCATION["repositoryName"],
            "sensorName": name,
        }
        answer = self.gql(SENSOR_DRY_RUN, {"selector": selector})["sensorDryRun"]
        assert answer["__typename"] == "DryRunInstigationTick", answer
        return dict(answer["evaluationResult"])

    def latest_observation(self, key: str = "events") -> dict[str, Any]:
        """The newest observation a run recorded (the observation sensor's own are runless)."""
        asset = self.gql(LATEST_OBSERVATION, {"key": {"path": [key]}})["assetOrError"]
        latest = next(o for o in asset["assetObservations"] if o["runId"])
        entries = {e["label"]: e.get("intValue") for e in latest["metadataEntries"]}
        return {**entries, "runId": latest["runId"], "description": latest["description"]}

    def latest_row_count(self, key: str = "events") -> tuple[str, int] | None:
        asset = self.gql(LATEST_MATERIALIZATION, {"key": {"path": [key]}})["assetOrError"]
        latest = asset.get("assetMaterializations") or []
        if not latest:
            return None
        entries = {e["label"]: e.get("intValue") for e in latest[0]["metadataEntries"]}
        return str(latest[0]["runId"]), int(entries["dagster/row_count"])


def _topic(bootstrap: str) -> str:
    admin = AdminClient({"bootstrap.servers": bootstrap})
    name = f"test-ui-{uuid.uuid4().hex}"
    admin.create_topics([NewTopic(name, num_partitions=2, replication_factor=1)])[name].result(60)

    def ready() -> bool:
        md = admin.list_topics(name, timeout=5).topics.get(name)
        return bool(md and md.error is None and all(p.leader >= 0 for p in md.partitions.values()))

    wait_for(f"leaders of {name}", ready, 30)
    return name


def _processes_using(home: Path) -> list[int]:
    """Pids whose environment has DAGSTER_HOME=home: what must be gone after Ctrl-C."""
    marker = f"DAGSTER_HOME={home}".encode()
    found = []
    for entry in Path("/proc").iterdir():
        if entry.name.isdigit():
            try:
                if marker in (entry / "environ").read_bytes().split(b"\0"):
                    found.append(int(entry.name))
            except OSError:
                continue
    return found


@pytest.fixture(scope="module")
def services(tmp_path_factory: pytest.TempPathFactory, kafka_bootstrap: str) -> Iterator[Services]:
    folder = tmp_path_factory.mktemp("dagster-ui")
    topic, poison = _topic(kafka_bootstrap), _topic(kafka_bootstrap)
    body = {"topic": topic, "target": TARGET, "table": "events", "batch_max_rows": 1000}
    body["max_lag_minutes"] = 60
    bad = {"topic": poison, "target": TARGET, "table": "poison"}
    config = write_pipelines(folder, kafka_bootstrap, {"events": body, "poison": bad})
    home = folder / "home"
    out = folder / "ui.out"
    env = {**os.environ, "KAFKA_BOOTSTRAP_SERVERS": kafka_bootstrap}
    env.pop("DAGSTER_HOME", None)
    command = [sys.executable, str(REPO / "scripts" / "ui"), "--port", "0", "--home", str(home)]
    command += ["--config", str(config), "--log-dir", str(folder / "logs")]
    with out.open("w") as stdout:
        proc = subprocess.Popen(command, stdout=stdout, stderr=subprocess.PIPE, text=True)

    def url() -> str | None:
        if proc.poll() is not None:
            raise AssertionError(f"scripts/ui exited: {proc.stderr.read() if proc.stderr else ''}")
        lines = out.read_text().splitlines()
        return lines[-1] if lines else None

    try:
        address = wait_for("scripts/ui to print its URL", url, 180)
        yield Services(address, GraphQL(address), folder, topic, kafka_bootstrap, poison)
    finally:
        proc.send_signal(signal.SIGINT)  # what Ctrl-C does
        try:
            code = proc.wait(timeout=60)
        except subprocess.TimeoutExpired:
            proc.kill()
            raise
        finally:
            AdminClient({"bootstrap.servers": kafka_bootstrap}).delete_topics([topic, poison])
        assert code == 0, proc.stderr.read() if proc.stderr else ""
        assert wait_for("every child to stop", lambda: not _processes_using(home), 30)


def test_materialize_through_graphql_then_a_replay_backfill_leaves_the_table_as_is(
    services: Services,
) -> None:
    produce_json(services.bootstrap, services.topic, events(0, 2_500))
    run_id = services.launch("events_load")
    assert services.finished(run_id)["status"] == "SUCCESS"
    assert services.latest_row_count() == (run_id, 2_500)
    warehouse = services.folder / "warehouse.duckdb"
    before = table_rows(warehouse)

    # The replay job's days start at the earliest day Kafka retains: today, for this topic.
    today = datetime.now(UTC).date()
    partition_set = {"selector": LOCATION, "name": "events_replay_partition_set"}
    found = services.gql(PARTITIONS, partition_set)["partitionSetOrError"]
    names = [p["name"] for p in found["partitionsOrError"]["results"]]
    assert names[0] == str(today), names
    days = [str(today)]
    selector = {"partitionSetName": "events_replay_partition_set", "repositorySelector": LOCATION}
    params = {"selector": selector, "partitionNames": days}
    answer = services.gql(LAUNCH_BACKFILL, {"params": params})["launchPartitionBackfill"]
    assert answer["__typename"] == "LaunchBackfillSuccess", answer

    def completed() -> dict[str, Any] | None:
        backfill = services.gql(BACKFILL, {"id": answer["backfillId"]})["partitionBackfillOrError"]
        return backfill if backfill["status"] not in ("REQUESTED", "CANCELING") else None

    backfill = wait_for("the replay backfill", completed, BACKFILL_TIMEOUT, every=2)
    assert backfill["status"] == "COMPLETED_SUCCESS", backfill
    assert [r["status"] for r in backfill["runs"]] == ["SUCCESS"]
    assert table_rows(warehouse) == before
    # The replay's observation of the table says what it rewrote: every row of today.
    replayed = services.latest_observation()
    assert replayed["rows_replayed"] == 2_500, replayed

    # A day with no message is visibly 0, in numbers and in words.
    yesterday = {
        "ops": {"kafka_etl__events__replay": {"config": {"day": str(today - timedelta(1))}}}
    }
    run_id = services.launch("events_replay", yesterday)
    assert services.finished(run_id)["status"] == "SUCCESS"
    empty = services.latest_observation()
    assert (empty["runId"], empty["rows_replayed"]) == (run_id, 0)
    assert "Replayed 0 rows: Kafka holds no message of" in empty["description"]


def test_two_runs_launched_together_never_overlap_and_load_every_offset_once(
    services: Services,
) -> None:
    produce_json(services.bootstrap, services.topic, events(10_000, 3_000))
    first, second = services.launch("events_load"), services.launch("events_load")
    runs = [services.finished(first), services.finished(second)]
    assert [r["status"] for r in runs] == ["SUCCESS", "SUCCESS"]
    # One pool slot per DuckDB file: the second run waited in the queue for the first.
    a, b = sorted(runs, key=lambda r: float(r["startTime"]))
    assert float(a["endTime"]) <= float(b["startTime"])
    marks = high_watermarks(services.bootstrap, services.topic, 2)
    assert table_offsets(TARGET, services.folder, "events") == expected_offsets(marks)


def test_the_asset_page_shows_the_row_count_and_the_lag_in_a_real_browser(
    services: Services,
) -> None:
    from playwright.sync_api import sync_playwright

    if services.latest_row_count() is None:
        produce_json(services.bootstrap, services.topic, events(0, 100))
        assert services.finished(services.launch("events_load"))["status"] == "SUCCESS"
    latest = services.latest_row_count()
    assert latest is not None
    shown = f"{latest[1]:,}"
    # A backlog the checks measure: the freshness check's lag figure is what the page shows.
    produce_json(services.bootstrap, services.topic, events(50_000, 7))
    assert services.finished(services.launch("events_checks"))["status"] == "SUCCESS"
    freshness = services.latest_check("freshness")["evaluation"]
    lag = {e["label"]: e.get("intValue") for e in freshness["metadataEntries"]}["lag"]
    assert lag == 7
    services.gql("mutation { setNuxSeen }")  # no first-visit "join the community" dialog
    assert Path(CHROMIUM).exists(), f"{CHROMIUM} missing: apt-get install -y chromium"
    SCREENSHOTS.mkdir(parents=True, exist_ok=True)
    with sync_playwright() as playwright:
        browser = playwright.chromium.launch(executable_path=CHROMIUM, args=CHROMIUM_ARGS)
        try:
            page = browser.new_page(viewport={"width": 1400, "height": 1000})
            page.goto(f"{services.url}/assets/events", wait_until="domcontentloaded")
            label = page.get_by_text("Row count", exact=True).first
            label.wait_for(timeout=60_000)
            value = label.locator("xpath=..").get_by_text(shown, exact=True)
            value.wait_for(timeout=30_000)
            time.sleep(0.5)  # let the remaining panels settle for the screenshot
            page.screenshot(path=str(SCREENSHOTS / "dagster-asset-events.png"))
            # Further down: the load's offsets and lag per partition, rows/s and duration.
            ranges = page.get_by_text("offset_ranges", exact=True).first
            ranges.scroll_into_view_if_needed(timeout=30_000)
            page.get_by_text("rows_per_second", exact=True).first.wait_for(timeout=30_000)
            page.screenshot(path=str(SCREENSHOTS / "dagster-asset-events-metadata.png"))
            # The freshness check, evaluated by the checks job: its lag figure and age.
            page.goto(
                f"{services.url}/assets/events?view=checks&checkDetail=freshness",
                wait_until="domcontentloaded",
            )
            page.get_by_text("oldest_unloaded_age_minutes").first.wait_for(timeout=60_000)
            lag_label = page.get_by_text("lag", exact=True).first
            lag_label.wait_for(timeout=30_000)
            lag_label.locator("xpath=../..").get_by_text(str(lag), exact=True).first.wait_for(
                timeout=30_000
            )
            # Lag per partition as a table (checkpoint, high watermark, lag), not JSON.
            page.get_by_text("high_watermark", exact=True).first.wait_for(timeout=30_000)
            time.sleep(0.5)
            page.screenshot(path=str(SCREENSHOTS / "dagster-asset-events-freshness.png"))
        finally:
            browser.close()


def test_a_poison_message_fails_the_load_but_not_continuity_and_stops_the_sensor(
    services: Services,
) -> None:
    topic = services.poison
    produce_json(services.bootstrap, topic, events(0, 20), partition=0)
    assert services.finished(services.launch("poison_load"))["status"] == "SUCCESS"
    producer = Producer({"bootstrap.servers": services.bootstrap})
    producer.produce(topic, b"not json", partition=0)  # offset 20
    producer.flush(30)
    produce_json(services.bootstrap, topic, events(20, 5), partition=0)

    failed = services.launch("poison_load")
    assert services.finished(failed)["status"] == "FAILURE"
    assert services.tags(failed)["kafka_etl/failed_at"] == f"{topic}/0@20"
    # The checks are their own job and read the table: every committed offset is there once.
    assert services.finished(services.launch("poison_checks"))["status"] == "SUCCESS"
    continuity = services.latest_check("offset_continuity", "poison")
    assert continuity["evaluation"]["success"], continuity
    rows = {e["label"]: e.get("intValue") for e in continuity["evaluation"]["metadataEntries"]}
    assert rows["rows"] == 20

    # One failure at that offset: the sensor still tries (poison_after is 2).
    first = services.sensor("poison_lag_sensor")
    assert first["runRequests"] and not first["skipReason"], first
    assert services.finished(services.launch("poison_load"))["status"] == "FAILURE"
    second = services.sensor("poison_lag_sensor")
    assert not second["runRequests"], second
    assert second["skipReason"].startswith(
        f"pipeline poison: the last 2 runs failed at {topic}/0@20; not requesting another"
        " until the pipeline, the checkpoint or the backlog changes"
    ), second


# What the asset shows between Dagster runs. The observation sensor runs in the daemon (on by
# default, every 15 s); a CLI load reaches the instance of the same DAGSTER_HOME.

OBSERVED = """
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
    return dict(services.gql(OBSERVED, {"key": {"path": path}})["assetOrError"])


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
