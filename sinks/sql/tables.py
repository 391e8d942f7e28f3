"""Table definitions, DDL and reflection, all through SQLAlchemy (no per-database DDL strings).

* The target table: the batch's columns mapped by ``sinks.sql.types``; append tables have the
  primary key ``(_topic, _partition, _offset)`` (a replay can never duplicate a row), upsert
  tables the primary key of their ``key:`` columns, plus an index on ``_key`` when tombstones
  delete rows.
* ``_kafka_etl_checkpoints``: the same columns as the DuckDB sink's, in the pipeline's schema
  (``sinks.sql.checkpoints`` migrates the older layout without ``table_name``).
* New columns: ``ALTER TABLE ... ADD COLUMN`` compiled by the dialect's own DDL compiler.
* Widened columns: PostgreSQL ``ALTER COLUMN ... TYPE ... USING``, MySQL/MariaDB ``MODIFY
  COLUMN``; SQLite has no way to change a declared type, so the table is rebuilt (create a copy
  with the new types, copy the rows, drop, rename, re-create the indexes) in the transaction.

Identifiers are quoted by SQLAlchemy's preparer; names a database would silently truncate or
reject are refused here with one line naming the pipeline and the name.
"""

from __future__ import annotations

import contextlib
import hashlib
from collections.abc import Iterator
from contextlib import contextmanager
from typing import Any

import pyarrow as pa
import pyarrow.compute as pc
import sqlalchemy as sa
from sqlalchemy.dialects import mysql
from sqlalchemy.engine import Connection, Dialect
from sqlalchemy.ext.compiler import compiles
from sqlalchemy.schema import ExecutableDDLElement
from sqlalchemy.sql.compiler import DDLCompiler
from sqlalchemy.types import TypeEngine

from connector.names import IDENTITY_COLUMNS
from kafka_etl.errors import ConfigError, SchemaConflictError, SinkUnavailableError
from sinks.base import CHECKPOINT_TABLE, TableSpec
from sinks.capabilities import capabilities
from sinks.sql.types import arrow_type, bounded_text, column_type, exact_collation, key_text_length

IDENTITY = IDENTITY_COLUMNS
# The primary key of append tables: the same columns, the offset first. PostgreSQL's B-tree then
# decides most comparisons on one integer instead of the (always equal) topic text and
# partition: 1,000,000 rows COPYed in 20 batches took 5.5 s of server time instead of 6.4 s, and
# 4.9 s with each batch's rows sent in key order (``in_key_order``).
APPEND_KEY = ("_offset", "_partition", "_topic")
_KAFKA_TOPIC_CHARS = 249
_PIPELINE_CHARS = 255
_TABLE_NAME_CHARS = 64 + 1 + 64  # schema.table at MySQL's identifier limits
_KEY_PREFIX_CHARS = 255


class AddColumn(ExecutableDDLElement):
    """``ALTER TABLE <table> ADD COLUMN <column spec>`` for one new nullable column."""

    inherit_cache = False

    def __init__(self, table: sa.Table, column: sa.Column[Any]) -> None:
        self.table = table
        self.column = column


@compiles(AddColumn)
def _add_column(element: AddColumn, compiler: DDLCompiler, **kw: Any) -> str:
    table = compiler.preparer.format_table(element.table)
    return f"ALTER TABLE {table} ADD COLUMN {compiler.get_column_specification(element.column)}"


class AlterColumnType(ExecutableDDLElement):
    """Change one column's type to ``column.type``, keeping its values."""

    inherit_cache = False

    def __init__(self, table: sa.Table, column: sa.Column[Any]) -> None:
        self.table = table
        self.column = column


@compiles(AlterColumnType)
def _alter_column_type(element: AlterColumnType, compiler: DDLCompiler, **kw: Any) -> str:
    preparer = compiler.preparer
    table = preparer.format_table(element.table)
    how = capabilities(compiler.dialect).alter_column_type
    if how == "modify_column":
        spec = compiler.get_column_specification(element.column)
        return f"ALTER TABLE {table} MODIFY COLUMN {spec}"
    if how == "alter_type_using":
        name = preparer.format_column(element.column)
        type_sql = compiler.dialect.type_compiler_instance.process(element.column.type)
        return f"ALTER TABLE {table} ALTER COLUMN {name} TYPE {type_sql} USING {name}::{type_sql}"
    msg = f"{capabilities(compiler.dialect).name} cannot change a column's type in place"
    raise NotImplementedError(msg)


class RenameTable(ExecutableDDLElement):
    inherit_cache = False

    def __init__(self, table: sa.Table, new_name: str) -> None:
        self.table = table
        self.new_name = new_name


