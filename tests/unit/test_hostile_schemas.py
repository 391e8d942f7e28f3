"""The schema registry is an input: schemas that are huge, deep, recursive or name files outside
the temporary directory end in one line naming the schema id, never a crash, hang or stray file.

Schemas are served by confluent-kafka's in-memory registry (``mock://``), hand-made here.
"""

from __future__ import annotations

import base64
import json
import uuid
from pathlib import Path
from typing import Any

import pytest
from confluent_kafka.schema_registry import Schema, SchemaReference
from google.protobuf import descriptor_pb2

from connector.formats.avro import avro_registry_format
from connector.formats.protobuf import protobuf_registry_format, write_proto
from connector.formats.registry import MAX_SCHEMA_CHARS, SchemaRegistry
from kafka_etl.errors import TerminalError
from tests.formats.support import framed

F = descriptor_pb2.FieldDescriptorProto


def registry() -> SchemaRegistry:
    return SchemaRegistry({"url": f"mock://{uuid.uuid4().hex}"})


def register(reg: SchemaRegistry, schema: Any, kind: str, refs: list[Any] | None = None) -> int:
    text = schema if isinstance(schema, str) else json.dumps(schema)
    sid: int = reg.client.register_schema(uuid.uuid4().hex, Schema(text, kind, refs or []))
    return sid


def decode_avro(reg: SchemaRegistry, sid: int) -> None:
    avro_registry_format(reg).decode_values([framed(sid, b"\x00")])


def decode_protobuf(reg: SchemaRegistry, sid: int) -> None:
    protobuf_registry_format(reg).decode_values([framed(sid, b"\x00\x08\x01")])


def record(name: str, fields: list[tuple[str, Any]]) -> dict[str, Any]:
    return {"type": "record", "name": name, "fields": [{"name": n, "type": t} for n, t in fields]}


def nested_records(depth: int) -> dict[str, Any]:
    schema: Any = "long"
    for level in range(depth, 0, -1):
        schema = record(f"R{level}", [("x", schema)])
    assert isinstance(schema, dict)
    return schema


# -- Avro ---------------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("schema", "type_name"),
    [
        (record("Node", [("next", ["null", "Node"])]), "Node"),
        (record("Tree", [("kids", {"type": "array", "items": "Tree"})]), "Tree"),
        (record("Map", [("m", {"type": "map", "values": ["null", "Map"]})]), "Map"),
        (
            record("A", [("b", ["null", record("B", [("a", ["null", "A"])])])]),
            "A",
        ),
    ],
    ids=["self-via-union", "self-via-array", "self-via-map", "mutual"],
)
def test_a_recursive_avro_schema_is_one_line_naming_the_id_and_the_type(
    schema: dict[str, Any], type_name: str
) -> None:
    reg = registry()
    sid = register(reg, schema, "AVRO")
    with pytest.raises(TerminalError) as caught:
        decode_avro(reg, sid)
    message = str(caught.value)
    assert f"Avro schema id {sid}" in message
    assert f"recursive type {type_name!r}" in message
    assert "\n" not in message


def test_avro_records_nest_64_deep_but_not_65() -> None:
    reg = registry()
    ok = register(reg, nested_records(64), "AVRO")
    avro_registry_format(reg).decode_values([framed(ok, b"\x02")])
    deep = register(reg, nested_records(65), "AVRO")
    with pytest.raises(TerminalError, match=rf"Avro schema id {deep}.*nested more than 64"):
        decode_avro(reg, deep)


@pytest.mark.parametrize("depth", [1_000, 12_000])
def test_an_avro_schema_nested_thousands_deep_is_refused_not_a_recursion_error(
    depth: int,
) -> None:
    # As text: json.dumps itself cannot write what is nested this deep.
    array = '{"type": "array", "items": ' * depth + '"long"' + "}" * depth
    records = "".join(
        f'{{"type": "record", "name": "R{i}", "fields": [{{"name": "x", "type": '
        for i in range(depth)
    )
    records += '"long"' + "}]}" * depth
    reg = registry()
    for schema in (array, records):
        sid = register(reg, schema, "AVRO")
        with pytest.raises(
            TerminalError, match=rf"Avro schema id {sid} is (not supported|invalid)"
        ):
            decode_avro(reg, sid)


