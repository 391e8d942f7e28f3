"""Choosing the sink for a target URL."""

from __future__ import annotations

from pathlib import Path

from sqlalchemy.engine import URL, make_url
from sqlalchemy.exc import ArgumentError

from kafka_etl.errors import ConfigError, redact
from sinks.base import Sink, TableSpec
from sinks.capabilities import capabilities


def resolve_target(target: str, base_dir: Path | None) -> URL:
    """Parse a target URL; relative DuckDB/SQLite file paths are taken from ``base_dir``."""
    try:
        url = make_url(target)
    except (ArgumentError, ValueError):  # ValueError: a port that is not a number
        msg = f"target {redact(target)!r} is not a database URL (e.g. duckdb:///warehouse.duckdb)"
        raise ConfigError(msg) from None
    database = url.database
    if (
        capabilities(url.get_backend_name()).file_database
        and base_dir is not None
        and database
        and database != ":memory:"
        and not Path(database).is_absolute()
    ):
        url = url.set(database=str((base_dir / database).resolve()))
    return url


def duckdb_settings(url: URL) -> dict[str, str]:
    """DuckDB options from a target's query string: ``duckdb:///w.duckdb?threads=4``."""
    return {
        name: value if isinstance(value, str) else value[-1] for name, value in url.query.items()
    }


def open_sink(
    target: str, spec: TableSpec, *, base_dir: Path | None = None, lock_timeout: float = 60.0
) -> Sink:
    """Connect to the target and bind the sink to one pipeline's table."""
    url = resolve_target(target, base_dir)
    if capabilities(url.get_backend_name()).sink == "duckdb":
        from sinks.duckdb.sink import DuckDBSink

        return DuckDBSink(
            url.database or ":memory:",
            spec,
            lock_timeout=lock_timeout,
            settings=duckdb_settings(url),
        )
    try:
        from sinks.sql.sink import SqlSink
    except ImportError:
        msg = f"target {redact(target)!r}: only duckdb:// targets are supported in this build"
        raise ConfigError(msg) from None
    return SqlSink(url, spec)
