"""YAML loading that remembers where every key and value came from.

PyYAML gives positions only on its node tree, keeps the last of two duplicate keys, and reads
YAML 1.1 (where ``on:`` is the boolean True and ``no`` is False). Specs need none of that: this
module composes the node tree with YAML 1.2-style booleans and no timestamps, rejects
duplicate keys, and converts it into ``YMap``/``YList`` (dict/list subclasses) that carry the
Mark of each of their items.
"""

from __future__ import annotations

import re
from pathlib import Path

import yaml
from yaml.nodes import MappingNode, ScalarNode, SequenceNode

from ..errors import Diagnostic, Mark, SpecError, format_path

_BOOL = "tag:yaml.org,2002:bool"
_TIMESTAMP = "tag:yaml.org,2002:timestamp"
MAX_EXPANDED_NODES = 1_000_000  # alias bombs ("billion laughs") stop here


class YMap(dict):
    """A mapping with the Mark of the mapping itself, of each key and of each value."""

    def __init__(self, *args, mark: Mark | None = None, **kwargs):
        super().__init__(*args, **kwargs)
        self.mark = mark
        self.key_marks: dict = {}
        self.value_marks: dict = {}


class YList(list):
    """A sequence with the Mark of the sequence and of each item."""

    def __init__(self, *args, mark: Mark | None = None):
        super().__init__(*args)
        self.mark = mark
        self.item_marks: list = []


class _Loader(yaml.SafeLoader):
    """SafeLoader with YAML 1.2 booleans (true/false only) and no implicit timestamps."""


_Loader.yaml_implicit_resolvers = {
    first: [(tag, rx) for tag, rx in resolvers if tag not in (_BOOL, _TIMESTAMP)]
    for first, resolvers in yaml.SafeLoader.yaml_implicit_resolvers.items()
}
_Loader.add_implicit_resolver(
    _BOOL, re.compile(r"^(?:true|True|TRUE|false|False|FALSE)$"), list("tTfF")
)


def _mark(file: str, yaml_mark) -> Mark:
    return Mark(file, yaml_mark.line + 1, yaml_mark.column + 1)


def _error(file: str, yaml_mark, message: str, path: str = "") -> SpecError:
    mark = _mark(file, yaml_mark) if yaml_mark is not None else Mark(file, 1, 1)
    return SpecError([Diagnostic(mark, path, message)])


def load_text(text: str, file: str):
    """Parse one YAML document into YMap/YList/scalars. Raises SpecError."""
    loader = _Loader(text)
    try:
        node = loader.get_single_node()
        if node is None:
            raise SpecError([Diagnostic(Mark(file, 1, 1), "", "the file is empty")])
        converter = _Converter(loader, file)
        document = converter.convert(node, ())
        if converter.problems:
            raise SpecError(converter.problems)
        return document
    except yaml.MarkedYAMLError as exc:
        where = exc.problem_mark or exc.context_mark
        message = exc.problem or exc.context or "invalid YAML"
        if exc.problem and exc.context:
            message = f"{exc.problem} ({exc.context})"
        raise _error(file, where, f"YAML syntax error: {message}") from None
    except yaml.YAMLError as exc:  # e.g. a reader error: non-printable characters
        raise SpecError([Diagnostic(Mark(file, 1, 1), "", f"YAML error: {exc}")]) from None
    finally:
        loader.dispose()


def load_file(path: Path, display: str):
    """Read and parse a spec file; `display` is how errors name it."""
    try:
        data = path.read_bytes()
    except OSError as exc:
        raise SpecError([Diagnostic(Mark(display, 1, 1), "", f"cannot read file: {exc.strerror}")]) from None
    try:
        text = data.decode("utf-8")
    except UnicodeDecodeError as exc:
        raise SpecError([Diagnostic(Mark(display, 1, 1), "", f"not UTF-8 text ({exc.reason} at byte {exc.start})")]) from None
    return load_text(text, display)


class _Converter:
    def __init__(self, loader: _Loader, file: str):
        self.loader = loader
        self.file = file
        self.expanded = 0
        self.active: set[int] = set()  # nodes on the current path: a recursive alias loops
        self.problems: list[Diagnostic] = []  # duplicate or non-text keys, all reported at once

    def convert(self, node, path: tuple):
        self.expanded += 1
        if self.expanded > MAX_EXPANDED_NODES:
            raise _error(self.file, node.start_mark, "too many nodes after expanding aliases")
        if isinstance(node, ScalarNode):
            return self.loader.construct_object(node, deep=True)
        if id(node) in self.active:
            raise _error(self.file, node.start_mark, "recursive alias (an anchor used inside itself)")
        self.active.add(id(node))
        try:
            if isinstance(node, SequenceNode):
                return self._sequence(node, path)
            if isinstance(node, MappingNode):
                return self._mapping(node, path)
        finally:
            self.active.discard(id(node))
        raise _error(self.file, node.start_mark, f"unsupported YAML node {node.tag}")

    def _sequence(self, node: SequenceNode, path: tuple) -> YList:
        out = YList(mark=_mark(self.file, node.start_mark))
        for index, item in enumerate(node.value):
            out.append(self.convert(item, path + (index,)))
            out.item_marks.append(_mark(self.file, item.start_mark))
        return out

    def _mapping(self, node: MappingNode, path: tuple) -> YMap:
        explicit = [(k, v) for k, v in node.value if k.tag != "tag:yaml.org,2002:merge"]
        self.loader.flatten_mapping(node)  # resolves YAML merge keys (<<: *base) into node.value
        merged = node.value[: len(node.value) - len(explicit)]
        out = YMap(mark=_mark(self.file, node.start_mark))
        # Explicit keys first (a duplicate is an error), then merged ones that are not overridden.
        for key_node, value_node in explicit + merged:
            from_merge = len(out.key_marks) >= len(explicit)
            key = self._key(key_node, path)
            if key is None:
                continue
            if key in out.key_marks:
                if not from_merge:
                    first = out.key_marks[key]
                    self.problems.append(Diagnostic(
                        _mark(self.file, key_node.start_mark), format_path(path + (key,)),
                        f"duplicate key '{key}' (first defined at line {first.line})",
                    ))
                continue
            out[key] = self.convert(value_node, path + (key,))
            out.key_marks[key] = _mark(self.file, key_node.start_mark)
            out.value_marks[key] = _mark(self.file, value_node.start_mark)
        return out

    def _key(self, key_node, path: tuple) -> str | None:
        where = format_path(path)
        if not isinstance(key_node, ScalarNode):
            self.problems.append(Diagnostic(_mark(self.file, key_node.start_mark), where, "a key must be plain text, not a list or mapping"))
            return None
        key = self.loader.construct_object(key_node)
        if not isinstance(key, str):
            self.problems.append(Diagnostic(_mark(self.file, key_node.start_mark), where, f"key {key_node.value!r} must be text: quote it"))
            return None
        return key
