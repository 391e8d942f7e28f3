"""Pipeline definitions: one YAML file, the Kafka connection and any number of pipelines.

Models are frozen pydantic models validated at load time; every error becomes one line naming
the file, the pipeline and the field. Environment variables enter only through explicit
``${VAR}`` (or ``${VAR:-default}``) in string values. What ``run`` or Dagster would refuse
later (an unknown librdkafka setting, a target no sink can open, a topic name Kafka refuses, a
cron or time zone Dagster refuses) is refused here, offline (``pipelines/checks.py``); reading
the file itself is bounded in time and memory (``pipelines/yaml_file.py``).
"""

from __future__ import annotations

import gc
import os
import re
from pathlib import Path
from typing import Any, Literal

from pydantic import (
    BaseModel,
    ConfigDict,
    Field,
    SecretStr,
    ValidationError,
    field_validator,
    model_validator,
)

from connector.names import ENVELOPE_FORMATS, REGISTRY_FORMATS, Envelope, Format
from kafka_etl.errors import ConfigError, redact
from kafka_etl.secrets import SecretUrl, is_secret_name, reveal
from pipelines import checks
from pipelines import topics as topic_rules
from pipelines.yaml_file import read_document, show, where

# ``${`` either starts a whole reference (group 1: the name, group 2: a default) or is an error.
_VAR = re.compile(r"\$\{(?:([A-Za-z_][A-Za-z0-9_]*)(?::-([^}]*))?\})?")
_NAME = r"^[A-Za-z_][A-Za-z0-9_\-]*$"
KafkaValue = str | int | float | bool | SecretStr
KafkaSettings = dict[str, KafkaValue]


def _hide_secrets(settings: KafkaSettings) -> KafkaSettings:
    """librdkafka settings whose name says password, secret, token or key.pem, as ``SecretStr``
    (so no ``repr`` or dump of the project shows them); ``consumer_settings`` reveals them."""
    return {
        k: SecretStr(str(v)) if is_secret_name(k) and not isinstance(v, SecretStr) else v
        for k, v in settings.items()
    }


class SchemaRegistrySettings(BaseModel):
    """A Confluent-compatible schema registry (confluent-kafka client settings)."""

    model_config = ConfigDict(frozen=True, extra="forbid", populate_by_name=True)

    url: SecretUrl = Field(description="http(s)://host:port[/path], comma-separated")
    basic_auth_user_info: SecretStr | None = Field(
        default=None, alias="basic.auth.user.info", description="user:password"
    )
    ssl_ca_location: str | None = Field(default=None, alias="ssl.ca.location")
    ssl_certificate_location: str | None = Field(default=None, alias="ssl.certificate.location")
    ssl_key_location: str | None = Field(default=None, alias="ssl.key.location")
    ssl_key_password: SecretStr | None = Field(default=None, alias="ssl.key.password")
    timeout: float | None = Field(default=None, gt=0, description="seconds per request")
    max_retries: int | None = Field(default=None, ge=0, alias="max.retries")

    @field_validator("url")
    @classmethod
    def _http(cls, value: SecretUrl) -> SecretUrl:
        if not value.get_secret_value().strip():
            msg = "the URL is empty"
            raise ValueError(msg)
        for url in value.get_secret_value().split(","):
            if not url.strip().startswith(("http://", "https://", "mock://")):
                msg = f"not an http(s) URL: {redact(url.strip())!r}"
                raise ValueError(msg)
        return value

    def client_config(self) -> dict[str, Any]:
        """The settings as confluent-kafka's ``SchemaRegistryClient`` takes them."""
        conf: dict[str, Any] = {}
        for name, field in type(self).model_fields.items():
            value = getattr(self, name)
            if isinstance(value, SecretStr):
                value = value.get_secret_value()
            if value is not None:
                conf[field.alias or name] = value
        return conf


