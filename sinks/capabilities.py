"""What differs per database, described once: one frozen ``Capabilities`` per dialect.

The write path, the DDL builders, the type mapper and the loaders ask these fields, never the
dialect's name: this module is the only place that knows which database is which (dlt's
``capabilities()``, kafka-connect-jdbc's ``DatabaseDialect``). A database SQLAlchemy can reach
but kafka-etl has no entry for gets ``GENERIC``: the portable SQL only (no upsert, DDL in a
step of its own, a savepoint for insert-if-absent).

A new backend is one entry here (and, if it has a fast row path of its own, one folder in
``sinks/``).
"""

from __future__ import annotations

from dataclasses import dataclass, replace
from functools import cache
from typing import Literal

from sqlalchemy.engine import Dialect


@dataclass(frozen=True, slots=True)
class Capabilities:
    """One database's answers to every question the write path asks."""

    #: How messages name the database.
    name: str
    #: Which sink writes to it: DuckDB's own (Arrow scans) or the SQLAlchemy one.
    sink: Literal["duckdb", "sqlalchemy"] = "sqlalchemy"
    #: A file path in the URL (relative paths resolve against the YAML file's folder).
    file_database: bool = False
    #: CREATE/ALTER run inside the batch's transaction (else: in a step of their own, first).
    transactional_ddl: bool = False
    #: Writes the runner may have in flight at once (each on its own connection).
    max_in_flight: int = 1
    #: Rows go in by binary COPY (psycopg 3) instead of executemany.
    copy: bool = False
    #: ``INSERT ... ON CONFLICT DO UPDATE ... WHERE`` or MySQL's ``ON DUPLICATE KEY UPDATE``.
    upsert: Literal["on_conflict", "on_duplicate_key"] | None = None
    #: How a first checkpoint row is inserted unless one exists.
    insert_if_absent: Literal["on_conflict_do_nothing", "insert_ignore", "savepoint"] = "savepoint"
    #: ``SELECT ... FOR UPDATE`` (DuckDB has no row locks: one process writes a file).
    row_locks: bool = True
    #: How concurrent first runs take turns creating a table: a transaction-scoped advisory
    #: lock (held to commit), a session-named lock around the block, or nothing (the database
    #: serializes writers itself).
    creation_lock: Literal["advisory_xact", "named", "none"] = "none"
    #: Longest table/column name (None: the dialect's ``max_identifier_length``), and in what.
    identifier_limit: int | None = None
    identifier_unit: Literal["bytes", "characters"] = "characters"
    #: Names may end with a space.
    trailing_space_in_names: bool = True
    #: ``schema:`` is supported.
    schemas: bool = True
    #: How a column's type is widened: in place (two syntaxes), or a table rebuild.
    alter_column_type: Literal["alter_type_using", "modify_column", "rebuild"] | None = None
    #: How ``table_name`` joins the checkpoint table's primary key: one ALTER, or a rebuild.
    primary_key_change: Literal["drop_constraint", "drop_primary_key", "rebuild"] = "rebuild"
    #: The MySQL type family: indexed text is a bounded VARCHAR with an exact collation, blobs
    #: LONGBLOB, times and timestamps have microseconds only when asked (``fsp=6``).
    bounded_text_types: bool = False
    #: The exact (case-, accent- and trailing-space-sensitive) collation for key columns.
    exact_collation: str | None = None
    #: JSON columns are JSONB (and text binds are cast to it).
    jsonb: bool = False
    #: A list of values binds as one array parameter (``= ANY(:keys)``), not one per value.
    array_binds: bool = False
    #: A timestamp column without a time zone is read as such (elsewhere: UTC wall time).
    naive_timestamps: bool = False
    #: A single-precision float column reads back as float32 (SQLite stores every REAL as double).
    float32: bool = True
    #: What the DB-API driver takes for Arrow values without SQLAlchemy's type processing.
    driver_values: Literal["as_is", "utc_wall_time", "sqlite_text"] = "utc_wall_time"
    #: Reflection doubles backticks in names, and JSON is LONGTEXT with a ``json_valid`` CHECK.
    mysql_reflection: bool = False
    #: The driver must be told to BEGIN (IMMEDIATE) itself, with a busy timeout.
    begin_immediate: bool = False
    #: The schema a table without ``schema:`` lands in, as Dagster names the table.
    default_schema: str | None = None
    #: Without ``schema:``, the current schema is the URL's database (MySQL/MariaDB).
    schema_is_database: bool = False
    #: Where the database's own column type names are read: ``information_schema.columns``,
    #: or SQLite's ``pragma_table_info``.
    column_types: Literal["information_schema", "sqlite_pragma"] = "information_schema"
    #: One process at a time may open the file, readers included (Dagster: one pool per file).
    one_process_per_file: bool = False
    #: Dagster's kind tag (its icon) for the database.
    dagster_kind: str | None = None

    @property
    def kind(self) -> str:
        return self.dagster_kind or self.name


