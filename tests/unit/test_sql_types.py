"""Arrow <-> SQL type mapping and the DDL it compiles to, per dialect (no database needed)."""

from __future__ import annotations

import pyarrow as pa
import pytest
import sqlalchemy as sa
from sqlalchemy.dialects import mysql, postgresql, sqlite
from sqlalchemy.engine import Dialect
from sqlalchemy.schema import CreateTable

from kafka_etl.errors import ConfigError, SchemaConflictError
from sinks.base import TableSpec
from sinks.sql import tables
from sinks.sql.types import JSON_TYPE, arrow_type, column_type, key_text_length


def mariadb() -> Dialect:
    dialect = mysql.pymysql.dialect()
    dialect.is_mariadb = True
    return dialect


DIALECTS = {
    "postgresql": postgresql.psycopg.dialect(),
    "mariadb": mariadb(),
    "sqlite": sqlite.pysqlite.dialect(),
}
NESTED = pa.struct([pa.field("a", pa.list_(pa.int64()))])


def ddl(arrow: pa.DataType, dialect: Dialect, **kw: object) -> str:
    sql = column_type(arrow, dialect, **kw)  # type: ignore[arg-type]
    assert sql is not None
    return str(sql.compile(dialect=dialect))


@pytest.mark.parametrize(
    ("dialect", "expected"),
    [("postgresql", "JSONB"), ("mariadb", "JSON"), ("sqlite", "JSON")],
)
def test_nested_values_are_json_with_each_databases_own_type(dialect: str, expected: str) -> None:
    for nested in (NESTED, pa.list_(pa.string()), pa.map_(pa.string(), pa.int64())):
        assert ddl(nested, DIALECTS[dialect]) == expected


def test_timestamps_keep_their_zone_on_postgresql_and_microseconds_on_mariadb() -> None:
    utc = pa.timestamp("ms", tz="UTC")
    assert ddl(utc, DIALECTS["postgresql"]) == "TIMESTAMP WITH TIME ZONE"
    assert ddl(pa.timestamp("us"), DIALECTS["postgresql"]) == "TIMESTAMP WITHOUT TIME ZONE"
    assert ddl(utc, DIALECTS["mariadb"]) == "DATETIME(6)"
    assert ddl(utc, DIALECTS["sqlite"]) == "DATETIME"


def test_mariadb_key_text_is_an_exact_varchar_that_fits_innodbs_index() -> None:
    assert ddl(pa.string(), DIALECTS["mariadb"]) == "LONGTEXT"
    keyed = ddl(
        pa.string(), DIALECTS["mariadb"], indexed=True, key_chars=key_text_length([pa.string()])
    )
    assert keyed == "VARCHAR(255) COLLATE utf8mb4_nopad_bin"
    # Four string key columns share InnoDB's 3072 bytes (4 bytes per utf8mb4 character).
    assert key_text_length([pa.string()] * 4) == 192
    assert key_text_length([pa.string(), pa.int64()]) == 255
    assert ddl(pa.string(), DIALECTS["postgresql"], indexed=True) == "TEXT"


@pytest.mark.parametrize("name", ["postgresql", "mariadb", "sqlite"])
@pytest.mark.parametrize(
    "arrow",
    [
        pa.bool_(),
        pa.int16(),
        pa.int32(),
        pa.int64(),
        pa.float64(),
        pa.string(),
        pa.date32(),
        pa.decimal128(12, 3),
        pa.binary(),
        NESTED,
    ],
    ids=str,
)
def test_a_created_column_reads_back_as_the_arrow_type_it_was_made_from(
    name: str, arrow: pa.DataType
) -> None:
    dialect = DIALECTS[name]
    sql = column_type(arrow, dialect)
    assert sql is not None
    back = arrow_type(sql, dialect)
    assert back == (JSON_TYPE if pa.types.is_nested(arrow) else arrow)


def test_reflected_types_map_back() -> None:
    pg, maria = DIALECTS["postgresql"], DIALECTS["mariadb"]
    assert arrow_type(postgresql.JSONB(), pg) == JSON_TYPE
    assert arrow_type(postgresql.TIMESTAMP(timezone=True), pg) == pa.timestamp("us", "UTC")
    assert arrow_type(postgresql.TIMESTAMP(), pg) == pa.timestamp("us")
    assert arrow_type(postgresql.REAL(), pg) == pa.float32()
    assert arrow_type(mysql.TINYINT(display_width=1), maria) == pa.bool_()
    assert arrow_type(mysql.TINYINT(), maria) == pa.int8()
    assert arrow_type(mysql.DATETIME(fsp=6), maria) == pa.timestamp("us", "UTC")
    # MariaDB's JSON is LONGTEXT: only its json_valid check says so (found by the sink).
    assert arrow_type(mysql.LONGTEXT(), maria) == pa.string()
    assert arrow_type(mysql.LONGTEXT(), maria, json=True) == JSON_TYPE
    assert arrow_type(postgresql.UUID(), pg) == pa.string()


