"""Value checks for the pipeline models: what ``run`` or Dagster would refuse later, refused
when the file is read, offline and fast.

Each function returns the value or raises ``ValueError`` with the reason; the models turn it
into one line naming the file, pipeline and field.
"""

from __future__ import annotations

import functools
import re
from collections.abc import Mapping
from zoneinfo import ZoneInfo, ZoneInfoNotFoundError

from connector.names import ISOLATION_LEVEL, MANAGED_SETTINGS
from kafka_etl.errors import redact
from kafka_etl.extras import extra_for
from pipelines.yaml_file import show
from sinks.capabilities import KNOWN, capabilities

Settings = Mapping[str, str | int | float | bool]

# Consumer settings the runner owns: changing them would break bounded, exactly-once reads.
RESERVED_KAFKA_KEYS = frozenset(MANAGED_SETTINGS)
_TOPIC = re.compile(r"^[A-Za-z0-9._-]{1,249}$")
_OWNER = re.compile(r"^(team:\S+|[^@\s]+@[^@\s]+\.[^@\s]+)$")
# A property librdkafka cannot know, set after the user's: when it is the one refused, every
# setting before it was accepted, and no client (no thread, no connection) was created.
_SENTINEL = "kafka-etl.validation.sentinel"


def topic_name(value: str) -> str:
    """Kafka's rule: 1-249 of ``[a-zA-Z0-9._-]``, and not ``.`` or ``..``."""
    if not _TOPIC.match(value) or value in (".", ".."):
        msg = (
            f"{show(value)} is not a Kafka topic name (1 to 249 letters, digits, '.', '_' or"
            " '-'; not '.' or '..')"
        )
        raise ValueError(msg)
    return value


def owner(value: str) -> str:
    """Dagster's rule for asset owners: an email address or ``team:<name>``."""
    if not _OWNER.match(value):
        msg = f"{show(value)} is neither an email address nor 'team:<name>'"
        raise ValueError(msg)
    return value


def timezone(value: str) -> str:
    """An IANA time zone, as Dagster's schedules and daily partitions load it (zoneinfo)."""
    if value in ("UTC", "utc"):
        return value
    try:
        ZoneInfo(value)
    except (ZoneInfoNotFoundError, ValueError, OSError):
        msg = f"unknown time zone {show(value)} (an IANA name such as 'Europe/Berlin' or 'UTC')"
        raise ValueError(msg) from None
    return value


@functools.lru_cache(maxsize=256)
def target_url(value: str) -> str:
    """A URL kafka-etl can load into: a known backend, a driver that is installed (or that an
    extra brings), and a file (not memory) for DuckDB and SQLite, whose rows and checkpoints
    would vanish with the run."""
    from sqlalchemy.engine import make_url
    from sqlalchemy.exc import ArgumentError, NoSuchModuleError

    try:
        url = make_url(value)
    except (ArgumentError, ValueError):  # not echoed: what does not parse cannot be masked
        msg = "not a database URL (e.g. duckdb:///warehouse.duckdb or postgresql+psycopg://…)"
        raise ValueError(msg) from None
    safe = show(redact(value))
    backend = url.get_backend_name()
    if backend not in KNOWN:
        msg = f"{safe}: unknown database {backend!r} (kafka-etl loads into {', '.join(KNOWN)})"
        raise ValueError(msg)
    caps = capabilities(backend)
    if caps.file_database and (url.database or ":memory:").startswith(":memory:"):
        msg = (
            f"{safe} is an in-memory database: its rows and checkpoints would vanish when the"
            f" run ends; name a file, e.g. {backend}:///warehouse.{backend}"
        )
        raise ValueError(msg)
    if caps.sink == "duckdb":
        _duckdb_options(safe, {k: v if isinstance(v, str) else v[-1] for k, v in url.query.items()})
        return value
    try:
        dialect = url.get_dialect()
    except NoSuchModuleError:
        msg = f"{safe}: unknown driver {url.drivername!r} for {backend}"
        raise ValueError(msg) from None
    try:
        dialect.import_dbapi()
    except ImportError as exc:
        if extra_for(exc.name):
            # A driver one of kafka-etl's extras brings: the file is right and this install lacks
            # the extra. The file's other pipelines still run; this one's run fails in one line
            # naming the extra to install (sinks.sql.sink).
            return value
        msg = f"{safe}: the driver for {url.drivername!r} is not installed ({exc})"
        raise ValueError(msg) from None
    return value


