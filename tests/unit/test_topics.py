"""Multi-topic pipelines offline: table templates, the sanitisation rule, pattern matching and
the validation of `topic` / `topics` / `topic_pattern` (pipelines/topics.py, config.py)."""

from __future__ import annotations

from typing import Any

import pytest

from kafka_etl.errors import ConfigError
from pipelines.config import Project, parse_project
from pipelines.topics import (
    MAX_TABLE_LENGTH,
    Member,
    matching,
    members_for,
    sanitise,
    shortened,
    table_for,
)


@pytest.mark.parametrize(
    ("topic", "template", "table"),
    [
        pytest.param("orders", "{topic}", "orders", id="plain"),
        pytest.param("Shop.Orders-v2", "{topic}", "shop_orders_v2", id="lowered-dots-dashes"),
        pytest.param("server.public.customers", "{topic_tail}", "customers", id="debezium-tail"),
        pytest.param("server.public.customers", "raw_{topic_tail}", "raw_customers", id="prefix"),
        pytest.param("2024-events", "{topic}", "_2024_events", id="leading-digit"),
        pytest.param("no-dot", "{topic_tail}", "no_dot", id="tail-without-dot"),
        pytest.param("a.b", "shared", "shared", id="no-placeholder-shared"),
        pytest.param("a.b", "{topic}__{topic_tail}", "a_b__b", id="both"),
    ],
)
def test_templates_sanitise_the_topic_name(topic: str, template: str, table: str) -> None:
    assert table_for(template, topic) == table


def test_sanitise_is_one_rule_for_every_character() -> None:
    assert sanitise("A-b.c_D9") == "a_b_c_d9"
    assert sanitise("9") == "_9"


def test_a_long_name_is_truncated_with_a_stable_distinct_hash() -> None:
    first = table_for("{topic}", "x" * 200 + ".one")
    second = table_for("{topic}", "x" * 200 + ".two")
    assert len(first) == len(second) == MAX_TABLE_LENGTH
    assert first != second
    assert first == table_for("{topic}", "x" * 200 + ".one")  # stable across runs
    assert first.startswith("x" * 30)
    assert shortened("short") == "short"


def test_two_topics_meeting_in_one_templated_table_are_named_both() -> None:
    with pytest.raises(ValueError, match=r"topics 'a\.x' and 'b\.x' both map to table 'x'"):
        members_for("{topic_tail}", ["b.x", "a.x"])


def test_no_placeholder_is_one_shared_table() -> None:
    assert members_for("events", ["b", "a"]) == [Member("a", "events"), Member("b", "events")]


def test_patterns_match_whole_names_and_skip_internal_topics() -> None:
    names = [
        "cdc.public.a",
        "cdc.public.b",
        "xcdc.public.c",
        "cdc.public.a.x",
        "__consumer_offsets",
    ]
    assert matching(r"cdc\.public\.[^.]+", names) == ["cdc.public.a", "cdc.public.b"]
    assert matching(".*", names) == [n for n in sorted(names) if not n.startswith("_")]
    assert matching("__.*", names) == ["__consumer_offsets"]


def _project(**body: Any) -> Project:
    raw = {
        "kafka": {"bootstrap.servers": "127.0.0.1:9"},
        "pipelines": {"p": {"target": "duckdb:///w.duckdb", "table": "t", **body}},
    }
    return parse_project(raw, "pipes.yaml", {})


@pytest.mark.parametrize(
    ("body", "message"),
    [
        pytest.param({}, "field 'topic': missing (give one of", id="none"),
        pytest.param(
            {"topic": "a", "topics": ["b"]},
            "field 'topics': give only one of 'topic', 'topics' or 'topic_pattern'",
            id="topic-and-topics",
        ),
        pytest.param(
            {"topics": ["a"], "topic_pattern": "a.*"},
            "field 'topic_pattern': give only one of",
            id="topics-and-pattern",
        ),
        pytest.param({"topics": []}, "field 'topics': the list is empty", id="empty-list"),
        pytest.param({"topics": ["a", "a"]}, "topic 'a' is listed twice", id="twice"),
        pytest.param({"topics": ["a b"]}, "is not a Kafka topic name", id="bad-name"),
        pytest.param(
            {"topic_pattern": "cdc.("}, "field 'topic_pattern': not a regular expression", id="re"
        ),
        pytest.param(
            {"topic_pattern": "a.*", "table": "{name}"},
            "field 'table': unknown placeholder {name}",
            id="unknown-placeholder",
        ),
        pytest.param(
            {"topic_pattern": "a.*", "table": "t{"},
            "field 'table': a '{' or '}' that is no placeholder",
            id="stray-brace",
        ),
        pytest.param(
            {"topic": "a", "table": "{topic}"},
            "field 'table': {topic} and {topic_tail} name a table per topic",
            id="template-for-one-topic",
        ),
        pytest.param(
            {"topics": ["s.a.x", "s.b.x"], "table": "{topic_tail}"},
            "field 'table': topics 's.a.x' and 's.b.x' both map to table 'x'",
            id="collision",
        ),
    ],
)
def test_validation_is_one_line_naming_file_pipeline_and_field(
    body: dict[str, Any], message: str
) -> None:
    with pytest.raises(ConfigError) as caught:
        _project(**body)
    text = str(caught.value)
    assert text.startswith("pipes.yaml: pipeline 'p', field '"), text
    assert message in text, text
    assert "\n" not in text


def test_members_of_a_list_pipeline_keep_the_name_and_carry_one_topic_each() -> None:
    pipeline = _project(topics=["shop.orders", "shop.items"], table="{topic_tail}").pipeline("p")
    assert pipeline.multi_topic
    assert pipeline.topics_shown == "shop.orders, shop.items"
    member = pipeline.member(Member("shop.items", "items"))
    assert (member.name, member.topic, member.table, member.multi_topic) == (
        "p",
        "shop.items",
        "items",
        False,
    )
    assert member.consumer_group == pipeline.consumer_group
