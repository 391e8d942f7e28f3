"""The dead-letter table against a real broker and real databases: a corpus of bad messages,
``max_error_ratio``, infrastructure errors that must not be dead-lettered, and ``dlq --replay``.

How offsets add up: every offset read is exactly one of a table row, a dead letter, or (append
mode) a tombstone, which is skipped and lands nowhere. So
``count(table) + count(dlq) + tombstones == offsets``.
"""

from __future__ import annotations

import json
from collections.abc import Iterable
from pathlib import Path
from typing import Any

import pytest
import sqlalchemy as sa
import yaml
from confluent_kafka import Producer

from kafka_etl.errors import TerminalError
from pipelines.dead_letters import list_dead_letters, replay_dead_letters
from pipelines.runner import pipeline_schema, replay_pipeline, reset_pipeline, run_pipeline
from tests.fixtures.databases import sinks
from tests.fixtures.kafka import Produce, TopicFactory
from tests.helpers import (
    checkpoints,
    cli,
    fetch,
    project_for,
    table_offsets,
    write_pipelines,
)

Message = tuple[bytes | None, bytes | None, list[tuple[str, bytes]] | None]  # value, key, headers


def good(i: int) -> bytes:
    return json.dumps({"id": i, "name": f"n{i}", "amount": i / 4}).encode()


def _nested(field: str, depth: int) -> bytes:
    return f'{{"id": 9, "{field}": '.encode() + b'{"a": ' * depth + b"1" + b"}" * depth + b"}"


# Messages the JSON decoder sets aside (typed by ``COLUMNS``), by kind, with the error class
# it reports. Probed against the decoder, not assumed.
BAD: dict[str, tuple[bytes, str]] = {
    "truncated_json": (b'{"id": 1, "name": "tr', "malformed"),
    "string_for_int_column": (b'{"id": "abc", "name": "x", "amount": 1.0}', "malformed"),
    "object_for_string_column": (b'{"id": 5, "name": {"a": 1}, "amount": 1.0}', "malformed"),
    "list_for_float_column": (b'{"id": 5, "name": "x", "amount": [1, 2]}', "malformed"),
    "bool_for_int_column": (b'{"id": true, "name": "x", "amount": 1.0}', "malformed"),
    "5mb_value": (b"x" * (5 * 1024 * 1024), "malformed"),
    "invalid_utf8": (b'{"id": 7, "name": "\xff\xfe\xfd", "amount": 1.0}', "invalid_utf8"),
    "empty_bytes": (b"", "malformed"),
    "json_null_literal": (b"null", "malformed"),
    "json_array": (b'[{"id": 1}]', "malformed"),
    "json_string": (b'"just a string"', "malformed"),
    "json_number": (b"42", "malformed"),
    "json_true": (b"true", "malformed"),
    "duplicate_keys": (b'{"id": 10, "id": 11, "name": "d", "amount": 1.0}', "malformed"),
    "int_beyond_64_bits": (b'{"id": 123456789012345678901234567890, "name": "x"}', "malformed"),
    "int_just_beyond_int64": (b'{"id": 9223372036854775808, "name": "x"}', "malformed"),
    "float_overflow_1e999": (b'{"id": 34, "name": "x", "amount": 1e999}', "malformed"),
    "binary_garbage": (bytes(range(256)), "malformed"),
    "random_bytes": (b"\x8f\x00\x13\xfa\x99\x01\x02", "malformed"),
    "nul_in_field_name": (b'{"id": 17, "na\\u0000me": "x", "amount": 1.0}', "malformed"),
    "empty_field_name": (b'{"": 1, "id": 35, "name": "x", "amount": 1.0}', "malformed"),
    "raw_control_char_in_string": (b'{"id": 16, "name": "a\x01b", "amount": 1.0}', "malformed"),
    "trailing_garbage": (b'{"id": 18, "name": "x", "amount": 1.0} trailing', "malformed"),
    "two_objects": (b'{"id": 19}{"id": 20}', "malformed"),
    "single_quotes": (b"{'id': 21}", "malformed"),
    "unquoted_keys": (b"{id: 22}", "malformed"),
    "trailing_comma": (b'{"id": 23, "name": "x",}', "malformed"),
    "comment": (b'{"id": 24 /* c */}', "malformed"),
    "only_whitespace": (b"   \n\t ", "malformed"),
    "utf8_bom": (b'\xef\xbb\xbf{"id": 25, "name": "x", "amount": 1.0}', "malformed"),
    "utf16_encoded": ('{"id": 26}'.encode("utf-16"), "malformed"),
    "lone_surrogate_escape": (b'{"id": 27, "name": "\\ud800", "amount": 1.0}', "malformed"),
    "bad_escape": (b'{"id": 28, "name": "\\x41", "amount": 1.0}', "malformed"),
    "unterminated_string": (b'{"id": 29, "name": "abc', "malformed"),
    "missing_colon": (b'{"id" 30}', "malformed"),
    "hex_number": (b'{"id": 0x10}', "malformed"),
    "leading_zero_number": (b'{"id": 012}', "malformed"),
    "plus_sign_number": (b'{"id": +1}', "malformed"),
    "xml": (b"<id>1</id>", "malformed"),
    "gzip_magic": (b"\x1f\x8b\x08\x00\x00\x00\x00\x00", "malformed"),
    "confluent_frame_in_json_topic": (b"\x00\x00\x00\x00\x01\x02\x03", "malformed"),
    "nesting_200_deep": (_nested("deep", 200), "malformed"),
    "field_named_like_offset": (b'{"id": 32, "_offset": 5, "name": "x"}', "metadata_clash"),
    "field_named_like_topic": (b'{"id": 33, "_topic": "evil", "name": "x"}', "metadata_clash"),
}
BAD_KEY = b"\xff\xfekey"  # with a good value: the key is not UTF-8 (key_format string)
# Odd but valid: these load as rows (NaN/Infinity are JSON extensions pyarrow accepts).
ODD_BUT_GOOD: dict[str, bytes] = {
    "nesting_20_deep": _nested("nested", 20),
    "nan": b'{"id": 12, "name": "nan", "amount": NaN}',
    "infinity": b'{"id": 13, "name": "inf", "amount": Infinity}',
    "minus_infinity": b'{"id": 14, "name": "-inf", "amount": -Infinity}',
    "control_char_in_field_name": b'{"id": 15, "na\\u0001me": "x", "amount": 1.0}',
    "newlines_inside_object": b'{"id": 31,\n"name": "x",\n"amount": 1.0}',
    "empty_object": b"{}",
}
COLUMNS = {"id": "int64", "name": "string", "amount": "float64"}