def target_names(
    target: str,
    table: str,
    schema: str | None,
    key: tuple[str, ...],
    dead_letters: bool,
    *,
    deletes: bool = False,
) -> None:
    """Table, schema, key, dead-letter and delete-marker table names the target database can
    hold, by the sink's own rules (``sinks.sql.tables.check_name``, with the dialect's offline
    defaults)."""
    from sqlalchemy.engine import make_url

    url = make_url(target)
    caps = capabilities(url.get_backend_name())
    if caps.sink == "duckdb":
        return  # DuckDB takes any name (quoted)
    if schema is not None and not caps.schemas:
        msg = f"field 'schema': not supported for {caps.name} targets"
        raise ValueError(msg)
    from sinks.dead_letter_table import dlq_table_name
    from sinks.delete_markers import markers_table_name
    from sinks.sql.tables import check_name

    dialect = url.get_dialect()()
    names = [("table", "table", table), *(("key", "key column", k) for k in key)]
    if schema is not None:
        names.append(("schema", "schema", schema))
    if dead_letters:
        names.append(("table", "dead-letter table", dlq_table_name(table)))
    if deletes:
        names.append(("table", "delete-marker table", markers_table_name(table)))
    for field, what, name in names:
        problem = check_name(name, dialect, what)
        if problem:
            msg = f"field {field!r}: {problem}"
            raise ValueError(msg)


def _duckdb_options(safe: str, options: dict[str, str]) -> None:
    """The target's query string as DuckDB options, set on a scratch in-memory database the
    way the sink sets them on the file."""
    if not options:
        return
    import duckdb

    con = duckdb.connect(":memory:")
    try:
        for name, value in options.items():
            try:
                con.execute(f'SET "{name.replace(chr(34), chr(34) * 2)}" = ?', [value])
            except duckdb.Error as exc:
                msg = f"{safe}: option {name}={show(value)}: {str(exc).splitlines()[0]}"
                raise ValueError(msg) from None
    finally:
        con.close()


def kafka_settings(settings: Settings, *, pipeline_level: bool) -> Settings:
    """librdkafka settings: scalar values, none that kafka-etl manages, and each known to
    librdkafka with a value it takes (checked without creating a client)."""
    for name, value in settings.items():
        if not isinstance(value, str | int | float | bool):
            kind = type(value).__name__ if value is not None else "empty"
            msg = f"setting {name!r} is {kind}; give a string, number or boolean"
            raise ValueError(msg)
    reserved = RESERVED_KAFKA_KEYS & set(settings)
    if reserved:
        msg = f"setting {sorted(reserved)[0]!r} is managed by kafka-etl"
        raise ValueError(msg)
    if "group.id" in settings:
        scope = "the pipeline's" if pipeline_level else "every pipeline's"
        msg = (
            f"setting 'group.id' would replace {scope} consumer group; set the pipeline field"
            " 'group_id' instead"
        )
        raise ValueError(msg)
    level = settings.get("isolation.level")
    if level is not None and level != ISOLATION_LEVEL:
        msg = (
            f"setting 'isolation.level: {level}': kafka-etl reads {ISOLATION_LEVEL}; anything else"
            " would load the messages of aborted transactions"
        )
        raise ValueError(msg)
    _librdkafka_accepts(settings)
    return settings


def _librdkafka_accepts(settings: Settings) -> None:
    from confluent_kafka import Consumer, KafkaException

    probe: dict[str, object] = {k: v for k, v in settings.items() if k != "bootstrap.servers"}
    probe.update({"group.id": "kafka-etl-validate", _SENTINEL: "1"})
    try:
        consumer = Consumer(probe)
    except KafkaException as exc:
        reason = exc.args[0].str() if exc.args and hasattr(exc.args[0], "str") else str(exc)
        if _SENTINEL in reason:
            return
        raise ValueError(" ".join(reason.split())) from None
    except (TypeError, ValueError) as exc:  # e.g. "error_cb" given as text
        msg = f"not a setting a pipelines file can give: {exc}"
        raise ValueError(msg) from None
    consumer.close()  # librdkafka took even the sentinel: nothing was checked, nothing to say


