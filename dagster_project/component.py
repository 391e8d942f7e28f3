"""``KafkaEtlComponent``: a pipelines file as a ``dg`` component (``defs.yaml``).

    type: dagster_project.component.KafkaEtlComponent
    attributes:
      pipelines_file: pipelines.yaml          # default: $KAFKA_ETL_CONFIG, else the demo file
      key_prefix: [raw]
      kafka:
        sasl_username: etl
        sasl_password_env: KAFKA_PASSWORD     # the variable's name: its value stays out of the UI

Subclass and override ``translator()`` to rename keys and groups.
"""

from __future__ import annotations

import os
from pathlib import Path

from dagster import Component, ComponentLoadContext, Definitions, EnvVar, Model, Resolvable
from pydantic import Field, field_validator

from dagster_project.factory import (
    DEFAULT_CHECKS_SCHEDULE,
    DEFAULT_POISON_AFTER,
    build_definitions,
)
from dagster_project.replays import RETAINED
from dagster_project.resource import KafkaEtlResource
from dagster_project.translator import KafkaEtlTranslator
from pipelines import checks
from pipelines.config import load_project

CONFIG_ENV = "KAFKA_ETL_CONFIG"
DEFAULT_PIPELINES_FILE = "examples/pipelines.yaml"


class KafkaConnection(Model):
    """Overrides of the pipelines file's ``kafka:`` section. Secrets by variable name only."""

    bootstrap_servers: str | None = None
    security_protocol: str | None = None
    sasl_mechanism: str | None = None
    sasl_username: str | None = None
    sasl_password_env: str | None = Field(
        default=None, description="Name of the environment variable holding the SASL password."
    )
    settings: dict[str, str] = Field(default_factory=dict, description="More librdkafka settings.")


class KafkaEtlComponent(Component, Resolvable, Model):
    """Every pipeline of a kafka-etl pipelines file as a Dagster asset, with checks, a daily
    replay asset, load and replay jobs, schedules and lag sensors."""

    pipelines_file: str | None = Field(
        default=None,
        description=(
            f"Pipelines YAML, relative to the project root. Default: ${CONFIG_ENV}, else"
            f" {DEFAULT_PIPELINES_FILE}."
        ),
    )
    key_prefix: list[str] = Field(default_factory=list, description="Prefix of table asset keys.")
    replay_start_date: str = Field(
        default=RETAINED,
        description=(
            "First day of the replay job's daily partitions; 'retained' (default): the earliest"
            " day Kafka still holds, looked up when the code location loads."
        ),
    )
    sensor_interval_seconds: int = Field(default=30, description="Lag sensor interval.")
    sensors_running: bool = Field(default=False, description="Start lag sensors switched on.")
    schedules_running: bool = Field(
        default=True, description="Start the YAML's schedules switched on."
    )
    checks_schedule: str | None = Field(
        default=DEFAULT_CHECKS_SCHEDULE,
        description="Cron of each pipeline's checks job (continuity, freshness); null for none.",
    )
    poison_after: int = Field(
        default=DEFAULT_POISON_AFTER,
        description=(
            "Failed runs at the same message after which the lag sensor stops requesting runs"
            " (until the config, the checkpoint or the backlog changes); 0 never stops."
        ),
    )
    observe_interval_seconds: int = Field(
        default=15, description="Interval of the observation sensors (lag, rows, checkpoints)."
    )
    observations_running: bool = Field(
        default=True, description="Start the observation sensors switched on."
    )
    kafka: KafkaConnection = Field(default_factory=KafkaConnection)

    @field_validator("checks_schedule")
    @classmethod
    def _checks_cron(cls, value: str | None) -> str | None:
        return None if value is None else checks.cron(value)

    def translator(self) -> KafkaEtlTranslator:
        return KafkaEtlTranslator(key_prefix=tuple(self.key_prefix))

    def resolve_pipelines_file(self, project_root: Path) -> Path:
        """``pipelines_file`` and the default are taken from the project root; the environment
        variable, as for the CLI, from the working directory."""
        if self.pipelines_file is None and os.environ.get(CONFIG_ENV):
            return Path(os.environ[CONFIG_ENV]).resolve()
        path = Path(self.pipelines_file or DEFAULT_PIPELINES_FILE)
        return path if path.is_absolute() else (project_root / path).resolve()

    def resource(self, pipelines_file: Path) -> KafkaEtlResource:
        k = self.kafka
        return KafkaEtlResource(
            pipelines_file=str(pipelines_file),
            bootstrap_servers=k.bootstrap_servers,
            security_protocol=k.security_protocol,
            sasl_mechanism=k.sasl_mechanism,
            sasl_username=k.sasl_username,
            sasl_password=EnvVar(k.sasl_password_env) if k.sasl_password_env else None,
            kafka_settings=dict(k.settings),
        )

    def build_defs(self, context: ComponentLoadContext) -> Definitions:
        path = self.resolve_pipelines_file(context.project_root)
        resource = self.resource(path)
        return build_definitions(
            # Definitions need names only; the connection overrides apply at run time.
            load_project(path),
            resource,
            translator=self.translator(),
            replay_start_date=self.replay_start_date,
            sensor_interval_seconds=self.sensor_interval_seconds,
            sensors_running=self.sensors_running,
            schedules_running=self.schedules_running,
            checks_schedule=self.checks_schedule,
            poison_after=self.poison_after,
            observe_interval_seconds=self.observe_interval_seconds,
            observations_running=self.observations_running,
        )