class Pipeline(BaseModel):
    """One topic loaded into one table, or several topics (``topics`` or ``topic_pattern``)
    into one shared table or a table each (``pipelines.topics``)."""

    model_config = ConfigDict(
        frozen=True, extra="forbid", populate_by_name=True, allow_inf_nan=False
    )

    name: str = Field(pattern=_NAME)
    topic: str = Field(
        default="",
        description="the one topic; empty when 'topics' or 'topic_pattern' is set (each member"
        " of such a pipeline, see `member`, has its topic here)",
    )
    topics: tuple[str, ...] | None = Field(default=None, description="several topics by name")
    topic_pattern: str | None = Field(
        default=None, description="a regular expression matched against whole topic names"
    )
    format: Format = "json"
    envelope: Envelope = Field(
        default="none",
        description="'debezium': values are Debezium change events; the table is a replica"
        " (upsert by the record key, 'd' deletes)",
    )
    key_format: Format = Field(default="string", description="how to decode keys into _key")
    avro_schema_file: str | None = Field(
        default=None, description="plain Avro values (no registry): the writer schema, .avsc"
    )
    include_headers: bool = Field(default=False, description="add a _headers column")
    schema_registry: SchemaRegistrySettings | None = Field(
        default=None, description="defaults to the project's schema_registry"
    )
    target: SecretUrl = Field(
        description="duckdb:///file.duckdb or any SQLAlchemy URL (shown with secrets masked;"
        " the sinks take target.get_secret_value())"
    )
    table: str = Field(min_length=1)
    db_schema: str | None = Field(default=None, alias="schema")
    mode: Literal["append", "upsert"] = "append"
    key: tuple[str, ...] = ()
    delete_on_tombstone: bool = False
    start: Literal["earliest", "latest"] = "earliest"
    on_data_loss: Literal["fail", "skip"] = "fail"
    columns: dict[str, str] = Field(
        default_factory=dict, description="explicit Arrow types by field, e.g. {amount: float64}"
    )
    on_error: Literal["fail", "dlq"] = Field(
        default="fail",
        description="a message that cannot be decoded: fail the run or dead-letter it",
    )
    max_error_ratio: float = Field(
        default=0.01,
        ge=0,
        le=1,
        description="with dead letters: the share of a run's messages that may be bad, at most",
    )
    min_messages_for_ratio: int = Field(
        default=1000,
        ge=1,
        description="max_error_ratio counts a run as at least this many messages, so a few bad"
        " ones in a small run (a 5-minute schedule, a lag sensor) do not fail it",
    )
    on_schema_conflict: Literal["fail", "dlq"] = Field(
        default="fail",
        description="a field whose type the table column cannot take: fail the run, or"
        " dead-letter the messages that carry it (counted against max_error_ratio)",
    )
    widen_to_string: bool = Field(
        default=False, description="let a scalar column become a string column when text arrives"
    )
    flatten: int = Field(
        default=0, ge=0, description="struct fields become a__b columns, this many levels deep"
    )
    group_id: str | None = None
    batch_max_rows: int = Field(default=200_000, gt=0)
    batch_max_bytes: int = Field(default=8 * 1024 * 1024, gt=0)
    decode_threads: int = Field(
        default_factory=lambda: default_decode_threads(),  # defined below the models
        ge=1,
        le=64,
        description="batches decoded at once, ahead of the writer (1: on the reading thread)",
    )
    lock_timeout: float = Field(default=60.0, ge=0, description="seconds to wait for a DuckDB file")
    shards: int = Field(
        default=1,
        ge=1,
        description="split the partitions into this many shards (partition p in shard p % N),"
        " each loaded by its own `kafka-etl run NAME --shard K/N` (K from 0)",
    )
    schedule: str | None = None
    schedule_timezone: str = Field(default="UTC", min_length=1)
    lag_threshold: int = Field(default=1, ge=1)
    max_lag_minutes: float | None = Field(default=None, gt=0)
    description: str | None = None
    owners: tuple[str, ...] = ()
    kafka: KafkaSettings = Field(
        default_factory=dict, description="per-pipeline librdkafka overrides"
    )

    @field_validator("topic")
    @classmethod
    def _topic(cls, value: str) -> str:
        return checks.topic_name(value)

    @field_validator("topics")
    @classmethod
    def _topics(cls, value: tuple[str, ...] | None) -> tuple[str, ...] | None:
        if value is None:
            return value
        if not value:
            msg = "the list is empty; name at least one topic"
            raise ValueError(msg)
        for topic in value:
            checks.topic_name(topic)
        repeated = sorted({t for t in value if value.count(t) > 1})
        if repeated:
            msg = f"topic {repeated[0]!r} is listed twice"
            raise ValueError(msg)
        return value

    @field_validator("topic_pattern")
    @classmethod
    def _topic_pattern(cls, value: str | None) -> str | None:
        if value is not None:
            if not value:
                msg = "the pattern is empty"
                raise ValueError(msg)
            topic_rules.compile_pattern(value)
        return value

    @field_validator("target")
    @classmethod
    def _target(cls, value: SecretUrl) -> SecretUrl:
        text = value.get_secret_value()
        if not text.strip():
            msg = "the target URL is empty"
            raise ValueError(msg)
        checks.target_url(text)
        return value

    @field_validator("schedule_timezone")
    @classmethod
    def _timezone(cls, value: str) -> str:
        return checks.timezone(value)

    @field_validator("owners")
    @classmethod
    def _owners(cls, value: tuple[str, ...]) -> tuple[str, ...]:
        for owner in value:
            checks.owner(owner)
        return value

    @field_validator("kafka", mode="before")
    @classmethod
    def _kafka(cls, value: Any) -> Any:
        if isinstance(value, dict):
            checks.kafka_settings(value, pipeline_level=True)
        return value

    @field_validator("kafka")
    @classmethod
    def _kafka_secrets(cls, value: KafkaSettings) -> KafkaSettings:
        return _hide_secrets(value)

    @field_validator("columns")
    @classmethod
    def _known_types(cls, value: dict[str, str]) -> dict[str, str]:
        from connector.types import parse_arrow_type

        for field, type_name in value.items():
            parse_arrow_type(type_name, field)
        return value

    @field_validator("schedule")
    @classmethod
    def _cron(cls, value: str | None) -> str | None:
        return None if value is None else checks.cron(value)

    @model_validator(mode="before")
    @classmethod
    def _envelope_implies(cls, data: Any) -> Any:
        """``envelope: debezium`` keeps a replica: upsert, ``d`` events delete, the key is the
        record key (``_key``) unless ``key:`` names columns. Saying otherwise is an error."""
        if not isinstance(data, dict) or data.get("envelope") != "debezium":
            return data
        fmt = data.get("format", "json")
        if fmt not in ENVELOPE_FORMATS:
            msg = f"field 'format': envelope 'debezium' arrives as json or avro, not {fmt!r}"
            raise ValueError(msg)
        if data.get("mode", "upsert") != "upsert":
            msg = (
                "field 'mode': envelope 'debezium' keeps a replica of the source table, so the"
                f" mode is 'upsert' (leave it out), not {data['mode']!r}"
            )
            raise ValueError(msg)
        if data.get("delete_on_tombstone", True) is not True:
            msg = (
                "field 'delete_on_tombstone': envelope 'debezium' applies the source's deletes"
                " ('d' events); leave it out"
            )
            raise ValueError(msg)
        key_format = data.get("key_format", fmt)
        if key_format not in ENVELOPE_FORMATS:
            msg = (
                "field 'key_format': envelope 'debezium' decodes the record key's fields, so it"
                f" is json or avro, not {key_format!r}"
            )
            raise ValueError(msg)
        return {
            **data,
            "mode": "upsert",
            "delete_on_tombstone": True,
            "key_format": key_format,
            "key": data.get("key") or ["_key"],
        }

    @model_validator(mode="after")
    def _cross_checks(self) -> Pipeline:
        if self.mode == "upsert" and not self.key:
            msg = "mode 'upsert' needs 'key' (the columns that identify a row)"
            raise ValueError(msg)
        if self.delete_on_tombstone and self.mode != "upsert":
            msg = "delete_on_tombstone needs mode 'upsert' (append tables keep history)"
            raise ValueError(msg)
        self._check_formats()
        self._check_topics()
        dead_letters = "dlq" in (self.on_error, self.on_schema_conflict)
        # A template's own characters are checked with a stand-in for its sanitised topics.
        table = topic_rules.table_for(self.table, "t")
        checks.target_names(
            self.target.get_secret_value(),
            table,
            self.db_schema,
            self.key,
            dead_letters,
            deletes=self.delete_on_tombstone,
        )
        return self

    def _check_topics(self) -> None:
        given = [
            name
            for name, value in (
                ("topic", self.topic or None),
                ("topics", self.topics),
                ("topic_pattern", self.topic_pattern),
            )
            if value is not None
        ]
        if not given:
            msg = "field 'topic': missing (give one of 'topic', 'topics' or 'topic_pattern')"
            raise ValueError(msg)
        if len(given) > 1:
            msg = f"field {given[1]!r}: give only one of 'topic', 'topics' or 'topic_pattern'"
            raise ValueError(msg)
        try:
            templated = bool(topic_rules.placeholders(self.table))
        except ValueError as exc:
            msg = f"field 'table': {exc}"
            raise ValueError(msg) from None
        if templated and self.topic:
            msg = (
                "field 'table': {topic} and {topic_tail} name a table per topic; a pipeline"
                " of one 'topic' names its table"
            )
            raise ValueError(msg)
        if self.topics is not None:
            try:
                topic_rules.members_for(self.table, self.topics)
            except ValueError as exc:
                msg = f"field 'table': {exc}"
                raise ValueError(msg) from None

    def _check_formats(self) -> None:
        if self.avro_schema_file is not None and self.format != "avro":
            msg = f"'avro_schema_file' is for format 'avro', not {self.format!r}"
            raise ValueError(msg)
        if self.schema_registry is None:
            for field, fmt in (("format", self.format), ("key_format", self.key_format)):
                plain_avro = field == "format" and self.avro_schema_file is not None
                if fmt in REGISTRY_FORMATS and not plain_avro:
                    msg = (
                        f"{field} {fmt!r} needs a schema registry: set 'schema_registry: {{url:"
                        " ...}}' in the file or on the pipeline"
                        + (" (or 'avro_schema_file' for plain Avro)" if fmt == "avro" else "")
                    )
                    raise ValueError(msg)
        if self.columns and self.format not in ("json", "json_schema"):
            msg = (
                f"'columns' fixes JSON types; format {self.format!r} takes its types from the data"
            )
            raise ValueError(msg)

    @property
    def multi_topic(self) -> bool:
        """``topics`` or ``topic_pattern``: the pipeline resolves into members at plan time."""
        return not self.topic

    @property
    def topic_list(self) -> tuple[str, ...]:
        """The topics named in the file (none for a pattern, which is matched at plan time)."""
        if self.topics is not None:
            return self.topics
        return (self.topic,) if self.topic else ()

    @property
    def topics_shown(self) -> str:
        """The topic(s) for display: the name, the list, or the pattern."""
        if self.topic_pattern is not None:
            return f"/{self.topic_pattern}/"
        return ", ".join(self.topic_list)

    def member(self, member: topic_rules.Member) -> Pipeline:
        """This pipeline as it loads one member: one topic into one table (same name, so the
        same consumer group and checkpoint rows, which carry the topic)."""
        return self.model_copy(
            update={
                "topic": member.topic,
                "table": member.table,
                "topics": None,
                "topic_pattern": None,
            }
        )

    @property
    def declared_shards(self) -> int | None:
        """``shards`` if the file sets it (then ``--shard K/N`` must use that N), else None."""
        return self.shards if "shards" in self.model_fields_set else None

    @property
    def consumer_group(self) -> str:
        return self.group_id or self.name

    @property
    def safe_target(self) -> str:
        """The target URL with any password replaced by ``***``."""
        return str(self.target)


