"""Format settings in pipelines files: registry inheritance, schema files, one-line errors."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest
import yaml

from connector.formats.base import FrameDecoder
from kafka_etl.errors import ConfigError
from pipelines.config import load_project
from pipelines.definition import decoder_for


def write(tmp_path: Path, pipeline: dict[str, Any], **top: Any) -> Path:
    body = {"topic": "t", "target": "duckdb:///w.duckdb", "table": "t", **pipeline}
    document = {"kafka": {"bootstrap.servers": "x:1"}, **top, "pipelines": {"p": body}}
    path = tmp_path / "pipelines.yaml"
    path.write_text(yaml.safe_dump(document), encoding="utf-8")
    return path


def test_pipelines_inherit_the_file_registry_and_secrets_stay_hidden(tmp_path: Path) -> None:
    registry = {"url": "http://sr:8081", "basic.auth.user.info": "${SR_AUTH}"}
    path = write(tmp_path, {"format": "avro", "key_format": "avro"}, schema_registry=registry)

    project = load_project(path, env={"SR_AUTH": "user:s3cret"})

    settings = project.pipeline("p").schema_registry
    assert settings is not None
    assert settings.client_config() == {
        "url": "http://sr:8081",
        "basic.auth.user.info": "user:s3cret",
    }
    assert "s3cret" not in repr(project)
    assert isinstance(decoder_for(project.pipeline("p")), FrameDecoder)


def test_a_pipeline_can_name_its_own_registry(tmp_path: Path) -> None:
    own = {"url": "http://other:8081"}
    path = write(
        tmp_path,
        {"format": "protobuf", "schema_registry": own},
        schema_registry={"url": "http://sr"},
    )
    settings = load_project(path).pipeline("p").schema_registry
    assert settings is not None and settings.url.get_secret_value() == "http://other:8081"


def test_avro_schema_file_is_relative_to_the_pipelines_file(tmp_path: Path) -> None:
    (tmp_path / "schemas").mkdir()
    (tmp_path / "schemas" / "o.avsc").write_text('{"type": "string"}', encoding="utf-8")
    path = write(tmp_path, {"format": "avro", "avro_schema_file": "schemas/o.avsc"})

    pipeline = load_project(path).pipeline("p")

    assert pipeline.avro_schema_file == str(tmp_path / "schemas" / "o.avsc")
    assert pipeline.include_headers is False and pipeline.key_format == "string"


@pytest.mark.parametrize(
    ("pipeline", "top", "message"),
    [
        pytest.param(
            {"format": "avro"},
            {},
            "field '(definition)': format 'avro' needs a schema registry",
            id="avro-without-registry",
        ),
        pytest.param(
            {"key_format": "protobuf"},
            {},
            "key_format 'protobuf' needs a schema registry",
            id="key-without-registry",
        ),
        pytest.param(
            {"format": "json", "avro_schema_file": "x.avsc"},
            {},
            "no file",
            id="missing-schema-file",
        ),
        pytest.param({"format": "xml"}, {}, "field 'format'", id="unknown-format"),
        pytest.param(
            {"format": "avro", "columns": {"a": "int64"}},
            {"schema_registry": {"url": "http://sr"}},
            "'columns' fixes JSON types",
            id="columns-for-avro",
        ),
        pytest.param(
            {"format": "avro"},
            {"schema_registry": {"url": "sr:8081"}},
            "field 'schema_registry.url': not an http(s) URL",
            id="url-without-scheme",
        ),
        pytest.param(
            {"format": "avro"},
            {"schema_registry": {"url": "http://sr", "bogus": 1}},
            "field 'schema_registry.bogus': unknown field",
            id="unknown-registry-setting",
        ),
    ],
)
def test_mistakes_are_one_line_naming_the_pipeline_and_field(
    tmp_path: Path, pipeline: dict[str, Any], top: dict[str, Any], message: str
) -> None:
    with pytest.raises(ConfigError) as caught:
        load_project(write(tmp_path, pipeline, **top))
    text = str(caught.value)
    assert "\n" not in text
    assert message in text
    assert str(tmp_path) in text
