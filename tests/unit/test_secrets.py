"""The one redaction function, and secrets held so that no repr, dump or metadata shows them."""

from __future__ import annotations

import pytest

from kafka_etl.errors import ConfigError, TerminalError, classify, redact
from pipelines.config import parse_project


@pytest.mark.parametrize(
    ("text", "shown"),
    [
        ("postgresql://etl:pw1@db/w", "postgresql://etl:***@db/w"),
        ("postgresql://:pw1@db/w", "postgresql://:***@db/w"),
        (
            "postgresql+psycopg://etl@db:5432/w?password=pw1&sslmode=require",
            "postgresql+psycopg://etl@db:5432/w?password=***&sslmode=require",
        ),
        ("postgresql://etl@db/w?PASSWORD=pw1", "postgresql://etl@db/w?PASSWORD=***"),
        (
            "postgresql://db/w?sslpassword=pw1&sslkey=pw2&Pwd=pw3&passwd=pw4",
            "postgresql://db/w?Pwd=***&passwd=***&sslkey=***&sslpassword=***",  # SQLAlchemy sorts
        ),
        (
            "http://h/x?token=pw1&Secret=pw2&api_key=pw3&n=1",
            "http://h/x?Secret=***&api_key=***&n=1&token=***",
        ),
        ("postgresql://etl:p%40w1@db/w", "postgresql://etl:***@db/w"),
        ("mysql+pymysql://etl:p@w1@db/w", "mysql+pymysql://etl:***@db/w"),
        ("https://user:pw1@registry:8081/apis", "https://user:***@registry:8081/apis"),
        (
            "cannot connect to 'postgresql://etl:pw1@db/w?password=pw2', giving up.",
            "cannot connect to 'postgresql://etl:***@db/w?password=***', giving up.",
        ),
        ("(see http://u:pw1@h/).", "(see http://u:***@h/)."),
        ("http://[bad:u:pw1@h", "http://%5Bbad:***@h"),
        (
            "host=db port=5432 password=pw1 sslpassword='p w2' dbname=w",
            "host=db port=5432 password=*** sslpassword=*** dbname=w",
        ),
        ("{'sasl.password': 'pw1', 'n': 1}", "{'sasl.password': '***', 'n': 1}"),
        (
            "not an http(s) URL: 'reg:pw1@registry:8081'",
            "not an http(s) URL: 'reg:***@registry:8081'",
        ),
        ("postgresql//etl:pw1@db/w", "postgresql//etl:***@db/w"),
        # Nothing secret: unchanged, the query string's order too.
        (
            "duckdb:///w.duckdb?threads=4&memory_limit=1GB",
            "duckdb:///w.duckdb?threads=4&memory_limit=1GB",
        ),
        ('password authentication failed for user "etl"', None),
        ("http://registry:8081/apis/ccompat/v7", None),
    ],
)
def test_redact(text: str, shown: str | None) -> None:
    assert redact(text) == (text if shown is None else shown)
    assert redact(redact(text)) == redact(text)


def test_every_error_message_is_redacted() -> None:
    assert str(TerminalError("at postgresql://etl:pw1@db/w")) == "at postgresql://etl:***@db/w"

    class OperationalError(Exception):
        __module__ = "sqlalchemy.exc"

    error = classify(OperationalError("dsn host=db password=pw1 failed"), "postgresql://db/w")
    assert "pw1" not in str(error) and "password=***" in str(error)


SECRETS = {
    "target": "tgt-pw",
    "query": "qry-pw",
    "sasl": "sasl-pw",
    "keypw": "key-pw",
    "pem": "pem-body",
    "oauth": "oauth-pw",
    "pipeline": "pl-pw",
    "basic": "basic-pw",
    "registry": "reg-pw",
}


def project_with_every_secret() -> dict[str, object]:
    s = SECRETS
    return {
        "kafka": {
            "bootstrap.servers": "b:9092",
            "sasl.password": s["sasl"],
            "ssl.key.password": s["keypw"],
            "ssl.key.pem": s["pem"],
            "sasl.oauthbearer.client.secret": s["oauth"],
        },
        "schema_registry": {
            "url": f"https://reg:{s['registry']}@registry/",
            "basic.auth.user.info": f"u:{s['basic']}",
        },
        "pipelines": {
            "p": {
                "topic": "t",
                "target": f"postgresql+psycopg://etl:{s['target']}@db/w?password={s['query']}",
                "table": "t",
                "kafka": {"sasl.password": s["pipeline"]},
            }
        },
    }


def test_no_repr_or_dump_of_a_project_shows_a_secret() -> None:
    project = parse_project(project_with_every_secret(), "p.yaml", {})
    p = project.pipeline("p")
    shown = [
        repr(project),
        str(project),
        str(project.model_dump()),
        project.model_dump_json(),
        str(project.model_dump(mode="json")),
        repr(p),
        str(project.safe_kafka_settings()),
        p.safe_target,
    ]
    for text in shown:
        assert not [k for k, v in SECRETS.items() if v in text], text
    assert p.safe_target == "postgresql+psycopg://etl:***@db/w?password=***"
    # The clients get the real values.
    settings = project.consumer_settings(p)
    assert settings["sasl.password"] == SECRETS["pipeline"]  # the pipeline's override wins
    assert settings["ssl.key.pem"] == SECRETS["pem"]
    assert settings["sasl.oauthbearer.client.secret"] == SECRETS["oauth"]
    assert SECRETS["query"] in p.target.get_secret_value()
    assert p.schema_registry is not None
    registry = p.schema_registry.client_config()
    assert registry["url"] == f"https://reg:{SECRETS['registry']}@registry/"
    assert registry["basic.auth.user.info"] == f"u:{SECRETS['basic']}"


def test_a_project_with_kafka_overrides_keeps_them_secret() -> None:
    project = parse_project(project_with_every_secret(), "p.yaml", {})
    updated = project.with_kafka({"sasl.password": "override-pw"})
    assert "override-pw" not in repr(updated) + updated.model_dump_json()
    assert updated.kafka["bootstrap.servers"] == "b:9092"


def test_a_bad_registry_url_is_named_without_its_password() -> None:
    raw = project_with_every_secret()
    raw["schema_registry"] = {"url": "ftp://u:reg-pw@registry/"}
    with pytest.raises(ConfigError) as caught:
        parse_project(raw, "p.yaml", {})
    assert "reg-pw" not in str(caught.value) and "ftp://u:***@registry/" in str(caught.value)


@pytest.mark.parametrize(
    "target", ["postgresql+psycopg://u:tgt-pw@h:port/db", "postgresql//u:tgt-pw@h/db", "tgt-pw"]
)
def test_a_target_that_does_not_parse_is_refused_without_echoing_it(target: str) -> None:
    raw = project_with_every_secret()
    raw["pipelines"] = {"p": {"topic": "t", "target": target, "table": "t"}}
    with pytest.raises(ConfigError, match="field 'target': not a database URL") as caught:
        parse_project(raw, "p.yaml", {})
    assert "tgt-pw" not in str(caught.value)
