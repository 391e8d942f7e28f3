"""kafka-etl pipelines as Dagster assets: translator, resource, asset factory and a component.

``dagster dev -m dagster_project`` loads ``kafka_etl_defs`` and ``dg dev`` loads
``dagster_project.definitions.defs``: the same lazy definitions (importing this package reads no
pipelines file). The name differs from ``defs`` because ``dagster_project.defs`` is the ``dg``
defs folder, a submodule that would shadow a package attribute of that name.
"""

from kafka_etl.extras import require

require("dagster", "dagster", "dagster_project (kafka-etl's Dagster assets)")

from dagster_project.assets import (
    ReplayConfig,
    build_kafka_etl_asset_specs,
    kafka_etl_assets,
)
from dagster_project.check_defs import kafka_etl_checks
from dagster_project.component import KafkaEtlComponent
from dagster_project.definitions import defs as kafka_etl_defs
from dagster_project.factory import build_definitions
from dagster_project.replays import kafka_etl_replay_job
from dagster_project.resource import KafkaEtlResource
from dagster_project.translator import KafkaEtlTranslator, PipelineTranslatorData

__all__ = [
    "KafkaEtlComponent",
    "KafkaEtlResource",
    "KafkaEtlTranslator",
    "PipelineTranslatorData",
    "ReplayConfig",
    "build_definitions",
    "build_kafka_etl_asset_specs",
    "kafka_etl_assets",
    "kafka_etl_checks",
    "kafka_etl_defs",
    "kafka_etl_replay_job",
]
