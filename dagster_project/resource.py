"""``KafkaEtlResource``: the Kafka connection, and loads through the same runner as the CLI.

Secrets are resource fields meant to be given as ``EnvVar("...")``, so the UI shows the
variable's name, never its value; they are merged into the librdkafka settings only in memory.
"""

from __future__ import annotations

import dataclasses
import hashlib
import time
import warnings
from collections.abc import Iterator, Mapping
from contextvars import ContextVar
from datetime import datetime
from typing import Any

from dagster import (
    AssetExecutionContext,
    AssetKey,
    AssetObservation,
    ConfigurableResource,
    EnvVar,
    Failure,
    MaterializeResult,
    MetadataValue,
    OpExecutionContext,
)
from pydantic import Field

from connector.client import ReadPlan
from connector.lag import PartitionLag, group_lag
from dagster_project.members import member_units, unit_data
from dagster_project.metadata import load_event, members_event, result_metadata
from dagster_project.translator import META_PIPELINE, PipelineTranslatorData
from kafka_etl.errors import CheckpointConflictError, KafkaEtlError, RecordError, TerminalError
from kafka_etl.secrets import is_secret_name
from pipelines.config import Project, load_project
from pipelines.runner import Progress, RunResult, replay_pipeline, run_pipeline
from pipelines.shard_results import merge_topics
from pipelines.shards import Shard

TAG_FAILED_AT = "kafka_etl/failed_at"  # topic/partition@offset of the message a load failed on
TAG_CONFIG = "kafka_etl/config"  # digest of the pipeline's settings when it failed
TAG_HIGH_WATERMARK = "kafka_etl/high_watermark"  # that partition's high watermark then
_LOG_EVERY = 5.0  # seconds between progress lines
# Set while Dagster re-creates the resource from its resolved config (EnvVars read), where a
# plain secret is expected and no warning is due.
_RESOLVING: ContextVar[bool] = ContextVar("kafka_etl_resource_resolving", default=False)


class LiteralSecretWarning(UserWarning):
    """A secret was given to the resource as a literal: Dagster shows resource config in its UI."""


