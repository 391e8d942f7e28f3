"""DuckDB options in the target URL, and kafka-etl's own defaults under them."""

from __future__ import annotations

from pathlib import Path

import pytest

from kafka_etl.errors import ConfigError
from sinks.base import TableSpec
from sinks.duckdb.sink import DuckDBSink
from sinks.factory import open_sink

SPEC = TableSpec("p", "t", "events")


def setting(sink: DuckDBSink, name: str) -> object:
    return sink._con.execute("SELECT current_setting(?)", [name]).fetchone()[0]


def test_a_run_caps_duckdbs_cache_and_works_in_utc(tmp_path: Path) -> None:
    with open_sink("duckdb:///w.duckdb", SPEC, base_dir=tmp_path) as sink:
        assert isinstance(sink, DuckDBSink)
        assert setting(sink, "memory_limit") == "61.0 MiB"  # DuckDB shows 64 MB in MiB
        assert setting(sink, "TimeZone") == "UTC"
    assert (tmp_path / "w.duckdb").exists()


def test_the_query_string_of_the_target_sets_duckdb_options(tmp_path: Path) -> None:
    target = "duckdb:///w.duckdb?threads=1&memory_limit=1GB&preserve_insertion_order=false"
    with open_sink(target, SPEC, base_dir=tmp_path) as sink:
        assert isinstance(sink, DuckDBSink)
        assert setting(sink, "threads") == 1
        assert setting(sink, "memory_limit") == "953.6 MiB"
        assert setting(sink, "preserve_insertion_order") is False


@pytest.mark.parametrize(
    ("query", "named"),
    [
        pytest.param("no_such_option=1", "no_such_option='1'", id="unknown-option"),
        pytest.param("threads=many", "threads='many'", id="bad-value"),
    ],
)
def test_a_bad_duckdb_option_is_a_one_line_config_error(
    tmp_path: Path, query: str, named: str
) -> None:
    with pytest.raises(ConfigError) as caught:
        open_sink(f"duckdb:///w.duckdb?{query}", SPEC, base_dir=tmp_path)
    message = str(caught.value)
    assert "\n" not in message
    assert message.startswith(f"duckdb {tmp_path / 'w.duckdb'}: setting {named}: ")