def produce_raw(bootstrap: str, topic: str, messages: Iterable[Message]) -> int:
    """Produce exactly these bytes (up to 10 MB per message) to partition 0, in order."""
    settings = {"bootstrap.servers": bootstrap, "enable.idempotence": True}
    producer = Producer({**settings, "message.max.bytes": 10_000_000})
    errors: list[Any] = []
    count = 0
    for value, key, headers in messages:
        producer.produce(
            topic,
            value,
            key,
            0,
            headers=headers,
            on_delivery=lambda err, _m: errors.append(err) if err else None,
        )
        producer.poll(0)
        count += 1
    assert producer.flush(60) == 0
    assert not errors, errors[0]
    return count


def dead_letters(target: str, base: Path, table: str) -> dict[int, tuple[Any, ...]]:
    names = ("_offset", "error_class", "error_message", "value", "key", "headers")
    dlq = sa.table(f"{table}__dlq", *(sa.column(n) for n in names))
    rows = fetch(target, base, sa.select(*dlq.c))
    return {int(r[0]): tuple(r[1:]) for r in rows}


def _bytes(value: Any) -> bytes | None:
    return None if value is None else bytes(value)


# -- the corpus ------------------------------------------------------------------------------


# Not MariaDB (it refuses NaN and infinities in a DOUBLE) nor SQLite (it stores NaN as NULL):
# the corpus carries both, and expects them back.
@sinks("duckdb", "postgresql")
def test_corpus_of_bad_messages_lands_in_the_dlq_and_every_good_one_once(
    sink_url: str, tmp_path: Path, kafka_bootstrap: str, topic_factory: TopicFactory
) -> None:
    topic = topic_factory(1, config={"max.message.bytes": "10485760"})
    messages: list[Message] = []
    expect_rows: set[int] = set()
    expect_dead: dict[int, tuple[str, bytes | None, bytes | None]] = {}
    tombstones: set[int] = set()

    def add(value: bytes | None, key: bytes | None = None, headers: Any = None) -> int:
        messages.append((value, key, headers))
        return len(messages) - 1

    for i, (kind, (value, error)) in enumerate(BAD.items()):
        for j in range(3):
            expect_rows.add(add(good(100 * i + j)))
        headers = [("kind", kind.encode()), ("raw", b"\x00\xff")]
        expect_dead[add(value, b"k", headers)] = (error, value, b"k")
    expect_dead[add(good(9999), BAD_KEY)] = ("bad_key", good(9999), BAD_KEY)
    for value in ODD_BUT_GOOD.values():
        expect_rows.add(add(value))
    tombstones.add(add(None, b"deleted"))  # a null value: a tombstone, skipped in append mode
    expect_rows.add(add(good(10_000)))
    assert len(BAD) + 1 >= 40

    produce_raw(kafka_bootstrap, topic, messages)
    body = {
        "topic": topic,
        "target": sink_url,
        "table": "events",
        "columns": COLUMNS,
        "on_error": "dlq",
        "max_error_ratio": 0.3,
        "batch_max_rows": 40,  # many batches: new columns and dead letters in several of them
    }
    project = project_for(write_pipelines(tmp_path, kafka_bootstrap, {"events": body}))
    result = run_pipeline(project, "events")

    assert (result.rows, result.dead_lettered, result.tombstones) == (
        len(expect_rows),
        len(expect_dead),
        len(tombstones),
    )
    assert checkpoints(sink_url, tmp_path, "events", topic) == {0: len(messages)}
    loaded = table_offsets(sink_url, tmp_path, "events")
    assert loaded == sorted((0, o) for o in expect_rows)  # each good message exactly once
    dead = dead_letters(sink_url, tmp_path, "events")
    assert set(dead) == set(expect_dead)
    for offset, (error, value, key) in expect_dead.items():
        got_error, message, got_value, got_key, headers = dead[offset]
        assert (got_error, _bytes(got_value), _bytes(got_key)) == (error, value, key), offset
        assert message, offset
        if headers is not None:
            assert json.loads(headers)[0][0] == "kind"
    assert len(loaded) + len(dead) + len(tombstones) == len(messages)
    odd = fetch(sink_url, tmp_path, "SELECT name, amount FROM events WHERE id BETWEEN 12 AND 14")
    amounts = {name: amount for name, amount in odd}
    assert amounts["inf"] == float("inf") and amounts["-inf"] == float("-inf")
    assert amounts["nan"] != amounts["nan"]

    again = run_pipeline(project, "events")  # nothing new: nothing written twice
    assert (again.rows, again.dead_lettered) == (0, 0)
    replayed = replay_pipeline(project, "events", offsets={0: (0, len(messages))})
    assert (replayed.rows, replayed.dead_lettered) == (len(expect_rows), len(expect_dead))
    assert table_offsets(sink_url, tmp_path, "events") == loaded
    assert set(dead_letters(sink_url, tmp_path, "events")) == set(expect_dead)


