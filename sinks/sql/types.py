"""Arrow types to SQLAlchemy column types and back, with the few dialect variants that matter.

Nested values (structs, lists, maps) are stored as JSON: ``JSONB`` on PostgreSQL, ``JSON`` on
MySQL/MariaDB (MariaDB stores it as ``LONGTEXT`` with a ``json_valid`` check), ``JSON`` on SQLite
(JSON text in a column SQLite gives no type of its own). Reading a table back, a JSON column
becomes Arrow's ``arrow.json`` extension type, which ``sinks.schema`` accepts for any nested value.

MySQL/MariaDB cannot index ``TEXT``, so columns that take part in a key get ``VARCHAR`` with a
length that keeps the whole index within InnoDB's 3072 bytes, and a binary, no-pad collation so
keys compare exactly ("a" != "A" != "a ") as they do in Kafka and in the other databases.
"""

from __future__ import annotations

from typing import Any

import pyarrow as pa
import sqlalchemy as sa
from sqlalchemy.dialects import mysql, postgresql
from sqlalchemy.engine import Dialect
from sqlalchemy.types import TypeEngine

from sinks.capabilities import capabilities

JSON_TYPE = pa.json_()
TIMESTAMP_UNIT = "us"
# InnoDB's limit for one index (DYNAMIC rows), in bytes; utf8mb4 needs up to 4 per character.
_INNODB_INDEX_BYTES = 3072
_MAX_KEY_CHARS = 255


def bounded_text(dialect: Dialect) -> bool:
    """The MySQL type family (``Capabilities.bounded_text_types``)."""
    return capabilities(dialect).bounded_text_types


def exact_collation(dialect: Dialect) -> str | None:
    """A case-, accent- and trailing-space-sensitive collation for key columns."""
    return capabilities(dialect).exact_collation


def stored_as_json(arrow: pa.DataType) -> bool:
    """Values of this type are written as JSON text (intervals too: the SQL databases share no
    interval type, and a JSON string such as "1 day 00:00:01.5" keeps the value readable)."""
    return pa.types.is_nested(arrow) or pa.types.is_interval(arrow) or arrow == JSON_TYPE


def key_text_length(key_types: list[pa.DataType]) -> int:
    """Characters per string column of a MySQL index over columns of these types."""
    strings = sum(1 for t in key_types if _is_text(t))
    other = 8 * (len(key_types) - strings)
    if not strings:
        return _MAX_KEY_CHARS
    return max(1, min(_MAX_KEY_CHARS, (_INNODB_INDEX_BYTES - other) // (4 * strings)))


def column_type(
    arrow: pa.DataType, dialect: Dialect, *, indexed: bool = False, key_chars: int = 255
) -> TypeEngine[Any] | None:
    """The SQL type for an Arrow type, or None when kafka-etl cannot store it."""
    t = pa.types
    if t.is_dictionary(arrow):
        arrow = arrow.value_type
    if t.is_boolean(arrow):
        return sa.Boolean()
    if t.is_integer(arrow):
        return _integer_type(arrow)
    if t.is_floating(arrow):
        return sa.Float(precision=24) if arrow.bit_width <= 32 else sa.Double()
    if t.is_decimal(arrow):
        return sa.Numeric(arrow.precision, arrow.scale)
    if _is_text(arrow):
        return _text_type(dialect, indexed=indexed, key_chars=key_chars)
    if t.is_binary(arrow) or t.is_large_binary(arrow) or t.is_fixed_size_binary(arrow):
        if bounded_text(dialect):
            # MySQL/MariaDB index only bounded bytes: a bytes key as key_chars text would be.
            return mysql.VARBINARY(4 * key_chars) if indexed else mysql.LONGBLOB()
        return sa.LargeBinary()
    if t.is_timestamp(arrow):
        if bounded_text(dialect):
            return mysql.DATETIME(fsp=6)
        return sa.DateTime(timezone=arrow.tz is not None)
    if t.is_date(arrow):
        return sa.Date()
    if t.is_time(arrow):
        return mysql.TIME(fsp=6) if bounded_text(dialect) else sa.Time()
    if stored_as_json(arrow):
        return postgresql.JSONB() if capabilities(dialect).jsonb else sa.JSON()
    return None


def _integer_type(arrow: pa.DataType) -> TypeEngine[Any]:
    signed = pa.types.is_signed_integer(arrow)
    width = arrow.bit_width if signed else arrow.bit_width * 2
    if width <= 16:
        return sa.SmallInteger()
    if width <= 32:
        return sa.Integer()
    if width <= 64:
        return sa.BigInteger()
    return sa.Numeric(20, 0)  # uint64


def _text_type(dialect: Dialect, *, indexed: bool, key_chars: int) -> TypeEngine[Any]:
    if not bounded_text(dialect):
        return sa.Text()
    if indexed:
        return mysql.VARCHAR(key_chars, collation=exact_collation(dialect))
    return mysql.LONGTEXT()


def arrow_type(sql: TypeEngine[Any], dialect: Dialect, *, json: bool = False) -> pa.DataType:
    """The Arrow type a reflected column holds (what ``sinks.schema`` casts batches to)."""
    if json or isinstance(sql, sa.JSON):
        return JSON_TYPE
    if isinstance(sql, sa.Boolean):
        return pa.bool_()
    if isinstance(sql, mysql.TINYINT):
        return pa.bool_() if sql.display_width == 1 else pa.int8()
    if isinstance(sql, sa.SmallInteger):
        return pa.int16()
    if isinstance(sql, sa.BigInteger):
        return pa.int64()
    if isinstance(sql, sa.Integer):
        return pa.int32()
    if isinstance(sql, sa.Float):
        single = isinstance(sql, sa.REAL | mysql.FLOAT) or (sql.precision or 53) <= 24
        return pa.float32() if single and capabilities(dialect).float32 else pa.float64()
    if isinstance(sql, sa.Numeric):
        if sql.precision is None:
            return pa.float64()
        return pa.decimal128(sql.precision, sql.scale or 0)
    if isinstance(sql, sa.DateTime):
        aware = bool(getattr(sql, "timezone", False)) or not capabilities(dialect).naive_timestamps
        # Only PostgreSQL keeps the difference; elsewhere kafka-etl stores UTC wall time.
        return pa.timestamp(TIMESTAMP_UNIT, tz="UTC" if aware else None)
    if isinstance(sql, sa.Date):
        return pa.date32()
    if isinstance(sql, sa.Time):
        return pa.time64(TIMESTAMP_UNIT)
    if isinstance(sql, sa.LargeBinary | sa.types._Binary):
        return pa.binary()
    return pa.string()  # TEXT, VARCHAR, ENUM, UUID and anything else: read as text


def _is_text(t: pa.DataType) -> bool:
    return pa.types.is_string(t) or pa.types.is_large_string(t) or pa.types.is_string_view(t)