class Project(BaseModel):
    """A pipelines file: the Kafka connection shared by all pipelines, and the pipelines."""

    model_config = ConfigDict(frozen=True, extra="forbid", allow_inf_nan=False)

    kafka: KafkaSettings
    schema_registry: SchemaRegistrySettings | None = None
    pipelines: dict[str, Pipeline]
    source: str = "<memory>"

    @model_validator(mode="before")
    @classmethod
    def _pipeline_defaults(cls, data: Any) -> Any:
        """Pipelines inherit the file's schema registry; ``avro_schema_file`` is relative to
        the pipelines file."""
        if not isinstance(data, dict) or not isinstance(data.get("pipelines"), dict):
            return data
        registry = data.get("schema_registry")
        source = Path(str(data.get("source", "<memory>")))
        base = source.parent if source.is_file() else Path.cwd()
        pipelines = {}
        for name, body in data["pipelines"].items():
            if isinstance(body, dict):
                body = dict(body)
                if registry is not None and body.get("schema_registry") is None:
                    body["schema_registry"] = registry
                schema_file = body.get("avro_schema_file")
                if isinstance(schema_file, str) and schema_file:
                    path = (base / schema_file).resolve()
                    if not path.is_file():
                        msg = (
                            f"{source}: pipeline {name!r}, field 'avro_schema_file': no file {path}"
                        )
                        raise ConfigError(msg)
                    body["avro_schema_file"] = str(path)
            pipelines[name] = body
        return {**data, "pipelines": pipelines}

    @field_validator("kafka", mode="before")
    @classmethod
    def _connection(cls, value: Any) -> Any:
        if isinstance(value, dict):
            if not str(value.get("bootstrap.servers") or "").strip():
                msg = "'bootstrap.servers' is required"
                raise ValueError(msg)
            checks.kafka_settings(value, pipeline_level=False)
        return value

    @field_validator("kafka")
    @classmethod
    def _kafka_secrets(cls, value: KafkaSettings) -> KafkaSettings:
        return _hide_secrets(value)

    @model_validator(mode="after")
    def _dagster_names(self) -> Project:
        """Dagster names jobs and sensors after pipelines in letters, digits and underscores
        (``checks.dagster_name``); two pipelines must not meet there."""
        seen: dict[str, str] = {}
        for name in self.pipelines:
            as_dagster = checks.dagster_name(name)
            if as_dagster in seen:
                msg = (
                    f"{self.source}: field 'pipelines': {seen[as_dagster]!r} and {name!r} both"
                    f" become the Dagster name {as_dagster!r}; rename one"
                )
                raise ConfigError(msg)
            seen[as_dagster] = name
        return self

    def pipeline(self, name: str) -> Pipeline:
        try:
            return self.pipelines[name]
        except KeyError:
            known = ", ".join(sorted(self.pipelines)) or "none"
            msg = f"{self.source}: no pipeline named {name!r} (defined: {known})"
            raise ConfigError(msg) from None

    def consumer_settings(self, pipeline: Pipeline) -> dict[str, str | int | float | bool]:
        """librdkafka settings for one pipeline: the shared connection plus its overrides,
        secrets revealed (for librdkafka only, never for display)."""
        return {k: reveal(v) for k, v in {**self.kafka, **pipeline.kafka}.items()}

    def safe_kafka_settings(self) -> dict[str, str | int | float | bool]:
        """The connection settings with secrets masked, for display."""
        return {
            k: ("***" if isinstance(v, SecretStr) or is_secret_name(k) else v)
            for k, v in self.kafka.items()
        }

    def with_kafka(self, overrides: dict[str, Any]) -> Project:
        """A copy whose file-level ``kafka:`` settings are updated (secrets wrapped again)."""
        return self.model_copy(update={"kafka": _hide_secrets({**self.kafka, **overrides})})