@compiles(RenameTable)
def _rename_table(element: RenameTable, compiler: DDLCompiler, **kw: Any) -> str:
    table = compiler.preparer.format_table(element.table)
    return f"ALTER TABLE {table} RENAME TO {compiler.preparer.quote(element.new_name)}"


def check_name(name: str, dialect: Dialect, what: str) -> str | None:
    """Why ``name`` cannot be an identifier in this database, or None if it can."""
    if not name:
        return f"{what} name is empty"
    if "\x00" in name:
        return f"{what} name {name!r} contains a NUL character"
    caps = capabilities(dialect)
    limit = caps.identifier_limit or dialect.max_identifier_length
    unit = caps.identifier_unit
    size = len(name.encode()) if unit == "bytes" else len(name)
    if limit and size > limit:
        return f"{what} name {name!r} is {size} {unit}; {caps.name} allows at most {limit}"
    if not caps.trailing_space_in_names and name != name.rstrip():
        return f"{what} name {name!r} ends with a space, which {caps.name} does not allow"
    return None


def check_spec(spec: TableSpec, dialect: Dialect) -> None:
    """Refuse table, schema and key names the database cannot hold, before touching it."""
    names = [("table", spec.table), *(("key column", k) for k in spec.key)]
    if spec.db_schema is not None:
        names.append(("schema", spec.db_schema))
    for what, name in names:
        problem = check_name(name, dialect, what)
        if problem:
            msg = f"pipeline {spec.pipeline!r}: {problem}"
            raise ConfigError(msg)
    caps = capabilities(dialect)
    if spec.db_schema is not None and not caps.schemas:
        msg = f"pipeline {spec.pipeline!r}: 'schema' is not supported for {caps.name} targets"
        raise ConfigError(msg)


def check_fields(fields: tuple[pa.Field, ...], spec: TableSpec, dialect: Dialect) -> None:
    for field in fields:
        problem = check_name(field.name, dialect, "field")
        if problem:
            msg = f"pipeline {spec.pipeline!r}: {problem}"
            raise SchemaConflictError(msg)


CHECKPOINT_KEY = ("pipeline", "topic", "table_name", "partition")


def checkpoint_table(spec: TableSpec, dialect: Dialect, name: str = CHECKPOINT_TABLE) -> sa.Table:
    """``_kafka_etl_checkpoints``: a next offset per pipeline, topic, table and partition."""
    return sa.Table(
        name,
        sa.MetaData(),
        sa.Column("pipeline", _name_type(dialect, _PIPELINE_CHARS), nullable=False),
        sa.Column("topic", _name_type(dialect, _KAFKA_TOPIC_CHARS), nullable=False),
        checkpoint_table_column(dialect),
        sa.Column("partition", sa.Integer(), nullable=False),
        sa.Column("next_offset", sa.BigInteger(), nullable=False),
        sa.Column("updated_at", sa.DateTime(timezone=True), nullable=False),
        sa.PrimaryKeyConstraint(*CHECKPOINT_KEY),
        schema=spec.db_schema,
        mysql_engine="InnoDB",
        mysql_charset="utf8mb4",
    )


def checkpoint_table_column(dialect: Dialect, server_default: str | None = None) -> sa.Column[Any]:
    """The table a checkpoint belongs to (its display name, ``schema.table``)."""
    return sa.Column(
        "table_name",
        _name_type(dialect, _TABLE_NAME_CHARS),
        nullable=False,
        server_default=server_default,
    )


def _name_type(dialect: Dialect, chars: int) -> Any:
    # MySQL/MariaDB index only bounded strings, compared exactly (the key is case-sensitive).
    return (
        sa.String(chars, collation=exact_collation(dialect)) if bounded_text(dialect) else sa.Text()
    )


def in_key_order(table: sa.Table, rows: pa.Table) -> pa.Table:
    """``rows`` sorted by the table's primary key, so that the index (InnoDB: the table) grows
    at its right edge instead of splitting pages in the middle where partitions interleave."""
    key = [name for name in table.primary_key.columns.keys() if name in rows.column_names]  # noqa: SIM118
    if not key or rows.num_rows < 2:
        return rows
    return rows.take(pc.sort_indices(rows, [(name, "ascending") for name in key]))