# -- max_error_ratio -------------------------------------------------------------------------


def test_one_bad_message_in_a_small_batch_is_dead_lettered_and_the_rest_load(
    sink_url: str, tmp_path: Path, kafka_bootstrap: str, topic_factory: TopicFactory
) -> None:
    """11 messages (what a 5-minute schedule or a lag sensor hands a run), one bad: with the
    default max_error_ratio 0.01 the run counts as at least 1,000 messages, so it loads."""
    topic = topic_factory(1)
    messages: list[Message] = [(good(i), None, None) for i in range(11)]
    messages[6] = (b"not json", None, None)
    produce_raw(kafka_bootstrap, topic, messages)
    target = sink_url
    body = {"topic": topic, "target": target, "table": "events", "on_error": "dlq"}
    config = write_pipelines(tmp_path, kafka_bootstrap, {"events": body})

    done = cli(config, "run", "events", "--json")
    assert done.returncode == 0, done.stderr
    summary = json.loads(done.stdout)
    assert (summary["rows"], summary["dead_lettered"]) == (10, 1)
    assert table_offsets(target, tmp_path, "events") == [(0, o) for o in range(11) if o != 6]
    assert list(dead_letters(target, tmp_path, "events")) == [6]
    assert checkpoints(target, tmp_path, "events", topic) == {0: 11}