#: The default ``decode_threads`` never exceeds this: past four, decoding is no longer what a
#: run waits for (one ordered writer commits the batches), and each thread holds a batch.
MAX_DEFAULT_DECODE_THREADS = 4


def default_decode_threads() -> int:
    """``decode_threads`` when a pipeline does not say: the cores this process may run on,
    at most ``MAX_DEFAULT_DECODE_THREADS``."""
    try:
        cores = len(os.sched_getaffinity(0))  # a container's or taskset's share, not the host's
    except AttributeError:  # not Linux
        cores = os.cpu_count() or 1
    return max(1, min(MAX_DEFAULT_DECODE_THREADS, cores))


def load_project(path: str | os.PathLike[str], env: dict[str, str] | None = None) -> Project:
    """Read, interpolate and validate a pipelines file; raise ``ConfigError`` with one line."""
    source = str(path)
    # Reading builds up to a few hundred thousand small objects, none of them cyclic garbage;
    # the cyclic collector would rescan them all several times over (~40% of the time).
    collecting = gc.isenabled()
    gc.disable()
    try:
        raw = read_document(Path(path), source)
        return parse_project(raw, source, os.environ if env is None else env)
    finally:
        if collecting:
            gc.enable()


def parse_project(raw: Any, source: str, env: os._Environ[str] | dict[str, str]) -> Project:
    if raw is None:
        msg = f"{source}: the file is empty; expected a mapping with 'kafka' and 'pipelines'"
        raise ConfigError(msg)
    if not isinstance(raw, dict):
        msg = (
            f"{source}: top level: expected a mapping with 'kafka' and 'pipelines', got"
            f" {_kind(raw)}"
        )
        raise ConfigError(msg)
    data = _interpolate(raw, env, source)
    pipelines = data.get("pipelines")
    if pipelines is not None and not isinstance(pipelines, dict):
        msg = (
            f"{source}: field 'pipelines': expected a mapping of pipeline names, got"
            f" {_kind(pipelines)}"
        )
        raise ConfigError(msg)
    for name, body in (pipelines or {}).items():
        if not isinstance(body, dict):
            msg = (
                f"{source}: pipeline {show(name)}: expected a mapping of fields (topic, target,"
                f" table, ...), got {_kind(body)}"
            )
            raise ConfigError(msg)
    if isinstance(pipelines, dict):
        data["pipelines"] = {name: {"name": name, **body} for name, body in pipelines.items()}
    try:
        return Project.model_validate({**data, "source": source})
    except ValidationError as exc:
        raise ConfigError(_describe(exc, source)) from None


