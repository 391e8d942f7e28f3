"""Protobuf values in the Confluent wire format, writer schemas from the registry.

After the 5-byte header comes the message-index path of the message type within the schema's
file (zig-zag varints: a count, then the indexes; one 0 byte is the common ``[0]``, the first
message). Messages are grouped by schema id and path and decoded columnar (``protobuf_types``).

Registries hand out Protobuf schemas either as a base64 ``FileDescriptorProto`` (what
``format=serialized`` asks for, and what confluent-kafka's Python serializer registers) or as
``.proto`` text (what Java serializers register; Apicurio returns it as stored). Text is compiled
with protoc from ``grpcio-tools``. References (imports) are fetched from the registry; Google's
well-known types and Confluent's own types are built in.
"""

from __future__ import annotations

import base64
import binascii
import subprocess
import sys
import tempfile
import threading
from pathlib import Path
from typing import Any

import numpy as np
import pyarrow as pa
from google.protobuf import descriptor_pb2, descriptor_pool
from google.protobuf.descriptor import Descriptor
from google.protobuf.message import DecodeError

from connector.formats.base import MALFORMED, UNKNOWN_MESSAGE, WIRE_FORMAT, Decoded, Failure
from connector.formats.confluent import ConfluentFormat, Frame, GroupDecoder, WrongSchemaType
from connector.formats.protobuf_reader import Message
from connector.formats.protobuf_types import (
    UnsupportedMessageError,
    compile_message,
    read_messages,
)
from connector.formats.registry import SchemaRegistry
from connector.formats.unify import combine
from connector.formats.vector import Cursor
from kafka_etl.errors import TerminalError
from kafka_etl.extras import missing_extra_message

MAIN_FILE = "kafka_etl_writer_schema.proto"
MAX_FILES = 256  # a schema and all it imports, transitively
PROTOC_TIMEOUT = 60.0  # seconds; a schema is an input, its compilation is bounded too


class ProtobufGroup:
    """Decodes the messages of one schema id: groups them by message-index path."""

    def __init__(self, file: descriptor_pb2.FileDescriptorProto, pool: Any, where: str) -> None:
        self.file = file
        self.pool = pool
        self.where = where
        self.readers: dict[tuple[int, ...], Message | str] = {}
        self._compiling = threading.Lock()  # batches may be decoded on several threads at once

    def decode(self, frame: Frame) -> Decoded:
        failures: dict[int, Failure] = {}
        codes, starts, paths = _message_indexes(frame, failures)
        parts: list[tuple[np.ndarray, pa.Table]] = []
        for code in np.unique(codes[codes >= 0]).tolist():
            rows = np.flatnonzero(codes == code)
            reader = self._reader(paths[code])
            if isinstance(reader, str):
                for i in rows.tolist():
                    failures[i] = Failure(UNKNOWN_MESSAGE, reader)
                continue
            cursor = Cursor(frame.data, starts[rows], frame.end[rows])
            table = read_messages(reader, cursor)
            bad = cursor.failures()
            for i, why in bad.items():
                failures[int(rows[i])] = Failure(MALFORMED, f"protobuf: {why}")
            keep = np.ones(len(rows), bool)
            keep[list(bad)] = False
            parts.append((rows[keep], table.filter(pa.array(keep)) if bad else table))
        table, positions = combine(parts, failures)
        return Decoded(table, positions, failures)

    def _reader(self, path: tuple[int, ...]) -> Message | str:
        reader = self.readers.get(path)
        if reader is not None:
            return reader
        with self._compiling:  # one compilation per path, and one user of the pool at a time
            return self._compiled(path)

    def _compiled(self, path: tuple[int, ...]) -> Message | str:
        reader = self.readers.get(path)
        if reader is None:
            desc = _descriptor(self.file, self.pool, path)
            if desc is None:
                reader = f"message index {list(path)} is not in {self.where}"
            else:
                try:
                    reader = compile_message(desc)
                except UnsupportedMessageError as exc:
                    msg = f"{self.where}: {exc}"
                    raise TerminalError(msg) from None
            self.readers[path] = reader
        return reader


