"""Reading a pipelines file that may be broken or hostile, in bounded time and memory.

Every way a file can fail to be a pipelines document ends as one ``ConfigError`` line with the
file, the line where YAML saw it and, where there is one, the pipeline and field: bytes that
are not UTF-8, YAML syntax, duplicate or non-string keys, nesting deeper than a pipelines
file needs, and aliases that expand beyond a budget ("billion laughs", also through ``<<``
merge keys). The document is composed by libyaml where available (``yaml.CSafeLoader``), then
checked as a node graph, iteratively and once per distinct node, before anything is built.
"""

from __future__ import annotations

import codecs
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import yaml
from yaml.constructor import ConstructorError
from yaml.nodes import MappingNode, Node, ScalarNode, SequenceNode

from kafka_etl.errors import ConfigError

# Bounds on what a pipelines file may be, each far beyond a real one (thousands of pipelines
# fit), so that reading the worst file stays well under a second of CPU.
MAX_FILE_BYTES = 1024 * 1024
MAX_NODES = 100_000  # keys, values and collections as written
MAX_VALUES = 200_000  # the same once aliases and merge keys are expanded
MAX_DEPTH = 64  # a pipelines file is five levels deep; this bounds every recursive walk after

_Base: type[yaml.SafeLoader] = getattr(yaml, "CSafeLoader", yaml.SafeLoader)


class _TooManyNodes(Exception):
    pass


class _Loader(_Base):  # type: ignore[misc,valid-type]
    """libyaml's safe loader (PyYAML's where libyaml is missing), stopped as soon as the
    document has more than ``MAX_NODES`` nodes: the composer resolves a tag for each."""

    _nodes = 0

    def resolve(self, kind: type[Node], value: Any, implicit: Any) -> str:
        self._nodes += 1
        if self._nodes > MAX_NODES:
            raise _TooManyNodes
        return str(super().resolve(kind, value, implicit))

    def construct_object(self, node: Node, deep: bool = False) -> Any:
        """PyYAML's, with a value its tag cannot hold (``!!int abc``, ``2026-13-45``, an
        integer of 5,000 digits) reported at its line like any other YAML error."""
        try:
            return super().construct_object(node, deep)
        except yaml.YAMLError:
            raise
        except (ValueError, TypeError, KeyError, AttributeError, OverflowError) as exc:
            tag = str(node.tag).rsplit(":", 1)[-1]
            value = show(node.value) if isinstance(node, ScalarNode) else "the value"
            problem = f"cannot read {value} as {tag} ({' '.join(str(exc).split())[:80]})"
            raise ConstructorError(None, None, problem, node.start_mark) from None


_STR = "tag:yaml.org,2002:str"
_MERGE = "tag:yaml.org,2002:merge"


def read_document(path: str | Path, source: str) -> Any:
    """The YAML document in ``path`` as plain Python values, or ``None`` for an empty file."""
    data, text = _read(Path(path), source)
    try:
        loader = _Loader(data)
        try:
            node = loader.get_single_node()
            if node is None:
                return None
            _check_graph(node, source)
            return loader.construct_document(node)
        finally:
            loader.dispose()
    except yaml.YAMLError as exc:
        raise ConfigError(_yaml_message(exc, source, text)) from None
    except _TooManyNodes:
        msg = f"{source}: more than {MAX_NODES:,} keys and values; not a pipelines file"
        raise ConfigError(msg) from None
    except RecursionError:  # only the pure-Python loader recurses, and only when libyaml is absent
        msg = f"{source}: nesting too deep for a pipelines file"
        raise ConfigError(msg) from None


def where(path: tuple[str, ...]) -> str:
    """``pipeline 'a', field 'kafka.x'`` for a path of keys into the document."""
    parts = [str(p) for p in path]
    if len(parts) > 8:
        parts = [*parts[:4], "...", *parts[-3:]]
    if len(parts) >= 2 and parts[0] == "pipelines":
        rest = ".".join(parts[2:]) or "(definition)"
        return f"pipeline {parts[1]!r}, field {rest!r}"
    return f"field {'.'.join(parts)!r}" if parts else "top level"


def show(value: object, limit: int = 60) -> str:
    """``repr(value)``, shortened so that a message stays one readable line."""
    text = repr(value)
    return text if len(text) <= limit else f"{text[: limit - 5]}...{text[-2:]}"


def _read(path: Path, source: str) -> tuple[bytes, str]:
    """The file's bytes (UTF-8, without a BOM: libyaml reads them fastest) and its text."""
    try:
        with path.open("rb") as handle:
            data = handle.read(MAX_FILE_BYTES + 1)
    except OSError as exc:
        msg = f"{source}: cannot read pipelines file ({exc.strerror or exc})"
        raise ConfigError(msg) from None
    if len(data) > MAX_FILE_BYTES:
        msg = f"{source}: larger than {MAX_FILE_BYTES // 1024:,} KB; not a pipelines file"
        raise ConfigError(msg)
    if data.startswith((codecs.BOM_UTF16_LE, codecs.BOM_UTF16_BE)) or b"\x00" in data[:4]:
        msg = f"{source}: the file is UTF-16 or UTF-32 text; save it as UTF-8"
        raise ConfigError(msg)
    data = data.removeprefix(codecs.BOM_UTF8)
    try:
        return data, data.decode("utf-8")
    except UnicodeDecodeError as exc:
        line = data.count(b"\n", 0, exc.start) + 1
        byte = data[exc.start]
        msg = f"{source}: line {line}: not UTF-8 text (byte 0x{byte:02x}); save it as UTF-8"
        raise ConfigError(msg) from None