@pytest.mark.parametrize(
    ("count", "bad_every"),
    [pytest.param(2000, 1, id="2000-all-bad"), pytest.param(5000, 2, id="half-of-5000-bad")],
)
def test_a_systematic_problem_still_fails_the_run_and_commits_nothing(
    tmp_path: Path, kafka_bootstrap: str, topic_factory: TopicFactory, count: int, bad_every: int
) -> None:
    topic = topic_factory(1)
    messages: list[Message] = [
        (b"not json" if i % bad_every == 0 else good(i), None, None) for i in range(count)
    ]
    produce_raw(kafka_bootstrap, topic, messages)
    target = "duckdb:///w.duckdb"
    body = {"topic": topic, "target": target, "table": "events", "on_error": "dlq"}
    config = write_pipelines(tmp_path, kafka_bootstrap, {"events": body})

    done = cli(config, "run", "events")
    assert done.returncode == 1, done.stderr
    lines = done.stderr.strip().splitlines()
    assert len(lines) == 1, done.stderr
    bad = count // bad_every
    assert lines[0].startswith(
        f"kafka-etl: error: pipeline 'events': {bad:,} of the {count:,} messages read so far"
    )
    assert "more than max_error_ratio 0.01 allows (of at least 1,000 messages" in lines[0]
    assert f"first bad one of this batch: {topic}/0@0: not a valid JSON object" in lines[0]
    assert lines[0].endswith("nothing from this batch was committed")
    assert checkpoints(target, tmp_path, "events", topic) == {}
    assert table_offsets(target, tmp_path, "events") == []


def test_the_error_budget_counts_over_the_run_not_the_batch(
    tmp_path: Path, kafka_bootstrap: str, topic_factory: TopicFactory
) -> None:
    """Batches of 11 with one bad message each: every batch alone is within the budget, but
    the run's bad messages pass 10 (1% of at least 1,000) at the 11th batch, which fails and
    commits nothing; the 10 before it committed, their dead letters with them."""
    topic = topic_factory(1)
    messages: list[Message] = [
        (b"not json" if i % 11 == 5 else good(i), None, None) for i in range(11 * 20)
    ]
    produce_raw(kafka_bootstrap, topic, messages)
    target = "duckdb:///w.duckdb"
    body = {
        "topic": topic,
        "target": target,
        "table": "events",
        "on_error": "dlq",
        "batch_max_rows": 11,
    }
    project = project_for(write_pipelines(tmp_path, kafka_bootstrap, {"events": body}))
    with pytest.raises(TerminalError, match="11 of the 121 messages read so far"):
        run_pipeline(project, "events")
    assert checkpoints(target, tmp_path, "events", topic) == {0: 110}
    assert len(dead_letters(target, tmp_path, "events")) == 10

    body["min_messages_for_ratio"] = 100_000  # allows 1,000 bad messages
    project = project_for(write_pipelines(tmp_path, kafka_bootstrap, {"events": body}))
    assert run_pipeline(project, "events").dead_lettered == 10


# -- infrastructure errors are never dead letters --------------------------------------------


