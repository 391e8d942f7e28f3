"""Helpers for the Dagster tests: definitions for a pipelines file, metadata read-back, GraphQL."""

from __future__ import annotations

import json
import time
import urllib.request
from collections.abc import Callable, Mapping
from pathlib import Path
from typing import Any

import duckdb
from dagster import AssetCheckKey, AssetKey, AssetsDefinition, Definitions, ExecuteInProcessResult

from dagster_project import KafkaEtlResource, build_definitions
from dagster_project.translator import KafkaEtlTranslator
from pipelines.config import load_project

TARGET = "duckdb:///warehouse.duckdb"
EVENTS = AssetKey("events")


def resource(path: Path, **overrides: Any) -> KafkaEtlResource:
    return KafkaEtlResource(pipelines_file=str(path), **overrides)


def definitions(
    path: Path, translator: KafkaEtlTranslator | None = None, **overrides: Any
) -> Definitions:
    return build_definitions(load_project(path), resource(path, **overrides), translator=translator)


def load_and_checks(defs: Definitions, key: AssetKey = EVENTS) -> list[AssetsDefinition]:
    """The load op of ``key`` and its checks op (separate since checks judge the data)."""
    check = AssetCheckKey(key, "offset_continuity")
    graph = defs.resolve_asset_graph()  # its definitions carry the bound resources
    return [defs.resolve_assets_def(key), *(d for d in graph.assets_defs if check in d.check_keys)]


def materializations(result: ExecuteInProcessResult) -> dict[AssetKey, dict[str, Any]]:
    """Asset key -> metadata values (``.value`` unwrapped) of each materialization."""
    out: dict[AssetKey, dict[str, Any]] = {}
    for event in result.get_asset_materialization_events():
        m = event.materialization
        out[m.asset_key] = {k: getattr(v, "value", v) for k, v in m.metadata.items()}
    return out


def checks(result: ExecuteInProcessResult) -> dict[str, Any]:
    """Check name -> evaluation."""
    return {e.check_name: e for e in result.get_asset_check_evaluations()}


def check_metadata(evaluation: Any) -> dict[str, Any]:
    return {k: getattr(v, "value", v) for k, v in evaluation.metadata.items()}


def table_rows(path: Path, table: str = "events") -> list[tuple[Any, ...]]:
    """Every row of a DuckDB table, sorted: compares table content across runs. Dagster marks
    a run finished a moment before its process exits and lets go of the file: wait for that."""
    con = wait_for(f"{path.name} free to read", lambda: _read_only(path), 30, every=0.2)
    try:
        ident = '"' + table.replace('"', '""') + '"'
        return sorted(
            con.execute("SELECT * FROM " + ident).fetchall(),
            key=lambda r: json.dumps(r, default=str),
        )
    finally:
        con.close()


def wait_for(what: str, predicate: Callable[[], Any], timeout: float, every: float = 0.5) -> Any:
    deadline = time.monotonic() + timeout
    while True:
        value = predicate()
        if value:
            return value
        if time.monotonic() > deadline:
            raise AssertionError(f"timed out after {timeout:.0f}s waiting for {what}")
        time.sleep(every)


class GraphQL:
    """A tiny client for the webserver's GraphQL API."""

    def __init__(self, url: str) -> None:
        self.url = url

    def __call__(self, query: str, variables: Mapping[str, Any] | None = None) -> Any:
        body = json.dumps({"query": query, "variables": dict(variables or {})}).encode()
        request = urllib.request.Request(
            f"{self.url}/graphql", data=body, headers={"Content-Type": "application/json"}
        )
        with urllib.request.urlopen(request, timeout=60) as response:
            answer = json.load(response)
        assert not answer.get("errors"), answer["errors"]
        return answer["data"]


def _read_only(path: Path) -> duckdb.DuckDBPyConnection | None:
    try:
        return duckdb.connect(str(path), read_only=True)
    except duckdb.IOException as exc:  # "Could not set lock on file": a writer still holds it
        if "lock" not in str(exc):
            raise
        return None
