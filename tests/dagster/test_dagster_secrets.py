"""Secrets on the Dagster side: asset metadata masks the target; literal secrets are named."""

from __future__ import annotations

import warnings

import pytest
from dagster import EnvVar

from dagster_project import build_kafka_etl_asset_specs
from dagster_project.resource import KafkaEtlResource, LiteralSecretWarning
from dagster_project.translator import META_TARGET
from pipelines.config import parse_project
from tests.unit.test_secrets import SECRETS, project_with_every_secret


def test_dagster_metadata_shows_the_target_without_its_secrets() -> None:
    project = parse_project(project_with_every_secret(), "p.yaml", {})
    [spec] = build_kafka_etl_asset_specs(project)
    assert spec.metadata[META_TARGET] == "postgresql+psycopg://etl:***@db/w?password=***"
    assert not [k for k, v in SECRETS.items() if v in repr(spec)]


def test_a_literal_secret_on_the_dagster_resource_is_named_in_a_warning() -> None:
    with pytest.warns(LiteralSecretWarning) as warned:
        KafkaEtlResource(
            pipelines_file="p.yaml",
            sasl_password="literal",
            kafka_settings={"ssl.key.password": "literal", "client.id": "x"},
        )
    messages = sorted(str(w.message) for w in warned)
    assert len(messages) == 2
    assert "kafka_settings['ssl.key.password'] is a literal secret" in messages[0]
    assert "sasl_password is a literal secret" in messages[1]
    assert "literal'" not in " ".join(messages)  # the warning names the field, not the value
    with warnings.catch_warnings():
        warnings.simplefilter("error", LiteralSecretWarning)
        KafkaEtlResource(
            pipelines_file="p.yaml",
            sasl_password=EnvVar("KAFKA_PASSWORD"),
            kafka_settings={"ssl.key.password": EnvVar("KEY_PASSWORD")},
        )