def test_an_unreachable_database_fails_transient_and_dead_letters_nothing(
    tmp_path: Path, kafka_bootstrap: str, topic_factory: TopicFactory, produce: Produce
) -> None:
    topic = topic_factory(1)
    produce(topic, [b"not json", {"id": 1}])
    body = {
        "topic": topic,
        "target": "postgresql+psycopg://kafka_etl:x@127.0.0.1:1/nowhere",
        "table": "events",
        "on_error": "dlq",
        "max_error_ratio": 1.0,
    }
    config = write_pipelines(tmp_path, kafka_bootstrap, {"events": body})
    done = cli(config, "run", "events")
    assert done.returncode == 75, done.stderr
    assert done.stderr.startswith("kafka-etl: error:")
    assert len(done.stderr.strip().splitlines()) == 1

    # The same messages against a database that is up: the bad one is dead-lettered once.
    body["target"] = "duckdb:///w.duckdb"
    config = write_pipelines(tmp_path, kafka_bootstrap, {"events": body})
    done = cli(config, "run", "events")
    assert done.returncode == 0, done.stderr
    assert "1 messages dead-lettered" in done.stdout
    assert list(dead_letters(body["target"], tmp_path, "events")) == [0]


# -- dlq and dlq --replay --------------------------------------------------------------------


def test_dlq_lists_and_replay_moves_what_now_decodes(
    sink_url: str, tmp_path: Path, kafka_bootstrap: str, topic_factory: TopicFactory
) -> None:
    topic = topic_factory(1)
    messages: list[Message] = []
    for i in range(30):
        amount = f"{i}.5" if i % 10 == 3 else str(i)  # 3 messages have a fraction
        messages.append((f'{{"id": {i}, "amount": {amount}}}'.encode(), None, None))
    messages.append((b"{broken", None, None))
    produce_raw(kafka_bootstrap, topic, messages)
    body: dict[str, Any] = {
        "topic": topic,
        "target": sink_url,
        "table": "orders",
        "columns": {"id": "int64", "amount": "int64"},  # wrong: amounts may have fractions
        "on_error": "dlq",
        "max_error_ratio": 0.2,
    }
    config = write_pipelines(tmp_path, kafka_bootstrap, {"orders": body})
    project = project_for(config)
    assert run_pipeline(project, "orders").dead_lettered == 4
    assert sorted(dead_letters(sink_url, tmp_path, "orders")) == [3, 13, 23, 30]

    listed = cli(config, "dlq", "orders", "--limit", "2")
    assert listed.returncode == 0, listed.stderr
    assert "malformed" in listed.stdout and "2 shown" in listed.stdout
    assert list_dead_letters(project, "orders").num_rows == 4

    body["columns"] = {"id": "int64", "amount": "float64"}  # the fix
    config = write_pipelines(tmp_path, kafka_bootstrap, {"orders": body})
    moved = cli(config, "dlq", "orders", "--replay")
    assert moved.returncode == 0, moved.stderr
    assert "3 of 4 dead letters now decode" in moved.stdout
    assert sorted(dead_letters(sink_url, tmp_path, "orders")) == [30]
    assert table_offsets(sink_url, tmp_path, "orders") == [(0, o) for o in range(30)]
    amounts = dict(fetch(sink_url, tmp_path, "SELECT id, amount FROM orders"))
    assert amounts[13] == 13.5 and amounts[4] == 4
    assert checkpoints(sink_url, tmp_path, "orders", topic) == {0: 31}

    again = replay_dead_letters(project_for(config), "orders")  # idempotent
    assert (again.examined, again.moved, again.still_failing) == (1, 0, 1)
    assert len(table_offsets(sink_url, tmp_path, "orders")) == 30