def protobuf_registry_format(registry: SchemaRegistry) -> ConfluentFormat:
    """Protobuf in the Confluent wire format, writer schemas from ``registry``."""

    def compile_id(schema_id: int) -> GroupDecoder:
        schema = registry.schema(schema_id, fmt="serialized")
        kind = (schema.schema_type or "AVRO").upper()
        if kind != "PROTOBUF":
            return WrongSchemaType(f"schema id {schema_id} is a {kind} schema, not Protobuf")
        where = f"schema registry {registry.url}: Protobuf schema id {schema_id}"
        pool = descriptor_pool.DescriptorPool()
        _builtins(pool)
        deps: dict[str, descriptor_pb2.FileDescriptorProto] = {}
        _references(registry, schema.references or [], pool, deps, where, set())
        file = _file_proto(MAIN_FILE, schema.schema_str, deps, where)
        try:
            pool.Add(file)
        except (TypeError, KeyError, ValueError) as exc:
            msg = f"{where} does not load: {exc}"
            raise TerminalError(msg) from None
        return ProtobufGroup(file, pool, where)

    return ConfluentFormat(compile_id)


def _message_indexes(
    frame: Frame, failures: dict[int, Failure]
) -> tuple[np.ndarray, np.ndarray, dict[int, tuple[int, ...]]]:
    """Per message: a code for its message-index path (-1 if malformed), where its payload
    starts, and the path of every code.

    Paths of one index (``[k]``: one 0 byte for ``[0]``, else count 1 then k) are read for all
    messages at once; deeper paths (nested message types) one by one.
    """
    pos, end, data = frame.pos, frame.end, frame.data
    first, second = data[pos], data[pos + 1]
    zero = (first == 0) & (pos < end)
    single = (first == 2) & (second < 0x80) & (second % 2 == 0) & (pos + 2 <= end)
    codes = np.full(len(pos), -1, np.int64)
    codes[zero] = 0
    codes[single] = second[single] // 2  # zig-zag of a non-negative index
    starts = pos + np.where(zero, 1, 2)
    paths: dict[int, tuple[int, ...]] = {int(k): (int(k),) for k in np.unique(codes[codes >= 0])}
    deeper: dict[tuple[int, ...], int] = {}
    for i in np.flatnonzero(~zero & ~single).tolist():
        path, start = _read_path(data, int(pos[i]), int(end[i]))
        if path is None:
            failures[i] = Failure(WIRE_FORMAT, "malformed Protobuf message-index path")
            continue
        code = deeper.setdefault(path, (1 << 40) + len(deeper))
        paths[code] = path
        codes[i], starts[i] = code, start
    return codes, starts, paths


def _read_path(data: np.ndarray, pos: int, end: int) -> tuple[tuple[int, ...] | None, int]:
    def zigzag() -> int | None:
        nonlocal pos
        value = shift = 0
        while pos < end and shift < 64:
            byte = int(data[pos])
            pos += 1
            value |= (byte & 0x7F) << shift
            if byte < 0x80:
                return (value >> 1) ^ -(value & 1)
            shift += 7
        return None

    count = zigzag()
    if count is None or count <= 0 or count > 64:
        return None, pos
    path = []
    for _ in range(count):
        index = zigzag()
        if index is None or index < 0:
            return None, pos
        path.append(index)
    return tuple(path), pos


def _descriptor(
    file: descriptor_pb2.FileDescriptorProto, pool: Any, path: tuple[int, ...]
) -> Descriptor | None:
    names = []
    messages: Any = file.message_type
    for index in path:
        if index >= len(messages):
            return None
        names.append(messages[index].name)
        messages = messages[index].nested_type
    full = ".".join([file.package, *names] if file.package else names)
    result: Descriptor = pool.FindMessageTypeByName(full)
    return result


def _builtins(pool: Any) -> None:
    try:
        from confluent_kafka.schema_registry.common.protobuf import _init_pool

        _init_pool(pool)
    except ImportError:  # older confluent-kafka: Google's well-known types suffice
        from google.protobuf import (
            any_pb2,
            duration_pb2,
            empty_pb2,
            struct_pb2,
            timestamp_pb2,
            wrappers_pb2,
        )

        for module in (any_pb2, duration_pb2, empty_pb2, struct_pb2, timestamp_pb2, wrappers_pb2):
            pool.AddSerializedFile(module.DESCRIPTOR.serialized_pb)


def _is_builtin(name: str) -> bool:
    return name.startswith(("google/protobuf/", "google/type/", "confluent/"))