class KafkaEtlResource(ConfigurableResource):
    """Loads kafka-etl pipelines from a pipelines file; overrides its Kafka connection.

    Give secrets as ``EnvVar``, e.g. ``KafkaEtlResource(pipelines_file=...,
    sasl_password=EnvVar("KAFKA_PASSWORD"))``.
    """

    pipelines_file: str = Field(description="The pipelines YAML file (as for the CLI).")
    bootstrap_servers: str | None = Field(
        default=None, description="Overrides the file's kafka 'bootstrap.servers'."
    )
    security_protocol: str | None = Field(default=None, description="e.g. SASL_SSL")
    sasl_mechanism: str | None = Field(default=None, description="e.g. SCRAM-SHA-512")
    sasl_username: str | None = Field(default=None)
    sasl_password: str | None = Field(default=None, description="Give as EnvVar(...).")
    kafka_settings: dict[str, str] = Field(
        default_factory=dict, description="More librdkafka settings (no secrets: use EnvVar)."
    )
    conflict_retries: int = Field(
        default=2,
        description="Times a load re-plans after another writer moved its checkpoint.",
    )
    lookup_timeout_seconds: float = Field(
        default=10.0, description="Bound on the Kafka look-ups of sensors."
    )

    def __init__(self, **data: Any) -> None:
        if not _RESOLVING.get():
            for field in _literal_secrets(data):
                warnings.warn(
                    f"KafkaEtlResource: {field} is a literal secret; Dagster shows resource"
                    f' config in its UI, give it as EnvVar("...") instead',
                    LiteralSecretWarning,
                    stacklevel=2,
                )
        super().__init__(**data)

    def _with_updated_values(self, values: Mapping[str, Any] | None) -> KafkaEtlResource:
        token = _RESOLVING.set(True)
        try:
            return super()._with_updated_values(values)  # type: ignore[return-value]
        finally:
            _RESOLVING.reset(token)

    def load_project(self) -> Project:
        """The pipelines file, with this resource's connection settings applied."""
        project = load_project(self.pipelines_file)
        named = {
            "bootstrap.servers": self.bootstrap_servers,
            "security.protocol": self.security_protocol,
            "sasl.mechanism": self.sasl_mechanism,
            "sasl.username": self.sasl_username,
            "sasl.password": self.sasl_password,
        }
        overrides = {k: v for k, v in named.items() if v} | dict(self.kafka_settings)
        if not overrides:
            return project
        return project.with_kafka(overrides)

    def pipeline_data(self, name: str) -> PipelineTranslatorData:
        """The unit ``name`` names: a pipeline, or a member ``pipeline::topic``."""
        return unit_data(self.load_project(), name)

    # -- loads -----------------------------------------------------------------------------
    def run(self, context: AssetExecutionContext) -> Iterator[MaterializeResult | AssetObservation]:
        """Load every selected pipeline of this op (checks are their own op: ``check_defs``).

        A load that committed nothing yields an ``AssetObservation`` (checkpoints and lag), not
        a materialization, so the latest materialization stays the latest real load.

        A pipeline that fails does not stop the others of the op; the op then fails with one
        line per failure (retryable by a Dagster retry policy only if every one is transient).
        """
        try:
            project = self.load_project()
        except KafkaEtlError as exc:
            raise Failure(description=str(exc), allow_retries=False) from None
        selected = set(context.selected_asset_keys)
        failures: list[tuple[str, KafkaEtlError]] = []
        for key, name in _pipelines(context).items():
            if key not in selected:
                continue
            try:
                unit = data = unit_data(project, name)
                # a shared table: every topic, one after the other, as `kafka-etl run NAME`
                members = member_units(unit) if unit.shared else [unit]
                results = []
                for data in members:
                    results.append(self._load(context, data))
            except RecordError as exc:
                self._tag_failure(context, data, exc, unit)
                failures.append((f"pipeline {data.ref!r}", _with_way_out(data, exc)))
                context.log.error(_located(*failures[-1]))
                continue
            except KafkaEtlError as exc:
                context.log.error(_located(f"pipeline {name!r}", exc))
                failures.append((f"pipeline {name!r}", exc))
                continue
            if unit.shared:
                yield members_event(key, unit, members, results)
            else:
                yield load_event(key, unit, results[0])
        if failures:
            raise Failure(
                description="\n".join(_located(where, exc) for where, exc in failures),
                allow_retries=all(exc.transient for _, exc in failures),
            )

    def run_shard(self, context: OpExecutionContext, name: str, shard: Shard) -> RunResult:
        """Load shard ``shard`` of pipeline ``name``, as ``kafka-etl run NAME --shard K/N``.

        Fails the op with one line naming the pipeline and shard (retryable only if transient);
        its committed batches stay, so a rerun resumes from the shard's checkpoints.
        """
        where = _where(name, shard)
        try:
            unit = data = self.pipeline_data(name)
            if not unit.shared:
                return self._load(context, data, shard)
            results = []  # the shard of every topic (partition p of each is in p % N)
            for data in member_units(unit):
                results.append(self._load(context, data, shard))
            return merge_topics(results)
        except RecordError as exc:
            self._tag_failure(context, data, exc, unit)
            description = f"{where}: {_with_way_out(data, exc)}"
            raise Failure(description=description, allow_retries=False) from None
        except KafkaEtlError as exc:
            pipeline = name.partition("::")[0]  # a member's ref names its topic too
            text = str(exc).removeprefix(f"pipeline {pipeline!r}: ")
            raise Failure(description=f"{where}: {text}", allow_retries=exc.transient) from None

    def _load(
        self,
        context: AssetExecutionContext | OpExecutionContext,
        data: PipelineTranslatorData,
        shard: Shard | None = None,
    ) -> RunResult:
        name = data.pipeline.name
        carried = 0
        for attempt in range(self.conflict_retries + 1):
            log = _ProgressLog(context, name, shard)
            try:
                result = run_pipeline(
                    data.project,
                    data.pipeline,
                    shard=shard,
                    on_start=log.start,
                    on_progress=log.step,
                )
            except CheckpointConflictError as exc:
                if attempt == self.conflict_retries:
                    raise
                carried += log.rows
                context.log.warning(f"{exc}; re-planning from the new checkpoint")
                continue
            return dataclasses.replace(result, rows=result.rows + carried)
        msg = "unreachable: the last attempt returns or raises"
        raise AssertionError(msg)

    def replay(
        self,
        context: OpExecutionContext,
        name: str,
        *,
        since: datetime | None = None,
        until: datetime | None = None,
        offsets: dict[int, tuple[int, int]] | None = None,
    ) -> dict[str, Any]:
        """Replay one range of pipeline ``name``; returns what it rewrote, as metadata.

        A shared table replays the range of every topic, one after the other; offsets belong
        to one topic, so a shared table refuses them."""
        data = self.pipeline_data(name)
        if data.shared and offsets is not None:
            msg = (
                f"pipeline {name!r} writes several topics into {data.pipeline.table}: a replay of"
                " offsets names no topic; replay a day or a from/to range (every topic), or"
                f" offsets of one topic with `kafka-etl replay {name} --topic TOPIC`"
            )
            raise Failure(description=msg, allow_retries=False)
        try:
            units = member_units(data) if data.shared else [data]
            results = []
            for unit in units:
                log = _ProgressLog(context, unit.ref)
                results.append(
                    replay_pipeline(
                        unit.project,
                        unit.pipeline,
                        since=since,
                        until=until,
                        offsets=offsets,
                        on_start=log.start,
                        on_progress=log.step,
                    )
                )
        except KafkaEtlError as exc:
            description = _located(f"pipeline {name!r}", exc)
            raise Failure(description=description, allow_retries=exc.transient) from exc
        result = merge_topics(results) if data.shared else results[0]
        metadata = result_metadata(result, data.table_name, replay=True)
        if since is not None and until is not None:
            metadata["replay_from"] = MetadataValue.text(since.isoformat())
            metadata["replay_to"] = MetadataValue.text(until.isoformat())
        return metadata

    def _tag_failure(
        self,
        context: AssetExecutionContext | OpExecutionContext,
        data: PipelineTranslatorData,
        exc: RecordError,
        unit: PipelineTranslatorData | None = None,
    ) -> None:
        """Where the run failed, for the lag sensor to stop asking for runs that fail there
        (``unit``: the asset's unit, a shared table, when ``data`` is one of its members)."""
        tags = {
            TAG_FAILED_AT: f"{exc.topic}/{exc.partition}@{exc.offset}",
            TAG_CONFIG: config_digest(unit or data),
        }
        try:
            high = {x.partition: x.high_watermark for x in self.lag(data.ref)}
            tags[TAG_HIGH_WATERMARK] = str(high.get(exc.partition, 0))
        except KafkaEtlError:
            pass  # the sensor then compares against 0: any backlog counts as unchanged
        context.instance.add_run_tags(context.run_id, tags)

    # -- monitoring ------------------------------------------------------------------------
    def lag(self, name: str) -> list[PartitionLag]:
        """Lag per partition from the consumer group, every Kafka call bounded (one topic:
        a shared table's is ``topic_lags``)."""
        data = self.pipeline_data(name)
        p = data.pipeline
        if data.shared:
            msg = f"pipeline {name!r} reads several topics: its lag is per topic (topic_lags)"
            raise TerminalError(msg)
        return group_lag(
            data.consumer_settings,
            p.topic,
            p.consumer_group,
            timeout=self.lookup_timeout_seconds,
        )

    def topic_lags(self, name: str) -> dict[str, list[PartitionLag]]:
        """``lag`` per topic of the unit ``name``: its one topic, or a shared table's each."""
        data = self.pipeline_data(name)
        if not data.shared:
            return {data.pipeline.topic: self.lag(name)}
        return {m.pipeline.topic: self.lag(m.ref) for m in member_units(data)}