def test_dlq_replay_flattens_as_the_run_does(
    sink_url: str, tmp_path: Path, kafka_bootstrap: str, topic_factory: TopicFactory
) -> None:
    """``flatten:`` applies to replayed dead letters too: they land in the ``a__b`` columns the
    run made, not in a nested struct column of their own."""
    topic = topic_factory(1)
    messages: list[Message] = []
    for i in range(10):
        amount = "3.5" if i == 3 else str(i)  # one message has a fraction
        value = f'{{"id": {i}, "amount": {amount}, "info": {{"code": {i * 10}}}}}'
        messages.append((value.encode(), None, None))
    produce_raw(kafka_bootstrap, topic, messages)
    body: dict[str, Any] = {
        "topic": topic,
        "target": sink_url,
        "table": "flat",
        "columns": {"id": "int64", "amount": "int64"},  # wrong: amounts may have fractions
        "flatten": 1,
        "on_error": "dlq",
        "max_error_ratio": 0.5,
    }
    config = write_pipelines(tmp_path, kafka_bootstrap, {"flat": body})
    assert run_pipeline(project_for(config), "flat").dead_lettered == 1
    assert sorted(dead_letters(sink_url, tmp_path, "flat")) == [3]

    body["columns"] = {"id": "int64", "amount": "float64"}  # the fix
    config = write_pipelines(tmp_path, kafka_bootstrap, {"flat": body})
    moved = cli(config, "dlq", "flat", "--replay")
    assert moved.returncode == 0, moved.stderr
    assert "1 of 1 dead letters now decode" in moved.stdout
    assert dead_letters(sink_url, tmp_path, "flat") == {}
    schema = pipeline_schema(project_for(config), "flat")[0]
    columns = set(schema.names) if schema is not None else set()
    assert "info__code" in columns and "info" not in columns, columns
    codes = dict(fetch(sink_url, tmp_path, "SELECT id, info__code FROM flat"))
    assert codes == {i: i * 10 for i in range(10)}


def test_pipelines_file_accepts_the_dlq_settings(tmp_path: Path) -> None:
    path = tmp_path / "p.yaml"
    document = {
        "kafka": {"bootstrap.servers": "localhost:9092"},
        "pipelines": {"a": {"topic": "t", "target": "duckdb:///x", "table": "a"}},
    }
    path.write_text(yaml.safe_dump(document))
    pipeline = project_for(path).pipeline("a")
    assert (pipeline.on_error, pipeline.max_error_ratio) == ("fail", 0.01)
    assert pipeline.min_messages_for_ratio == 1000


def test_upsert_tables_dead_letter_too_and_a_backfill_does_not_duplicate(
    sink_url: str, tmp_path: Path, kafka_bootstrap: str, topic_factory: TopicFactory
) -> None:
    topic = topic_factory(1)
    messages: list[Message] = []
    for i in range(40):
        value = b"{oops" if i % 10 == 7 else json.dumps({"id": i % 8, "v": i}).encode()
        messages.append((value, None, None))
    produce_raw(kafka_bootstrap, topic, messages)
    body = {
        "topic": topic,
        "target": sink_url,
        "table": "latest",
        "mode": "upsert",
        "key": ["id"],
        "on_error": "dlq",
        "max_error_ratio": 0.2,
        "batch_max_rows": 15,
    }
    project = project_for(write_pipelines(tmp_path, kafka_bootstrap, {"latest": body}))
    assert run_pipeline(project, "latest").dead_lettered == 4
    replayed = replay_pipeline(project, "latest", offsets={0: (0, 40)})
    assert replayed.dead_lettered == 4
    assert sorted(dead_letters(sink_url, tmp_path, "latest")) == [7, 17, 27, 37]
    newest = dict(fetch(sink_url, tmp_path, "SELECT id, v FROM latest"))
    assert newest == {k: max(i for i in range(40) if i % 8 == k and i % 10 != 7) for k in range(8)}


def test_reset_clears_the_dead_letters_it_will_read_again(
    sink_url: str, tmp_path: Path, kafka_bootstrap: str, topic_factory: TopicFactory
) -> None:
    topic = topic_factory(1)
    produce_raw(
        kafka_bootstrap,
        topic,
        [(b"{bad" if i in (2, 8) else good(i), None, None) for i in range(10)],
    )
    body = {
        "topic": topic,
        "target": sink_url,
        "table": "t",
        "on_error": "dlq",
        "max_error_ratio": 0.5,
    }
    project = project_for(write_pipelines(tmp_path, kafka_bootstrap, {"t": body}))
    assert run_pipeline(project, "t").dead_lettered == 2
    reset_pipeline(project, "t", "earliest")
    assert list(dead_letters(sink_url, tmp_path, "t")) == []
    again = run_pipeline(project, "t")
    assert (again.rows, again.dead_lettered) == (8, 2)
    assert sorted(dead_letters(sink_url, tmp_path, "t")) == [2, 8]