def target_table(schema: pa.Schema, spec: TableSpec, dialect: Dialect) -> sa.Table:
    """The table a first batch with this schema creates."""
    key = APPEND_KEY if spec.mode == "append" else spec.key
    key_chars = key_text_length([schema.field(k).type for k in key if k in schema.names])
    columns = []
    for field in schema:
        sql = column_type(field.type, dialect, indexed=field.name in key, key_chars=key_chars)
        if bounded_text(dialect) and field.name == "_topic":
            sql = sa.String(_KAFKA_TOPIC_CHARS, collation=exact_collation(dialect))
        elif bounded_text(dialect) and field.name == "_key" and field.name not in key:
            # Tombstones match rows by _key: compared exactly, any length, prefix-indexed.
            sql = mysql.LONGTEXT(collation=exact_collation(dialect))
        if sql is None:
            msg = (
                f"pipeline {spec.pipeline!r}: field {field.name!r} has type {field.type},"
                f" which kafka-etl cannot store in {capabilities(dialect).name}"
            )
            raise SchemaConflictError(msg)
        # Never AUTO_INCREMENT/SERIAL: a key is data (MariaDB would replace an id of 0).
        columns.append(
            sa.Column(field.name, sql, nullable=field.name not in key, autoincrement=False)
        )
    table = sa.Table(
        spec.table,
        sa.MetaData(),
        *columns,
        sa.PrimaryKeyConstraint(*key),
        schema=spec.db_schema,
        mysql_engine="InnoDB",
        mysql_charset="utf8mb4",
    )
    if spec.delete_on_tombstone and "_key" not in key and "_key" in schema.names:
        sa.Index(index_name(spec, "key"), table.c._key, mysql_length=_KEY_PREFIX_CHARS)
    return table


def missing_key_columns(schema: pa.Schema, spec: TableSpec) -> list[str]:
    key = IDENTITY if spec.mode == "append" else spec.key
    return [name for name in key if name not in schema.names]


def index_name(spec: TableSpec, purpose: str) -> str:
    """Short and unique per table: index names share one namespace per schema on PostgreSQL."""
    digest = hashlib.sha1(f"{spec.db_schema}.{spec.table}".encode()).hexdigest()[:16]
    return f"kx_{digest}_{purpose}"


def new_column(table: sa.Table, field: pa.Field, spec: TableSpec, dialect: Dialect) -> AddColumn:
    sql = column_type(field.type, dialect)
    if sql is None:
        msg = (
            f"pipeline {spec.pipeline!r}: field {field.name!r} has type {field.type},"
            f" which kafka-etl cannot store in {capabilities(dialect).name}"
        )
        raise SchemaConflictError(msg)
    column = sa.Column(field.name, sql, nullable=True)
    # A detached copy, so the reflected table is not changed before the DDL has committed.
    shadow = sa.Table(table.name, sa.MetaData(), column, schema=table.schema)
    return AddColumn(shadow, column)


def widen_columns(
    conn: Connection, table: sa.Table, widened: dict[str, pa.DataType], spec: TableSpec
) -> None:
    """Change the types of ``widened`` columns, keeping every stored value."""
    dialect = conn.dialect
    types: dict[str, TypeEngine[Any]] = {}
    for name, arrow in widened.items():
        sql = column_type(arrow, dialect)
        if sql is None:  # pragma: no cover - widening only produces scalar types
            where = capabilities(dialect).name
            msg = f"pipeline {spec.pipeline!r}: cannot widen {name!r} to {arrow} in {where}"
            raise SchemaConflictError(msg)
        types[name] = sql
    if capabilities(dialect).alter_column_type == "rebuild":
        _rebuild(conn, table, types)
        return
    for name, sql in types.items():
        column = sa.Column(name, sql, nullable=table.c[name].nullable)
        shadow = sa.Table(table.name, sa.MetaData(), column, schema=table.schema)
        conn.execute(AlterColumnType(shadow, column))


def _rebuild(conn: Connection, table: sa.Table, types: dict[str, TypeEngine[Any]]) -> None:
    """SQLite: a copy of ``table`` with new column types replaces it (same transaction)."""
    temporary = f"{table.name}__kafka_etl_rebuild"
    copy = sa.Table(
        temporary,
        sa.MetaData(),
        *(
            sa.Column(c.name, types.get(c.name, c.type), nullable=c.nullable, autoincrement=False)
            for c in table.columns
        ),
        sa.PrimaryKeyConstraint(*table.primary_key.columns.keys()),
        schema=table.schema,
    )
    copy.create(conn)
    names = [c.name for c in table.columns]
    conn.execute(sa.insert(copy).from_select(names, sa.select(*table.columns)))
    indexes = list(table.indexes)
    table.drop(conn)
    conn.execute(RenameTable(copy, table.name))
    for index in indexes:
        index.create(conn)


def reflect(conn: Connection, spec: TableSpec) -> sa.Table | None:
    if not sa.inspect(conn).has_table(spec.table, schema=spec.db_schema):
        return None
    table = sa.Table(spec.table, sa.MetaData(), schema=spec.db_schema, autoload_with=conn)
    if capabilities(conn.dialect).mysql_reflection and any("``" in c.name for c in table.columns):
        table = _unescape_backticks(table)
    return table


