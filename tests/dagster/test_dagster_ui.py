"""End to end: `scripts/ui` (webserver + daemon) on a free port, driven through GraphQL and a
real browser, against the real broker. One set of services serves the whole module."""

from __future__ import annotations

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

    def launch(self, job: str) -> str:
        params = {"selector": {**LOCATION, "jobName": job}, "runConfigData": {}}
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
    topic = _topic(kafka_bootstrap)
    body = {"topic": topic, "target": TARGET, "table": "events", "batch_max_rows": 1000}
    config = write_pipelines(folder, kafka_bootstrap, {"events": body})
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
        yield Services(address, GraphQL(address), folder, topic, kafka_bootstrap)
    finally:
        proc.send_signal(signal.SIGINT)  # what Ctrl-C does
        try:
            code = proc.wait(timeout=60)
        except subprocess.TimeoutExpired:
            proc.kill()
            raise
        finally:
            AdminClient({"bootstrap.servers": kafka_bootstrap}).delete_topics([topic])
        assert code == 0, proc.stderr.read() if proc.stderr else ""
        assert wait_for("every child to stop", lambda: not _processes_using(home), 30)


def test_materialize_through_graphql_then_a_two_day_replay_backfill_leaves_the_table_as_is(
    services: Services,
) -> None:
    produce_json(services.bootstrap, services.topic, events(0, 2_500))
    run_id = services.launch("events_load")
    assert services.finished(run_id)["status"] == "SUCCESS"
    assert services.latest_row_count() == (run_id, 2_500)
    warehouse = services.folder / "warehouse.duckdb"
    before = table_rows(warehouse)

    today = datetime.now(UTC).date()
    days = [str(today - timedelta(days=1)), str(today)]
    params = {"assetSelection": [{"path": ["events_replay"]}], "partitionNames": days}
    answer = services.gql(LAUNCH_BACKFILL, {"params": params})["launchPartitionBackfill"]
    assert answer["__typename"] == "LaunchBackfillSuccess", answer

    def completed() -> dict[str, Any] | None:
        backfill = services.gql(BACKFILL, {"id": answer["backfillId"]})["partitionBackfillOrError"]
        return backfill if backfill["status"] not in ("REQUESTED", "CANCELING") else None

    backfill = wait_for("the replay backfill", completed, BACKFILL_TIMEOUT, every=2)
    assert backfill["status"] == "COMPLETED_SUCCESS", backfill
    assert [r["status"] for r in backfill["runs"]] == ["SUCCESS", "SUCCESS"]
    assert table_rows(warehouse) == before
    # The replay's own materialization says what it rewrote: every row of today (and the day
    # before, if the test ran across midnight).
    replayed = services.latest_row_count("events_replay")
    assert replayed is not None and replayed[1] == 2_500


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


def test_the_asset_page_shows_the_latest_row_count_in_a_real_browser(services: Services) -> None:
    from playwright.sync_api import sync_playwright

    if services.latest_row_count() is None:
        produce_json(services.bootstrap, services.topic, events(0, 100))
        assert services.finished(services.launch("events_load"))["status"] == "SUCCESS"
    latest = services.latest_row_count()
    assert latest is not None
    shown = f"{latest[1]:,}"
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
        finally:
            browser.close()
