"""Multi-topic pipelines: which topics a pipeline reads, and the table each one loads into.

A pipeline names exactly one of ``topic``, ``topics: [a, b, ...]`` or ``topic_pattern``. At plan
time it resolves into members, ``Member(topic, table)``; each member loads with the ordinary
single-topic machinery (its own read plan, sink spec and checkpoint rows, which carry the topic),
so rows and offsets still commit in one transaction per batch and exactly-once holds per
``(topic, partition)``.

``topic_pattern`` is a Python regular expression (kept to what RE2 also takes) matched against the
*whole* topic name. Topics whose name starts with ``_`` (Kafka's ``__consumer_offsets``, Connect's
and Schema Registry's ``_schemas`` ...) are internal: they match only if the pattern itself starts
with ``_``. Topics are listed anew at every run, so a topic created later that matches is picked up
by the next run (from the pipeline's ``start``).

The table may contain placeholders: ``{topic}`` (the whole topic name) and ``{topic_tail}`` (the
part after the last ``.``: Debezium's ``server.schema.customers`` -> ``customers``). Each value is
sanitised by one rule, ``sanitise``: lower-cased, every character outside ``[a-z0-9_]``
becomes ``_``, a leading digit gets ``_`` in front. A table name longer than
``MAX_TABLE_LENGTH`` (which fits every supported database, with room for the ``__dlq``
dead-letter suffix) keeps its first characters and ends in ``_`` and 8 hex digits of the
SHA-256 of the untruncated name, so it stays stable and distinct. Two topics whose templated
names meet are an error naming both; a table without placeholder is one table shared by every
topic, its rows told apart by ``_topic``.
"""

from __future__ import annotations

import hashlib
import logging
import re
from collections.abc import Iterable
from dataclasses import dataclass
from typing import TYPE_CHECKING

from kafka_etl.errors import TerminalError

if TYPE_CHECKING:
    from confluent_kafka import Consumer

    from pipelines.config import Pipeline

log = logging.getLogger(__name__)

PLACEHOLDERS = ("topic", "topic_tail")
#: Longest table name a template produces: PostgreSQL's 63 bytes and MariaDB's 64 characters,
#: less the dead-letter table's ``__dlq``, less a margin.
MAX_TABLE_LENGTH = 48
#: Listing the cluster's topics gives up after this many seconds (a transient error, exit 75).
LIST_TIMEOUT = 10.0
_BRACES = re.compile(r"\{([^{}]*)\}")
_UNSAFE = re.compile(r"[^a-z0-9_]")
_HASH = 8


@dataclass(frozen=True, slots=True)
class Member:
    """One topic of a pipeline and the table it loads into."""

    topic: str
    table: str


def placeholders(table: str) -> tuple[str, ...]:
    """The placeholders ``table`` uses; ``ValueError`` for an unknown one or a stray brace."""
    names = tuple(_BRACES.findall(table))
    for name in names:
        if name not in PLACEHOLDERS:
            msg = (
                f"unknown placeholder {{{name}}} (known: "
                + ", ".join(f"{{{p}}}" for p in PLACEHOLDERS)
                + ")"
            )
            raise ValueError(msg)
    if "{" in _BRACES.sub("", table) or "}" in _BRACES.sub("", table):
        msg = "a '{' or '}' that is no placeholder ({topic} or {topic_tail})"
        raise ValueError(msg)
    return names


def sanitise(name: str) -> str:
    """A topic name (or its tail) as part of a table name: lower-cased, characters outside
    ``[a-z0-9_]`` become ``_``, a leading digit gets ``_`` in front."""
    safe = _UNSAFE.sub("_", name.lower()) or "_"
    return f"_{safe}" if safe[0].isdigit() else safe


def shortened(table: str) -> str:
    """``table`` if it fits ``MAX_TABLE_LENGTH``; else its start, ``_`` and a short stable hash."""
    if len(table) <= MAX_TABLE_LENGTH:
        return table
    digest = hashlib.sha256(table.encode()).hexdigest()[:_HASH]
    return f"{table[: MAX_TABLE_LENGTH - _HASH - 1]}_{digest}"


def table_for(template: str, topic: str) -> str:
    """The table ``topic`` loads into under ``template`` (the template itself if it has no
    placeholder)."""
    if not placeholders(template):
        return template
    values = {"topic": sanitise(topic), "topic_tail": sanitise(topic.rsplit(".", 1)[-1])}
    return shortened(_BRACES.sub(lambda m: values[m.group(1)], template))


def members_for(template: str, topics: Iterable[str]) -> list[Member]:
    """Each topic with its table, sorted by topic; ``ValueError`` naming both topics when a
    template maps two of them to one table."""
    members = [Member(t, table_for(template, t)) for t in sorted(set(topics))]
    if placeholders(template):
        seen: dict[str, str] = {}
        for m in members:
            if m.table in seen:
                msg = (
                    f"topics {seen[m.table]!r} and {m.topic!r} both map to table {m.table!r}"
                    f" under {template!r}; use {{topic}} or separate pipelines"
                )
                raise ValueError(msg)
            seen[m.table] = m.topic
    return members


def compile_pattern(pattern: str) -> re.Pattern[str]:
    """``topic_pattern`` compiled; ``ValueError`` with the reason when it is not a regex."""
    try:
        return re.compile(pattern)
    except re.error as exc:
        msg = f"not a regular expression: {exc}"
        raise ValueError(msg) from None


def matching(pattern: str, names: Iterable[str]) -> list[str]:
    """The topic names ``pattern`` matches whole, sorted; internal topics (a leading ``_``)
    only when the pattern starts with ``_``."""
    compiled = compile_pattern(pattern)
    internal = pattern.startswith("_")
    return sorted(n for n in names if compiled.fullmatch(n) and (internal or not n.startswith("_")))


def resolve(
    pipeline: Pipeline, consumer: Consumer | None, timeout: float = LIST_TIMEOUT
) -> list[Member]:
    """The pipeline's members now. ``topics`` and ``topic`` need no look-up; a pattern lists
    the cluster's topics (bounded by ``timeout``) and matches them. A pattern matching
    nothing is a warning and no member (a run loads nothing, exit 0)."""
    if pipeline.topic_pattern is None:
        return members_for(pipeline.table, pipeline.topic_list)
    if consumer is None:
        msg = f"pipeline {pipeline.name!r}: topic_pattern needs the cluster's topic list"
        raise TerminalError(msg)
    from connector.client import topic_names

    found = matching(pipeline.topic_pattern, topic_names(consumer, timeout))
    if not found:
        log.warning(
            "warning: pipeline %r: topic_pattern %r matches no topic; nothing to load",
            pipeline.name,
            pipeline.topic_pattern,
        )
    try:
        return members_for(pipeline.table, found)
    except ValueError as exc:
        msg = f"pipeline {pipeline.name!r}: {exc}"
        raise TerminalError(msg) from None