def test_append_rows_are_sent_in_primary_key_order_with_partitions_interleaved() -> None:
    schema = pa.schema([("id", pa.int64()), ("_topic", pa.string()), ("_partition", pa.int32())])
    schema = schema.append(pa.field("_offset", pa.int64()))
    table = tables.target_table(schema, TableSpec("p", "t", "a"), DIALECTS["postgresql"])
    # As consumed: one partition's run of offsets after the other's.
    rows = pa.table(
        {"id": [1, 2, 3, 4, 5], "_topic": ["t"] * 5, "_partition": [0, 0, 0, 1, 1]},
    ).append_column("_offset", pa.array([7, 8, 9, 7, 8], pa.int64()))
    ordered = tables.in_key_order(table, rows)
    assert ordered.column("_offset").to_pylist() == [7, 7, 8, 8, 9]
    assert ordered.column("_partition").to_pylist() == [0, 1, 0, 1, 0]
    assert ordered.column("id").to_pylist() == [1, 4, 2, 5, 3]


def test_types_kafka_etl_cannot_store_are_refused_by_name() -> None:
    spec = TableSpec("orders", "t", "orders")
    schema = pa.schema([pa.field("d", pa.duration("s")), pa.field("_topic", pa.string())])
    with pytest.raises(SchemaConflictError, match="field 'd' has type duration\\[s\\]"):
        tables.target_table(schema, spec, DIALECTS["postgresql"])


def test_append_tables_are_keyed_by_offset_and_upsert_tables_by_their_key() -> None:
    fields = [("id", pa.int64()), ("_topic", pa.string()), ("_partition", pa.int32())]
    fields += [("_offset", pa.int64()), ("_timestamp", pa.timestamp("ms", "UTC"))]
    schema = pa.schema([*fields, ("_key", pa.string())])
    pg = DIALECTS["postgresql"]
    append = tables.target_table(schema, TableSpec("p", "t", "a"), pg)
    assert [c.name for c in append.primary_key.columns] == ["_offset", "_partition", "_topic"]
    spec = TableSpec("p", "t", "u", mode="upsert", key=("id",), delete_on_tombstone=True)
    upsert = tables.target_table(schema, spec, pg)
    assert [c.name for c in upsert.primary_key.columns] == ["id"]
    assert not upsert.c.id.autoincrement
    create = str(CreateTable(upsert).compile(dialect=pg))
    assert "SERIAL" not in create and "id BIGINT NOT NULL" in create
    assert [list(i.columns.keys()) for i in upsert.indexes] == [["_key"]]
    maria = str(
        CreateTable(tables.target_table(schema, spec, DIALECTS["mariadb"])).compile(
            dialect=DIALECTS["mariadb"]
        )
    )
    assert "AUTO_INCREMENT" not in maria
    assert "_topic VARCHAR(249) COLLATE utf8mb4_nopad_bin" in maria


def test_names_a_database_would_truncate_or_reject_are_refused() -> None:
    pg, maria, lite = DIALECTS["postgresql"], DIALECTS["mariadb"], DIALECTS["sqlite"]
    assert tables.check_name("é" * 32, pg, "field") == (
        f"field name {'é' * 32!r} is 64 bytes; postgresql allows at most 63"
    )
    assert tables.check_name("x" * 64, maria, "field") is None
    assert "allows at most 64" in (tables.check_name("x" * 65, maria, "field") or "")
    assert "ends with a space" in (tables.check_name("x ", maria, "field") or "")
    assert tables.check_name("", lite, "field") == "field name is empty"
    assert tables.check_name('x"; DROP TABLE t; --', pg, "table") is None
    with pytest.raises(ConfigError, match="'schema' is not supported for sqlite"):
        tables.check_spec(TableSpec("p", "t", "t", db_schema="s"), lite)


def test_new_columns_are_added_with_the_dialects_own_ddl() -> None:
    table = sa.Table('we"ird', sa.MetaData(), sa.Column("a", sa.Integer()), schema="s")
    spec = TableSpec("p", "t", 'we"ird', db_schema="s")
    for name, expected in [
        ("postgresql", 'ALTER TABLE s."we""ird" ADD COLUMN "x y" JSONB'),
        ("mariadb", 'ALTER TABLE s.`we"ird` ADD COLUMN `x y` JSON'),
    ]:
        dialect = DIALECTS[name]
        statement = tables.new_column(table, pa.field("x y", NESTED), spec, dialect)
        assert str(statement.compile(dialect=dialect)) == expected