def _unescape_backticks(table: sa.Table) -> sa.Table:
    """SQLAlchemy's MySQL reflection keeps a backtick in a name doubled (``a``b`` -> a``b)."""

    def name(n: str) -> str:
        return n.replace("``", "`")

    columns = [
        sa.Column(
            name(c.name),
            c.type,
            nullable=c.nullable,
            primary_key=c.primary_key,
            autoincrement=False,
        )
        for c in table.columns
    ]
    return sa.Table(table.name, sa.MetaData(), *columns, schema=table.schema)


def arrow_schema(conn: Connection, table: sa.Table, *, reflected: bool = True) -> pa.Schema:
    """The table's columns as Arrow types (``reflected=False``: a definition made here, whose
    JSON columns still have their JSON type, so MariaDB's catalog need not be asked)."""
    checked_json = reflected and capabilities(conn.dialect).mysql_reflection
    json_columns = _json_checked_columns(conn, table) if checked_json else set()
    return pa.schema(
        [
            pa.field(c.name, arrow_type(c.type, conn.dialect, json=c.name in json_columns))
            for c in table.columns
        ]
    )


def has_unique_key(conn: Connection, table: sa.Table, key: tuple[str, ...]) -> bool:
    inspector = sa.inspect(conn)
    wanted = set(key)
    if set(table.primary_key.columns.keys()) == wanted:
        return True
    uniques = inspector.get_unique_constraints(table.name, schema=table.schema)
    indexes = inspector.get_indexes(table.name, schema=table.schema)
    candidates: list[list[str | None]] = [list(u["column_names"]) for u in uniques]
    candidates += [list(i["column_names"]) for i in indexes if i.get("unique")]
    fix = capabilities(conn.dialect).mysql_reflection  # see _unescape_backticks
    return any(
        {(n or "").replace("``", "`") if fix else n for n in names} == wanted
        for names in candidates
    )


def _json_checked_columns(conn: Connection, table: sa.Table) -> set[str]:
    """MariaDB's JSON is LONGTEXT with a column-level ``json_valid`` check: find those."""
    checks = sa.table(
        "CHECK_CONSTRAINTS",
        sa.column("CONSTRAINT_SCHEMA"),
        sa.column("TABLE_NAME"),
        sa.column("CONSTRAINT_NAME"),
        sa.column("CHECK_CLAUSE"),
        schema="information_schema",
    )
    schema = sa.literal(table.schema) if table.schema else sa.func.database()
    c = checks.c
    query = sa.select(c["CONSTRAINT_NAME"], c["CHECK_CLAUSE"]).where(
        c["CONSTRAINT_SCHEMA"] == schema, c["TABLE_NAME"] == table.name
    )
    try:
        found = conn.execute(query).all()
    except sa.exc.DBAPIError:  # MySQL before 8.0.16 has no such view (and no CHECKs)
        return set()
    return {str(name) for name, clause in found if str(clause).lower().startswith("json_valid(")}


_CREATE_LOCK_SECONDS = 300


@contextmanager
def creating(conn: Connection, what: str) -> Iterator[None]:
    """Take turns with other writers that may create ``what`` in this database at the same
    moment (two first runs, say). Checking that a table is missing and then creating it is not
    enough: two concurrent CREATEs of one table fail (PostgreSQL's catalog, even with IF NOT
    EXISTS; MySQL/MariaDB's "already exists") instead of one waiting for the other.

    PostgreSQL: a lock held to the end of the transaction, so the next writer sees the table.
    MySQL/MariaDB, whose DDL commits at once: a named lock for the block. SQLite and DuckDB
    serialize writers on their own.
    """
    key = f"kafka-etl: create {what}"
    lock = capabilities(conn.dialect).creation_lock
    if lock == "advisory_xact":
        conn.execute(sa.select(sa.func.pg_advisory_xact_lock(sa.func.hashtext(key))))
        yield
    elif lock == "named":
        name = f"kafka-etl:{hashlib.sha1(key.encode()).hexdigest()}"  # GET_LOCK: 64 chars
        got = conn.execute(sa.select(sa.func.get_lock(name, _CREATE_LOCK_SECONDS))).scalar()
        if got != 1:
            msg = f"waited {_CREATE_LOCK_SECONDS}s for another writer creating {what}"
            raise SinkUnavailableError(msg)
        release = sa.select(sa.func.release_lock(name))
        try:
            yield
        except BaseException:
            # The failure is the one to report; the server frees the lock with the session.
            with contextlib.suppress(sa.exc.SQLAlchemyError):
                conn.execute(release)
            raise
        conn.execute(release)
    else:
        yield


def ensure_schema(conn: Connection, spec: TableSpec) -> None:
    if spec.db_schema is not None:
        conn.execute(sa.schema.CreateSchema(spec.db_schema, if_not_exists=True))