GENERIC = Capabilities(name="this database")

POSTGRESQL = Capabilities(
    name="postgresql",
    transactional_ddl=True,
    # Two append batches at once on two connections: while one server process works through
    # batch N, another takes batch N+1.
    max_in_flight=2,
    copy=True,
    upsert="on_conflict",
    insert_if_absent="on_conflict_do_nothing",
    creation_lock="advisory_xact",
    identifier_unit="bytes",
    alter_column_type="alter_type_using",
    primary_key_change="drop_constraint",
    jsonb=True,
    array_binds=True,
    naive_timestamps=True,
    driver_values="as_is",
    default_schema="public",
    dagster_kind="postgres",
)

MYSQL = Capabilities(
    name="mysql",
    upsert="on_duplicate_key",
    insert_if_absent="insert_ignore",
    creation_lock="named",
    # SQLAlchemy's MySQL dialect reports 255, but table and column names stop at 64.
    identifier_limit=64,
    trailing_space_in_names=False,
    alter_column_type="modify_column",
    primary_key_change="drop_primary_key",
    bounded_text_types=True,
    exact_collation="utf8mb4_0900_bin",
    mysql_reflection=True,
    schema_is_database=True,
)

# MariaDB is MySQL to SQLAlchemy (one dialect); it differs in its exact collation.
MARIADB = replace(MYSQL, name="mariadb", exact_collation="utf8mb4_nopad_bin")

SQLITE = Capabilities(
    name="sqlite",
    file_database=True,
    transactional_ddl=True,
    upsert="on_conflict",
    insert_if_absent="on_conflict_do_nothing",
    schemas=False,
    alter_column_type="rebuild",
    float32=False,
    driver_values="sqlite_text",
    begin_immediate=True,
    default_schema="main",
    column_types="sqlite_pragma",
)

DUCKDB = Capabilities(
    name="duckdb",
    sink="duckdb",
    file_database=True,
    row_locks=False,
    transactional_ddl=True,
    upsert="on_conflict",
    insert_if_absent="on_conflict_do_nothing",
    alter_column_type="alter_type_using",
    jsonb=False,
    naive_timestamps=True,
    driver_values="as_is",
    default_schema="main",
    one_process_per_file=True,
)

_BY_NAME = {
    "postgresql": POSTGRESQL,
    "sqlite": SQLITE,
    "duckdb": DUCKDB,
    "mysql": MYSQL,
    "mariadb": MARIADB,
}


#: The databases kafka-etl loads into (a URL naming another is refused when the file is read).
KNOWN = tuple(_BY_NAME)


def capabilities(dialect: Dialect | str) -> Capabilities:
    """The capabilities of a connected SQLAlchemy dialect, or of a URL's backend name.

    MariaDB and MySQL share a dialect; a connected one knows which server it talks to.
    """
    if isinstance(dialect, str):
        return _of(dialect, "", mariadb=False)
    return _of(dialect.name, dialect.driver, mariadb=bool(getattr(dialect, "is_mariadb", False)))


@cache
def _of(name: str, driver: str, *, mariadb: bool) -> Capabilities:
    found = _BY_NAME.get(name)
    if found is None:
        return replace(GENERIC, name=name)
    if found is MYSQL or found is MARIADB:
        return MARIADB if mariadb else MYSQL
    if found is POSTGRESQL and driver and driver != "psycopg":
        return replace(POSTGRESQL, copy=False)  # COPY is psycopg 3's
    return found