def _references(
    registry: SchemaRegistry,
    references: list[Any],
    pool: Any,
    deps: dict[str, descriptor_pb2.FileDescriptorProto],
    where: str,
    opened: set[str],
) -> None:
    """Load the files ``references`` name, their own imports first; ``opened`` holds the
    files whose imports are being loaded, so an import cycle is one line, not a recursion."""
    for ref in references:
        if _is_builtin(ref.name) or ref.name in deps:
            continue
        if ref.name in opened:
            msg = f"{where}: reference {ref.name!r} is part of an import cycle"
            raise TerminalError(msg)
        if len(opened) + len(deps) >= MAX_FILES:
            msg = f"{where}: more than {MAX_FILES} referenced files"
            raise TerminalError(msg)
        registered = registry.version(ref.subject, ref.version, fmt="serialized")
        opened.add(ref.name)
        _references(registry, registered.schema.references or [], pool, deps, where, opened)
        opened.discard(ref.name)
        file = _file_proto(ref.name, registered.schema.schema_str, deps, where)
        deps[ref.name] = file
        try:
            pool.Add(file)
        except (TypeError, KeyError, ValueError) as exc:
            msg = f"{where}: reference {ref.name!r} does not load: {exc}"
            raise TerminalError(msg) from None


def _file_proto(
    name: str, text: str, deps: dict[str, descriptor_pb2.FileDescriptorProto], where: str
) -> descriptor_pb2.FileDescriptorProto:
    """A schema string as a FileDescriptorProto named ``name``: base64 or .proto text."""
    file = descriptor_pb2.FileDescriptorProto()
    try:
        file.ParseFromString(base64.b64decode(text, validate=True))
        if file.name or file.message_type or file.syntax:
            file.name = name
            return file
    except (binascii.Error, ValueError, DecodeError):
        pass
    return _compile_text(name, text, deps, where)


def _compile_text(
    name: str, text: str, deps: dict[str, descriptor_pb2.FileDescriptorProto], where: str
) -> descriptor_pb2.FileDescriptorProto:
    try:
        import grpc_tools
    except ImportError:
        msg = missing_extra_message(f"{where} is .proto text: compiling it", "protobuf")
        raise TerminalError(msg) from None
    include = Path(grpc_tools.__file__).parent / "_proto"
    with tempfile.TemporaryDirectory(prefix="kafka-etl-proto-") as tmp:
        root = Path(tmp) / "src"  # the registry's names go here; protoc's own files beside it
        root.mkdir()
        write_proto(root, name, text, where)
        known = descriptor_pb2.FileDescriptorSet(file=list(deps.values()))
        (Path(tmp) / "deps.pb").write_bytes(known.SerializeToString())
        out = Path(tmp) / "out.pb"
        args = [sys.executable, "-m", "grpc_tools.protoc", f"-I{root}", f"-I{include}"]
        if deps:
            args.append(f"--descriptor_set_in={Path(tmp) / 'deps.pb'}")
        args += [f"--descriptor_set_out={out}", name]
        try:
            res = subprocess.run(
                args, cwd=root, capture_output=True, text=True, check=False, timeout=PROTOC_TIMEOUT
            )
        except subprocess.TimeoutExpired:
            msg = f"{where}: .proto text did not compile within {PROTOC_TIMEOUT:.0f} s"
            raise TerminalError(msg) from None
        if res.returncode != 0:
            why = (res.stderr or res.stdout).strip().splitlines()
            msg = f"{where}: .proto text does not compile: {why[0] if why else res.returncode}"
            raise TerminalError(msg)
        compiled = descriptor_pb2.FileDescriptorSet.FromString(out.read_bytes())
    file = compiled.file[-1]
    file.name = name
    return file


def write_proto(root: Path, name: str, text: str, where: str) -> Path:
    """Write ``text`` as ``root/name``, where ``name`` comes from the registry (a reference's
    name): only a relative path of plain segments that stays inside ``root`` is accepted."""
    parts = name.split("/")
    unsafe = (
        not name
        or name.startswith(("/", "-"))  # absolute, or read by protoc as an option
        or any(c in name for c in "\\\0:")
        or any(part in ("", ".", "..") for part in parts)
    )
    path = root if unsafe else (root / name).resolve()
    if unsafe or path == root or not path.is_relative_to(root.resolve()):
        msg = f"{where}: refused file name {name!r} (not a relative path of plain segments)"
        raise TerminalError(msg)
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(text, encoding="utf-8")
    return path
