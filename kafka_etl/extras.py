"""Optional parts of kafka-etl and the pip extra that brings each.

The core install (``pip install kafka-etl``) loads JSON, Avro, JSON Schema, string and bytes
topics into DuckDB and SQLite. The rest comes with an extra; when it is missing, ``require``
(and ``extra_for``, for an ``ImportError`` caught elsewhere) turns the import failure into one
line that names the extra to install.
"""

from __future__ import annotations

import importlib

from kafka_etl.errors import ConfigError

# top-level module -> the extra in pyproject.toml that installs it
EXTRAS: dict[str, str] = {
    "psycopg": "postgres",
    "psycopg_binary": "postgres",
    "pymysql": "mysql",
    "google": "protobuf",
    "grpc_tools": "protobuf",
    "dagster": "dagster",
    "dagster_webserver": "dagster",
    "dagster_dg_cli": "dagster",
}


def extra_for(module: str | None) -> str | None:
    """The extra that installs ``module`` (a dotted name), or None for a core module."""
    if not module:
        return None
    return EXTRAS.get(module.split(".", 1)[0])


def missing_extra_message(what: str, extra: str) -> str:
    return f"{what} needs the {extra!r} extra: pip install 'kafka-etl[{extra}]'"


def require(module: str, extra: str, what: str) -> None:
    """Import ``module``, or raise ConfigError saying that ``what`` needs ``extra``.

    An ImportError raised *inside* an installed module (a broken install) is not disguised.
    """
    try:
        importlib.import_module(module)
    except ImportError as exc:
        name = exc.name or ""
        if name and not (module == name or module.startswith(name + ".")):
            raise
        raise ConfigError(missing_extra_message(what, extra)) from None