def _yaml_message(exc: yaml.YAMLError, source: str, text: str) -> str:
    mark = getattr(exc, "problem_mark", None) or getattr(exc, "context_mark", None)
    problem = getattr(exc, "problem", None) or getattr(exc, "reason", None) or "invalid YAML"
    line_no: int | None = mark.line + 1 if mark is not None else None
    position = getattr(exc, "position", None)
    if line_no is None and isinstance(position, int):
        line_no = text.count("\n", 0, position) + 1
    context = getattr(exc, "context", None)
    if context:
        problem = f"{context}, {problem}"
    problem = " ".join(str(problem).split())
    if line_no is not None:
        lines = text.splitlines()
        if line_no <= len(lines) and "\t" in lines[line_no - 1] and "token" in problem:
            problem += " (a tab: YAML is indented with spaces)"
    where_ = f" line {line_no}:" if line_no is not None else ""
    if len(problem) > 200:
        problem = f"{problem[:197]}..."
    return f"{source}:{where_} {problem}"


@dataclass(slots=True)
class _Frame:
    """A collection node being walked: its collections still to visit, and what it adds up
    to (its keys and scalars counted when it is entered)."""

    node: Node
    path: tuple[str, ...]
    children: list[tuple[Node, tuple[str, ...]]]
    values: int
    height: int = 1
    next: int = 0


def _check_graph(root: Node, source: str) -> None:
    """Keys are strings and unique; nesting, cycles and alias expansion are bounded.

    Depth first, without recursion. A node reached again through an alias is not walked
    again: its expanded size and height, known from the first visit, are added instead.
    """
    done: dict[int, tuple[int, int]] = {}  # id(node) -> (values when expanded, height)
    active: set[int] = set()
    stack: list[_Frame] = []

    def fail(node: Node, what: str) -> None:
        msg = f"{source}: line {node.start_mark.line + 1}: {what}"
        raise ConfigError(msg)

    def enter(node: Node, path: tuple[str, ...]) -> None:
        if len(stack) >= MAX_DEPTH:
            fail(node, f"{where(path)}: nested deeper than {MAX_DEPTH} levels")
        if isinstance(node, MappingNode):
            children, values = _mapping_children(node, path, source)
        else:
            children = [
                (child, (*path, str(i)))
                for i, child in enumerate(node.value)
                if not isinstance(child, ScalarNode)
            ]
            values = 1 + len(node.value)
        stack.append(_Frame(node, path, children, values, 2 if values > 1 else 1))
        active.add(id(node))

    if isinstance(root, ScalarNode):
        return
    enter(root, ())
    while stack:
        frame = stack[-1]
        if frame.next == len(frame.children):
            stack.pop()
            active.discard(id(frame.node))
            done[id(frame.node)] = (frame.values, frame.height)
            if not stack:
                break
            values, height, frame = frame.values, frame.height, stack[-1]
        else:
            node, path = frame.children[frame.next]
            frame.next += 1
            known = done.get(id(node))
            if known is None:
                if id(node) in active:
                    fail(node, f"{where(path)}: an alias refers to the collection that contains it")
                enter(node, path)
                continue
            values, height = known
        frame.values += values
        frame.height = max(frame.height, height + 1)
        if frame.values > MAX_VALUES:
            fail(
                frame.node,
                f"{where(frame.path)}: aliases expand to more than {MAX_VALUES:,} values",
            )
        if len(stack) + height > MAX_DEPTH:
            fail(frame.node, f"{where(frame.path)}: nested deeper than {MAX_DEPTH} levels")


def _mapping_children(
    node: MappingNode, path: tuple[str, ...], source: str
) -> tuple[list[tuple[Node, tuple[str, ...]]], int]:
    """The collections among a mapping's values with the path to each, and the count of its
    keys and scalar values; its keys checked first (merge keys ``<<`` aside: the keys they
    bring may be overridden, as YAML means them)."""
    first: dict[str, int] = {}
    children: list[tuple[Node, tuple[str, ...]]] = []
    values = 1
    for key, value in node.value:
        values += 1
        if key.tag == _MERGE:
            children.append((value, path))
            continue
        if key.tag != _STR or not isinstance(key, ScalarNode):
            _bad_key(key, path, source)
        name = key.value
        if name in first:
            what = (
                f"pipeline {show(name)} is defined twice"
                if path == ("pipelines",)
                else f"{where((*path, name))}: given twice"
            )
            msg = f"{source}: line {key.start_mark.line + 1}: {what} (first at line {first[name]})"
            raise ConfigError(msg)
        first[name] = key.start_mark.line + 1
        if isinstance(value, ScalarNode):
            values += 1
        else:
            children.append((value, (*path, name)))
    return children, values


def _bad_key(key: Node, path: tuple[str, ...], source: str) -> None:
    at = f"{source}: line {key.start_mark.line + 1}: {where(path)}"
    if isinstance(key, ScalarNode):
        read_as = str(key.tag).rsplit(":", 1)[-1]
        article = "an" if read_as[:1] in "aeiou" else "a"
        msg = (
            f"{at}: key {show(key.value)[1:-1]} is not a string (YAML reads {article} {read_as};"
            " quote it)"
        )
    else:
        kind = "list" if isinstance(key, SequenceNode) else "mapping"
        msg = f"{at}: a key is a {kind}; keys are names"
    raise ConfigError(msg)