def _literal_secrets(data: Mapping[str, Any]) -> list[str]:
    """The resource fields (and ``kafka_settings`` keys) that hold a secret not given as EnvVar."""
    found = []
    password = data.get("sasl_password")
    if password and not isinstance(password, EnvVar):
        found.append("sasl_password")
    settings = data.get("kafka_settings") or {}
    for key, value in settings.items() if isinstance(settings, Mapping) else ():
        if is_secret_name(key) and value and not isinstance(value, EnvVar):
            found.append(f"kafka_settings[{key!r}]")
    return found


def _pipelines(context: AssetExecutionContext) -> dict[AssetKey, str]:
    """Asset key -> pipeline name, for the assets of this op (selected or not)."""
    return {
        key: str(spec.metadata[META_PIPELINE])
        for key, spec in context.assets_def.specs_by_key.items()
        if META_PIPELINE in spec.metadata
    }


def config_digest(data: PipelineTranslatorData) -> str:
    """Changes when the pipeline's settings change (secrets masked, so not their values)."""
    text = data.pipeline.model_dump_json()
    return hashlib.sha256(text.encode()).hexdigest()[:16]


def _with_way_out(data: PipelineTranslatorData, exc: RecordError) -> RecordError:
    """The record error with what to do: the dead-letter table, or skipping that one message."""
    p = data.pipeline
    source = data.project.source
    topic = f" --topic {p.topic}" if data.member else ""  # a member of a multi-topic pipeline
    reset = (
        f"kafka-etl -c {source} reset {p.name}{topic} --partition {exc.partition}"
        f" --to-offset {exc.offset + 1}"
    )
    way_out = (
        f"; to skip this message: {reset}"
        if p.on_error == "dlq"
        else f"; to go on, set on_error: dlq for pipeline {p.name!r} in {source} (the message"
        f" goes to the dead-letter table), or skip it: {reset}"
    )
    return RecordError(exc.topic, exc.partition, exc.offset, exc.reason + way_out)