def _kind(value: Any) -> str:
    if value is None:
        return "nothing"
    return {list: "a list", str: "text", bool: "a boolean", dict: "a mapping"}.get(
        type(value), f"a value of type {type(value).__name__}"
    )


def _interpolate(root: Any, env: Any, source: str) -> Any:
    """``root`` with every ``${VAR}`` in its strings replaced. A collection reached twice
    (a YAML alias) is interpolated once and stays shared, so aliases cost nothing here; the
    nesting is bounded by the reader (``yaml_file.MAX_DEPTH``)."""
    memo: dict[int, Any] = {}

    def walk(value: Any, path: tuple[str, ...]) -> Any:
        if isinstance(value, dict | list):
            key = id(value)
            if key not in memo:
                if isinstance(value, dict):
                    memo[key] = {k: walk(v, (*path, str(k))) for k, v in value.items()}
                else:
                    memo[key] = [walk(v, (*path, str(i))) for i, v in enumerate(value)]
            return memo[key]
        if isinstance(value, str) and "${" in value:
            return _substitute(value, env, f"{source}: {where(path)}")
        return value

    return walk(root, ())


def _substitute(value: str, env: Any, at: str) -> str:
    def substitute(match: re.Match[str]) -> str:
        name, default = match.group(1), match.group(2)
        if name is None:
            rest = value[match.start() : match.start() + 20]
            msg = (
                f"{at}: {show(rest)} starts no ${{VAR}} reference (a name, optionally :-default,"
                " then '}')"
            )
            raise ConfigError(msg)
        if name in env:
            return str(env[name])
        if default is not None:
            return default
        msg = f"{at}: environment variable {name} is not set"
        raise ConfigError(msg)

    return _VAR.sub(substitute, value)


def _describe(exc: ValidationError, source: str) -> str:
    error = exc.errors()[0]
    loc = tuple(str(p) for p in error["loc"])
    message = error["msg"]
    if loc and loc[-1] == "name" and len(loc) == 3:
        loc = (*loc[:2], "(name)")
        if error["type"] == "string_pattern_mismatch":
            message = (
                "a pipeline name is letters, digits, '_' and '-', starting with a letter or '_'"
            )
    if error["type"] == "extra_forbidden":
        message = "unknown field"
    elif message.startswith("Value error, "):
        message = message.removeprefix("Value error, ")
        # A check across fields that names the one to change: "field 'table': ..."
        named = re.match(r"field '([^']+)': (.*)", message)
        if named and len(loc) == 2 and loc[0] == "pipelines":
            loc, message = (*loc, named.group(1)), named.group(2)
    more = len(exc.errors()) - 1
    suffix = f" (and {more} more)" if more else ""
    return f"{source}: {where(loc)}: {message}{suffix}"