_ALIASES = frozenset(
    {"@yearly", "@annually", "@monthly", "@weekly", "@daily", "@midnight", "@hourly"}
)
_MONTHS = ("jan", "feb", "mar", "apr", "may", "jun", "jul", "aug", "sep", "oct", "nov", "dec")
_DAYS = ("sun", "mon", "tue", "wed", "thu", "fri", "sat")
# (what, lowest, highest, names starting at `lowest`)
_FIELDS: tuple[tuple[str, int, int, tuple[str, ...]], ...] = (
    ("minute", 0, 59, ()),
    ("hour", 0, 23, ()),
    ("day of month", 1, 31, ()),
    ("month", 1, 12, _MONTHS),
    ("day of week", 0, 7, _DAYS),
)
_ITEM = re.compile(r"^(?P<base>\*|\?|[^-/]+(?:-[^-/]+)?)(?:/(?P<step>\d+))?$")


def dagster_name(text: str) -> str:
    """``text`` as a Dagster name (letters, digits, underscores): how jobs, sensors and asset
    groups are named after pipelines and databases."""
    return re.sub(r"[^A-Za-z0-9_]", "_", text).strip("_") or "_"


def cron(value: str) -> str:
    """A cron schedule as Dagster takes it: five fields (minute hour day month weekday) or an
    alias such as ``@daily``. A subset of what Dagster's croniter accepts (no ``R``, ``H``,
    ``W``), checked the way Dagster checks it, so that Dagster never refuses a valid file."""
    fields = value.split()
    if len(fields) == 1 and fields[0].lower() in _ALIASES:
        return value
    if len(fields) != 5:
        msg = (
            f"{show(value)} is not a cron schedule: five fields (minute hour day month weekday),"
            f" e.g. '*/5 * * * *', or @hourly/@daily/@weekly/@monthly/@yearly; got {len(fields)}"
        )
        raise ValueError(msg)
    parsed = [_cron_field(text, *spec, value) for text, spec in zip(fields, _FIELDS, strict=True)]
    if parsed[3] == {2} and parsed[2] in ({30}, {31}):
        msg = f"{show(value)} is not a cron schedule: February has no day {min(parsed[2])}"
        raise ValueError(msg)
    return value


def _cron_field(
    text: str, what: str, low: int, high: int, names: tuple[str, ...], whole: str
) -> set[int] | None:
    """The single value a field names (for the February check), None for anything wider."""
    values: set[int] = set()
    single = True
    for item in text.split(","):
        match = _ITEM.match(item)
        if match is None:
            single = False
            _cron_bad(whole, what, item, low, high)
            continue
        base, step = match.group("base"), match.group("step")
        if step is not None and int(step) == 0:
            _cron_bad(whole, what, item, low, high)
        if base in ("*", "?"):
            if base == "?" and what not in ("day of month", "day of week"):
                _cron_bad(whole, what, item, low, high)
            single = False
            continue
        bounds = [
            _cron_value(part, what, low, high, names, whole, item) for part in base.split("-")
        ]
        if len(bounds) == 2 or step is not None:
            single = False
        values.update(b for b in bounds if b is not None)
        if any(b is None for b in bounds):
            single = False
    return values if single and len(values) == 1 else None


def _cron_value(
    part: str, what: str, low: int, high: int, names: tuple[str, ...], whole: str, item: str
) -> int | None:
    lowered = part.lower()
    if lowered in names:
        return low + names.index(lowered) if what == "month" else names.index(lowered)
    if what == "day of month" and lowered == "l" and item.lower() == "l":
        return None  # the last day of the month, on its own
    if what == "day of week" and re.fullmatch(r"[0-7]#[1-5]", part):
        return None  # the n-th weekday of the month, on its own
    if part.isdigit() and low <= int(part) <= high:
        return int(part)
    _cron_bad(whole, what, item, low, high)
    return None


def _cron_bad(whole: str, what: str, item: str, low: int, high: int) -> None:
    msg = f"{show(whole)} is not a cron schedule: {what} {item!r} is not in {low}-{high}"
    raise ValueError(msg)