def _located(where: str, exc: KafkaEtlError) -> str:
    """``where: message``, unless the message already starts by naming the same thing."""
    text = str(exc)
    return text if text.startswith(where) else f"{where}: {text}"


def progress_line(name: str, progress: Progress, seconds: float, shard: Shard | None = None) -> str:
    """``pipeline 'x': 40,000/100,000 offsets (40%), 39,500 rows, 8,000 rows/s, ETA 8s``
    (``pipeline 'x' shard 1/4: …`` for a shard)."""
    done, total = progress.offsets_done, progress.offsets_total
    share = f" ({done / total:.0%})" if total else ""
    rate = progress.rows / seconds if seconds > 0 else 0.0
    offsets_rate = done / seconds if seconds > 0 else 0.0
    eta = f"ETA {(total - done) / offsets_rate:,.0f}s" if offsets_rate > 0 else "ETA unknown"
    return (
        f"{_where(name, shard)}: {done:,}/{total:,} offsets{share}, {progress.rows:,} rows,"
        f" {rate:,.0f} rows/s, {eta}"
    )


def _where(name: str, shard: Shard | None) -> str:
    return f"pipeline {name!r}" + (f" shard {shard}" if shard is not None else "")


class _ProgressLog:
    """Run progress as log lines in the Dagster UI, at most one every few seconds."""

    def __init__(
        self,
        context: AssetExecutionContext | OpExecutionContext,
        name: str,
        shard: Shard | None = None,
    ) -> None:
        self._context = context
        self._name = name
        self._shard = shard
        self._began = self._last = time.monotonic()
        self.rows = 0

    def start(self, plan: ReadPlan) -> None:
        ranges = ", ".join(
            f"{p}:[{plan.start[p]},{plan.end[p]})" for p in sorted(plan.start) if plan.lag[p]
        )
        self._context.log.info(
            f"{_where(self._name, self._shard)}: {plan.total_lag:,} offsets to read from"
            f" {plan.topic}" + (f" ({ranges})" if ranges else "")
        )

    def step(self, progress: Progress) -> None:
        self.rows = progress.rows
        now = time.monotonic()
        if now - self._last >= _LOG_EVERY:
            self._last = now
            self._context.log.info(
                progress_line(self._name, progress, now - self._began, self._shard)
            )
