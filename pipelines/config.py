"""Pipeline definitions: one YAML file, the Kafka connection and any number of pipelines.

Models are frozen pydantic models validated at load time; every error becomes one line naming
the file, the pipeline and the field. Environment variables enter only through explicit
``${VAR}`` (or ``${VAR:-default}``) in string values.
"""

from __future__ import annotations

import os
import re
from pathlib import Path
from typing import Any, Literal

import yaml
from pydantic import (
    BaseModel,
    ConfigDict,
    Field,
    SecretStr,
    ValidationError,
    field_validator,
    model_validator,
)

from kafka_etl.errors import ConfigError, redact
from kafka_etl.secrets import SecretUrl, is_secret_name, reveal

_VAR = re.compile(r"\$\{([A-Za-z_][A-Za-z0-9_]*)(?::-([^}]*))?\}")
# Consumer settings the runner owns: changing them would break bounded, exactly-once reads.
_RESERVED_KAFKA_KEYS = frozenset(
    {"enable.auto.commit", "enable.auto.offset.store", "auto.offset.reset", "enable.partition.eof"}
)
Format = Literal["json", "avro", "protobuf", "json_schema", "string", "bytes"]
_REGISTRY_FORMATS = frozenset({"avro", "protobuf", "json_schema"})
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
    """One topic loaded into one table."""

    model_config = ConfigDict(frozen=True, extra="forbid", populate_by_name=True)

    name: str = Field(pattern=r"^[A-Za-z_][A-Za-z0-9_\-]*$")
    topic: str = Field(min_length=1)
    format: Format = "json"
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
        default=0.01, ge=0, le=1, description="with on_error dlq: bad messages per batch, at most"
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
    lock_timeout: float = Field(default=60.0, ge=0, description="seconds to wait for a DuckDB file")
    schedule: str | None = None
    schedule_timezone: str = "UTC"
    lag_threshold: int = Field(default=1, ge=1)
    max_lag_minutes: float | None = Field(default=None, gt=0)
    description: str | None = None
    owners: tuple[str, ...] = ()
    kafka: KafkaSettings = Field(
        default_factory=dict, description="per-pipeline librdkafka overrides"
    )

    @field_validator("kafka")
    @classmethod
    def _kafka_secrets(cls, value: KafkaSettings) -> KafkaSettings:
        return _hide_secrets(value)

    @field_validator("target")
    @classmethod
    def _target_given(cls, value: SecretUrl) -> SecretUrl:
        from sqlalchemy.engine import make_url
        from sqlalchemy.exc import ArgumentError

        if not value.get_secret_value().strip():
            msg = "the target URL is empty"
            raise ValueError(msg)
        try:
            make_url(value.get_secret_value())
        except (ArgumentError, ValueError):  # not echoed: what does not parse cannot be masked
            msg = "not a database URL (e.g. duckdb:///warehouse.duckdb or postgresql+psycopg://…)"
            raise ValueError(msg) from None
        return value

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
        if value is not None and len(value.split()) not in (5, 6):
            msg = f"not a cron expression: {value!r}"
            raise ValueError(msg)
        return value

    @model_validator(mode="after")
    def _cross_checks(self) -> Pipeline:
        if self.mode == "upsert" and not self.key:
            msg = "mode 'upsert' needs 'key' (the columns that identify a row)"
            raise ValueError(msg)
        if self.delete_on_tombstone and self.mode != "upsert":
            msg = "delete_on_tombstone needs mode 'upsert' (append tables keep history)"
            raise ValueError(msg)
        reserved = _RESERVED_KAFKA_KEYS & set(self.kafka)
        if reserved:
            msg = f"kafka setting {sorted(reserved)[0]!r} is managed by kafka-etl"
            raise ValueError(msg)
        self._check_formats()
        return self

    def _check_formats(self) -> None:
        if self.avro_schema_file is not None and self.format != "avro":
            msg = f"'avro_schema_file' is for format 'avro', not {self.format!r}"
            raise ValueError(msg)
        if self.schema_registry is None:
            for field, fmt in (("format", self.format), ("key_format", self.key_format)):
                plain_avro = field == "format" and self.avro_schema_file is not None
                if fmt in _REGISTRY_FORMATS and not plain_avro:
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
    def consumer_group(self) -> str:
        return self.group_id or self.name

    @property
    def safe_target(self) -> str:
        """The target URL with any password replaced by ``***``."""
        return str(self.target)