def test_an_avro_schema_over_the_size_bound_is_refused_before_parsing() -> None:
    reg = registry()
    fields = [(f"f{i:07d}", "long") for i in range(MAX_SCHEMA_CHARS // 30)]
    sid = register(reg, record("Wide", fields), "AVRO")
    with pytest.raises(TerminalError, match=rf"schema id {sid} is [\d,]+ characters, more than"):
        decode_avro(reg, sid)


def test_an_avro_schema_that_is_not_json_is_one_line() -> None:
    reg = registry()
    sid = register(reg, "{not json", "AVRO")
    with pytest.raises(TerminalError, match=rf"Avro schema id {sid} is invalid: not JSON"):
        decode_avro(reg, sid)


def test_a_recursive_avro_reference_is_one_line() -> None:
    reg = registry()
    node = record("Node", [("next", ["null", "Node"])])
    register(reg, node, "AVRO")
    subject = reg.client.get_subjects()[0]
    main = record("Holder", [("n", "Node")])
    sid = register(reg, main, "AVRO", [SchemaReference("Node", subject, 1)])
    with pytest.raises(TerminalError, match=rf"Avro schema id {sid}.*recursive type 'Node'"):
        decode_avro(reg, sid)


def test_a_json_schema_nested_past_the_stack_falls_back_to_inferred_types() -> None:
    from connector.formats.json_schema import json_schema_registry_format

    reg = registry()
    depth = 90_000
    sid = register(reg, '{"items": ' * depth + "{}" + "}" * depth, "JSON")
    decoded = json_schema_registry_format(reg).decode_values([framed(sid, b'{"a": 1}')])
    assert decoded.table.column("a").to_pylist() == [1]


# -- Protobuf -----------------------------------------------------------------------------------


def file_proto(messages: list[descriptor_pb2.DescriptorProto]) -> str:
    file = descriptor_pb2.FileDescriptorProto(name="x.proto", package="h", syntax="proto3")
    file.message_type.extend(messages)
    return base64.b64encode(file.SerializeToString()).decode()


def message(name: str, *fields: tuple[str, str, bool]) -> descriptor_pb2.DescriptorProto:
    """``fields``: (name, message type name, repeated)."""
    msg = descriptor_pb2.DescriptorProto(name=name)
    for number, (field, type_name, repeated) in enumerate(fields, start=1):
        label = F.LABEL_REPEATED if repeated else F.LABEL_OPTIONAL
        msg.field.add(
            name=field, number=number, type=F.TYPE_MESSAGE, type_name=f".h.{type_name}", label=label
        )
    return msg


@pytest.mark.parametrize(
    ("messages", "type_name"),
    [
        ([message("Node", ("next", "Node", False))], "h.Node"),
        ([message("Tree", ("kids", "Tree", True))], "h.Tree"),
        ([message("A", ("b", "B", False)), message("B", ("a", "A", True))], "h.A"),
    ],
    ids=["self", "self-repeated", "mutual"],
)
def test_a_recursive_protobuf_message_is_one_line_naming_the_id_and_the_type(
    messages: list[descriptor_pb2.DescriptorProto], type_name: str
) -> None:
    reg = registry()
    sid = register(reg, file_proto(messages), "PROTOBUF")
    with pytest.raises(TerminalError) as caught:
        decode_protobuf(reg, sid)
    assert f"Protobuf schema id {sid}" in str(caught.value)
    assert f"recursive message {type_name!r}" in str(caught.value)


def test_protobuf_messages_nest_64_deep_but_not_65() -> None:
    def chain(depth: int) -> list[descriptor_pb2.DescriptorProto]:
        return [message(f"M{i}", ("x", f"M{i + 1}", False)) for i in range(depth - 1)] + [
            descriptor_pb2.DescriptorProto(name=f"M{depth - 1}")
        ]

    reg = registry()
    ok = register(reg, file_proto(chain(64)), "PROTOBUF")
    protobuf_registry_format(reg).decode_values([framed(ok, b"\x00")])
    deep = register(reg, file_proto(chain(65)), "PROTOBUF")
    with pytest.raises(TerminalError, match=rf"schema id {deep}.*nested more than 64"):
        decode_protobuf(reg, deep)


def test_a_protobuf_import_cycle_is_one_line() -> None:
    reg = registry()
    a_text = 'syntax = "proto3"; import "b.proto"; message A { int64 x = 1; }'
    b_text = 'syntax = "proto3"; import "a.proto"; message B { int64 x = 1; }'
    a = register(reg, a_text, "PROTOBUF", [SchemaReference("b.proto", "b", 1)])
    reg.client.register_schema(
        "b", Schema(b_text, "PROTOBUF", [SchemaReference("a.proto", "a", 1)])
    )
    reg.client.register_schema(
        "a", Schema(a_text, "PROTOBUF", [SchemaReference("b.proto", "b", 1)])
    )
    with pytest.raises(
        TerminalError, match=rf"schema id {a}: reference .b.proto. is part of an import cycle"
    ):
        decode_protobuf(reg, a)


def test_a_protobuf_schema_over_the_size_bound_is_refused() -> None:
    reg = registry()
    text = 'syntax = "proto3"; message A { int64 x = 1; }' + "\n" * MAX_SCHEMA_CHARS
    sid = register(reg, text, "PROTOBUF")
    with pytest.raises(TerminalError, match="characters, more than"):
        decode_protobuf(reg, sid)


# -- Reference names are file names: confined to the temporary directory -------------------------

HOSTILE_NAMES = {
    "dot-dot": "../escaped.proto",
    "dot-dot-inside": "a/../../escaped.proto",
    "absolute": "/tmp/kafka-etl-escaped-{}.proto",
    "backslash": "..\\escaped.proto",
    "nul": "a\x00b.proto",
    "option": "--descriptor_set_out=escaped.proto",
    "empty-segment": "a//b.proto",
    "dot-segment": "./a.proto",
    "empty": "",
}


@pytest.mark.parametrize("name", HOSTILE_NAMES.values(), ids=HOSTILE_NAMES.keys())
def test_a_reference_name_cannot_write_outside_the_temporary_directory(
    tmp_path: Path, name: str
) -> None:
    name = name.format(uuid.uuid4().hex)
    root = tmp_path / "root"
    root.mkdir()
    with pytest.raises(TerminalError, match="refused file name"):
        write_proto(root, name, "syntax = 'proto3';", "schema id 7")
    assert list(tmp_path.rglob("*")) == [root]
    if name.startswith("/"):
        assert not Path(name).exists()


def test_a_plain_reference_name_is_written_under_the_root(tmp_path: Path) -> None:
    path = write_proto(tmp_path, "shop/common.proto", "x", "schema id 7")
    assert path == (tmp_path / "shop" / "common.proto").resolve()
    assert path.read_text() == "x"


def test_a_hostile_reference_name_from_the_registry_is_refused_and_writes_nothing(
    tmp_path: Path,
) -> None:
    reg = registry()
    escaped = tmp_path / "escaped.proto"
    dep_text = 'syntax = "proto3"; message Dep { int64 x = 1; }'
    reg.client.register_schema("dep", Schema(dep_text, "PROTOBUF"))
    name = f"../../../../../../../../..{escaped}"
    main_text = f'syntax = "proto3"; import "{name}"; message A {{ int64 x = 1; }}'
    sid = register(reg, main_text, "PROTOBUF", [SchemaReference(name, "dep", 1)])
    with pytest.raises(TerminalError, match=rf"schema id {sid}: refused file name"):
        decode_protobuf(reg, sid)
    assert not escaped.exists()