class Project(BaseModel):
    """A pipelines file: the Kafka connection shared by all pipelines, and the pipelines."""

    model_config = ConfigDict(frozen=True, extra="forbid")

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

    @field_validator("kafka")
    @classmethod
    def _bootstrap(cls, value: KafkaSettings) -> KafkaSettings:
        if not str(value.get("bootstrap.servers", "")).strip():
            msg = "'bootstrap.servers' is required"
            raise ValueError(msg)
        reserved = _RESERVED_KAFKA_KEYS & set(value)
        if reserved:
            msg = f"setting {sorted(reserved)[0]!r} is managed by kafka-etl"
            raise ValueError(msg)
        return _hide_secrets(value)

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


def load_project(path: str | os.PathLike[str], env: dict[str, str] | None = None) -> Project:
    """Read, interpolate and validate a pipelines file; raise ``ConfigError`` with one line."""
    source = str(path)
    try:
        text = Path(path).read_text(encoding="utf-8")
    except OSError as exc:
        msg = f"{source}: cannot read pipelines file ({exc.strerror or exc})"
        raise ConfigError(msg) from None
    try:
        raw = yaml.safe_load(text)
    except yaml.YAMLError as exc:
        mark = getattr(exc, "problem_mark", None)
        line = f" line {mark.line + 1}" if mark is not None else ""
        problem = getattr(exc, "problem", None) or "invalid YAML"
        msg = f"{source}:{line}: {problem}"
        raise ConfigError(msg) from None
    return parse_project(raw, source, os.environ if env is None else env)


def parse_project(raw: Any, source: str, env: os._Environ[str] | dict[str, str]) -> Project:
    if not isinstance(raw, dict):
        msg = f"{source}: expected a mapping with 'kafka' and 'pipelines'"
        raise ConfigError(msg)
    data = _interpolate(raw, env, source, ())
    pipelines = data.get("pipelines")
    if isinstance(pipelines, dict):
        data["pipelines"] = {
            name: ({"name": name, **body} if isinstance(body, dict) else body)
            for name, body in pipelines.items()
        }
    try:
        return Project.model_validate({**data, "source": source})
    except ValidationError as exc:
        raise ConfigError(_describe(exc, source)) from None


def _interpolate(value: Any, env: Any, source: str, path: tuple[str, ...]) -> Any:
    if isinstance(value, dict):
        return {k: _interpolate(v, env, source, (*path, str(k))) for k, v in value.items()}
    if isinstance(value, list):
        return [_interpolate(v, env, source, (*path, str(i))) for i, v in enumerate(value)]
    if isinstance(value, str):

        def substitute(match: re.Match[str]) -> str:
            name, default = match.group(1), match.group(2)
            if name in env:
                return str(env[name])
            if default is not None:
                return default
            msg = f"{source}: {_where(path)}: environment variable {name} is not set"
            raise ConfigError(msg)

        return _VAR.sub(substitute, value)
    return value


def _where(path: tuple[str, ...] | tuple[Any, ...]) -> str:
    parts = [str(p) for p in path]
    if len(parts) >= 2 and parts[0] == "pipelines":
        rest = ".".join(parts[2:]) or "(definition)"
        return f"pipeline {parts[1]!r}, field {rest!r}"
    return f"field {'.'.join(parts)!r}" if parts else "top level"


def _describe(exc: ValidationError, source: str) -> str:
    error = exc.errors()[0]
    loc = tuple(str(p) for p in error["loc"])
    if loc and loc[-1] == "name" and len(loc) == 3:
        loc = (*loc[:2], "(name)")
    message = error["msg"]
    if error["type"] == "extra_forbidden":
        message = "unknown field"
    elif message.startswith("Value error, "):
        message = message.removeprefix("Value error, ")
    more = len(exc.errors()) - 1
    suffix = f" (and {more} more)" if more else ""
    return f"{source}: {_where(loc)}: {message}{suffix}"
