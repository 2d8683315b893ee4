"""YAML loading that remembers where every key and value came from.

PyYAML gives positions only on its node tree, keeps the last of two duplicate keys, and reads
YAML 1.1 (where ``on:`` is the boolean True and ``no`` is False). Specs need none of that: this
module composes the node tree with YAML 1.2-style booleans and no timestamps, rejects
duplicate keys, and converts it into ``YMap``/``YList`` (dict/list subclasses) that carry the
Mark of each of their items.
"""

from __future__ import annotations

import functools
import gc
import re
from pathlib import Path

import yaml
from yaml.nodes import MappingNode, ScalarNode, SequenceNode

from ..errors import Diagnostic, Mark, SpecError, format_path
from . import limits

_BOOL = "tag:yaml.org,2002:bool"
_TIMESTAMP = "tag:yaml.org,2002:timestamp"
MAX_EXPANDED_NODES = 1_000_000  # alias bombs ("billion laughs") stop here


class YMap(dict):
    """A mapping with the Mark of the mapping itself, of each key and of each value.

    A checked document (spec.checked_document) also carries the `warnings` its checks found.
    """

    warnings: tuple = ()

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


_INT = "tag:yaml.org,2002:int"
_FLOAT = "tag:yaml.org,2002:float"
MAX_NUMBER_LENGTH = 100  # characters; longer numbers are a mistake (and slow to convert)


class _Loader(yaml.SafeLoader):
    """SafeLoader reading YAML 1.2 core scalars: booleans are true/false only, no timestamps,
    numbers as in YAML 1.2 (010 is ten, 1e3 is a number, 1_000 and 1:30 are text)."""

    def construct_yaml_int(self, node):
        text = self.construct_scalar(node)
        if len(text) > MAX_NUMBER_LENGTH:
            raise ValueError("number too long")
        sign, digits = (-1, text[1:]) if text.startswith("-") else (1, text.lstrip("+"))
        if digits.startswith("0o"):
            return sign * int(digits[2:], 8)
        if digits.startswith("0x"):
            return sign * int(digits[2:], 16)
        return sign * int(digits, 10)


_Loader.add_constructor(_INT, _Loader.construct_yaml_int)
_Loader.yaml_implicit_resolvers = {
    first: [(tag, rx) for tag, rx in resolvers if tag not in (_BOOL, _TIMESTAMP, _INT, _FLOAT)]
    for first, resolvers in yaml.SafeLoader.yaml_implicit_resolvers.items()
}
_Loader.add_implicit_resolver(
    _BOOL, re.compile(r"^(?:true|True|TRUE|false|False|FALSE)$"), list("tTfF")
)
_Loader.add_implicit_resolver(
    _INT, re.compile(r"^(?:[-+]?[0-9]+|0o[0-7]+|0x[0-9a-fA-F]+)$"), list("-+0123456789")
)
_Loader.add_implicit_resolver(
    _FLOAT,
    re.compile(r"^(?:[-+]?(?:\.[0-9]+|[0-9]+(?:\.[0-9]*)?)(?:[eE][-+]?[0-9]+)?|[-+]?\.(?:inf|Inf|INF)|\.(?:nan|NaN|NAN))$"),
    list("-+0123456789."),
)


# libyaml's parser is ~4x faster than PyYAML's Python one. Specs are parsed with it when it is
# there; a document it rejects is parsed again with the Python parser, whose messages the error
# reporting is written for (so both paths report the same errors).
_FastLoader = None
if getattr(yaml, "__with_libyaml__", False):
    class _FastLoader(yaml.CSafeLoader):  # type: ignore[no-redef]
        construct_yaml_int = _Loader.construct_yaml_int

    _FastLoader.yaml_implicit_resolvers = _Loader.yaml_implicit_resolvers
    _FastLoader.yaml_constructors = dict(_Loader.yaml_constructors)
_NON_PRINTABLE = yaml.reader.Reader.NON_PRINTABLE


def describe(value) -> str:
    """How an error names a value: 'a list', "text 'gird'", 'an integer 2'."""
    if isinstance(value, dict):
        return "a mapping"
    if isinstance(value, list):
        return "a list"
    if value is None:
        return "null"
    kind = "a boolean" if isinstance(value, bool) else "an integer" if isinstance(value, int) else "a number" if isinstance(value, float) else "text"
    text = repr(value).lower() if isinstance(value, bool) else repr(value)
    return f"{kind} {text if len(text) <= 40 else text[:37] + '...'}"


def _mark(file: str, yaml_mark) -> Mark:
    return Mark(file, yaml_mark.line + 1, yaml_mark.column + 1)


def _error(file: str, yaml_mark, message: str, path: str = "") -> SpecError:
    """`yaml_mark` is PyYAML's (0-based) mark, or already a Mark."""
    mark = yaml_mark if isinstance(yaml_mark, Mark) else _mark(file, yaml_mark) if yaml_mark is not None else Mark(file, 1, 1)
    return SpecError([Diagnostic(mark, path, message)])


NEEDS = "a spec needs at least `dagsmith: 1` and `pipeline: {name: ...}`"
MAX_DEPTH = 100  # mappings/lists nested deeper than this are a mistake, not a pipeline

# PyYAML's wording for the mistakes people make most, in plain words.
_PLAIN_PROBLEMS = (
    ("found character '\\t' that cannot start any token", "a tab character: YAML indents with spaces, never tabs"),
    ("expected <block end>, but found", "bad indentation: this line does not line up with the lines above it"),
    ("mapping values are not allowed here", "unexpected ':' here: check this line's indentation, or quote a value that contains ': '"),
    ("but found another document", "a second YAML document ('---'): a spec file holds exactly one"),
)


def _yaml_message(exc: yaml.MarkedYAMLError) -> str:
    problem = exc.problem or ""
    for known, plain in _PLAIN_PROBLEMS:
        if known in problem:
            return plain
    match = re.match(r"found undefined alias '(.*)'$", problem)
    if match:
        return f"unknown alias *{match.group(1)}: define the anchor &{match.group(1)} before using it"
    match = re.match(r"found duplicate anchor '(.*)'; first occurrence$", exc.context or "")
    if match and exc.context_mark is not None:
        return f"anchor &{match.group(1)} is defined twice (first at line {exc.context_mark.line + 1})"
    match = re.match(r"could not determine a constructor for the tag '(.*)'$", problem)
    if match:
        tag = match.group(1).replace("tag:yaml.org,2002:", "!!")
        return f"unsupported tag {tag}: a spec holds plain values (text, numbers, true/false, lists, mappings)"
    context = exc.context or ""
    if context and exc.context_mark is not None and exc.problem_mark is not None and exc.context_mark.line != exc.problem_mark.line:
        context = f"{context} that starts at line {exc.context_mark.line + 1}"
    if problem and context:
        return f"{problem} ({context})"
    return problem or context or "invalid YAML"


def load_text(text: str, file: str):
    """Parse one YAML document into YMap/YList/scalars. Raises SpecError."""
    if not text.strip():
        raise SpecError([Diagnostic(Mark(file, 1, 1), "", f"the file is empty; {NEEDS}")])
    if _FastLoader is not None and not _NON_PRINTABLE.search(text):
        try:
            return _load(text, file, _FastLoader, fast=True)
        except yaml.YAMLError:
            pass  # the Python parser says what is wrong, in the words the errors expect
    return _load(text, file, _Loader)


def _load(text: str, file: str, loader_class, fast: bool = False):
    # Without the cyclic garbage collector while the nodes are built: they are all kept alive to
    # the end, so each collection walks every node built so far (a 50,000-step spec took 7 s to
    # parse with it, 1.8 s without). It is turned back on (if it was on) whatever happens.
    collecting = gc.isenabled()
    gc.disable()
    try:
        return _load_nodes(text, file, loader_class, fast)
    finally:
        if collecting:
            gc.enable()


def _load_nodes(text: str, file: str, loader_class, fast: bool):
    loader = None
    try:
        loader = loader_class(text)  # the Python reader checks for non-printable characters
        node = loader.get_single_node()
        if node is None:
            empty = not any(line.strip() and not line.lstrip().startswith("#") for line in text.splitlines())
            what = "the file has only comments" if empty else "the file has no YAML document"
            raise SpecError([Diagnostic(Mark(file, 1, 1), "", f"{what}; {NEEDS}")])
        _check_step_count(node, file)
        converter = _Converter(loader, file)
        document = converter.convert(node, ())
        if converter.problems:
            raise SpecError(converter.problems)
        if document is None:
            raise SpecError([Diagnostic(Mark(file, 1, 1), "", f"the document is empty; {NEEDS}")])
        return document
    except yaml.YAMLError as exc:
        if fast:
            raise
        raise _explain_yaml_error(exc, text, file) from None
    except RecursionError:
        raise SpecError([Diagnostic(Mark(file, 1, 1), "", f"the YAML is nested too deeply (more than {MAX_DEPTH} levels)")]) from None
    finally:
        if loader is not None:
            loader.dispose()


def _check_step_count(node, file: str) -> None:
    """The step limit, on the parsed nodes of one file: before the (slower) conversion. The merged
    document is checked again (spec/limits.py): includes add up."""
    if not isinstance(node, MappingNode):
        return
    total, largest = 0, None
    for key_node, value_node in node.value:
        if isinstance(key_node, ScalarNode) and key_node.value in limits.STEP_SECTIONS and isinstance(value_node, (MappingNode, SequenceNode)):
            total += len(value_node.value)
            if largest is None or len(value_node.value) > len(largest[1].value):
                largest = (key_node, value_node)
    if total > limits.MAX_STEPS:
        raise _error(file, largest[0].start_mark, limits.too_many_steps(total), largest[0].value)


def _explain_yaml_error(exc: yaml.YAMLError, text: str, file: str) -> SpecError:
    if isinstance(exc, yaml.MarkedYAMLError):
        return _error(file, exc.problem_mark or exc.context_mark, f"YAML syntax error: {_yaml_message(exc)}")
    if isinstance(exc, yaml.reader.ReaderError):  # a control character, or another non-printable one
        before = text[: exc.position]
        mark = Mark(file, before.count("\n") + 1, exc.position - (before.rfind("\n") + 1) + 1)
        what = f"#x{exc.character:04x}" if isinstance(exc.character, int) else repr(exc.character)
        return SpecError([Diagnostic(mark, "", f"YAML syntax error: unacceptable character {what}: control characters are not allowed")])
    return SpecError([Diagnostic(Mark(file, 1, 1), "", f"YAML error: {exc}")])


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


_MERGE = "tag:yaml.org,2002:merge"
_PLAIN_SCALARS = (str, int, float, bool, type(None))


class _Converter:
    def __init__(self, loader: _Loader, file: str):
        self.loader = loader
        self.file = file
        self.expanded = 0
        self.active: set[int] = set()  # nodes on the current path: a recursive alias loops
        self.merging: set[int] = set()  # mappings being merged (<<:) on the current path
        self.problems: list[Diagnostic] = []  # duplicate or non-text keys, all reported at once

    def _count(self, node) -> None:
        self.expanded += 1
        if self.expanded > MAX_EXPANDED_NODES:
            raise _error(self.file, node.start_mark, f"too many values after expanding aliases (more than {MAX_EXPANDED_NODES:,})")

    def convert(self, node, path: tuple, where=None):
        """`where` is the mark to blame for a recursive alias (the key or list item using it)."""
        self._count(node)
        if len(path) > MAX_DEPTH:
            raise _error(self.file, node.start_mark, f"nested too deeply (more than {MAX_DEPTH} levels)", format_path(path[:1]))
        if isinstance(node, ScalarNode):
            return self._scalar(node, path)
        if id(node) in self.active:
            raise _error(self.file, where or node.start_mark, "recursive alias: an anchor is used inside itself", format_path(path))
        default = "tag:yaml.org,2002:seq" if isinstance(node, SequenceNode) else "tag:yaml.org,2002:map"
        if node.tag != default:
            raise _error(self.file, node.start_mark, f"unsupported tag {_tag_name(node.tag)}: a spec holds plain values (text, numbers, true/false, lists, mappings)", format_path(path))
        self.active.add(id(node))
        try:
            if isinstance(node, SequenceNode):
                return self._sequence(node, path)
            if isinstance(node, MappingNode):
                return self._mapping(node, path)
        finally:
            self.active.discard(id(node))
        raise _error(self.file, node.start_mark, f"unsupported YAML node {node.tag}", format_path(path))

    def _scalar(self, node: ScalarNode, path: tuple):
        try:
            value = self.loader.construct_object(node, deep=True)
        except yaml.MarkedYAMLError:
            raise
        except Exception:  # e.g. `!!int abc`, `!!timestamp nope`: PyYAML raises plain exceptions
            raise _error(self.file, node.start_mark, f"cannot read {describe(node.value)[5:]} as {_tag_name(node.tag)}", format_path(path)) from None
        if not isinstance(value, _PLAIN_SCALARS):
            raise _error(self.file, node.start_mark, f"{_tag_name(node.tag)} values are not supported: write plain text, a number, true/false or null", format_path(path))
        if isinstance(value, str) and has_lone_surrogate(value):
            self.problems.append(Diagnostic(_mark(self.file, node.start_mark), format_path(path), SURROGATE_MESSAGE))
        return value

    def _sequence(self, node: SequenceNode, path: tuple) -> YList:
        out = YList(mark=_mark(self.file, node.start_mark))
        for index, item in enumerate(node.value):
            out.append(self.convert(item, path + (index,)))
            out.item_marks.append(_mark(self.file, item.start_mark))
        return out

    def _mapping(self, node: MappingNode, path: tuple) -> YMap:
        explicit = [(k, v) for k, v in node.value if k.tag != _MERGE]
        merged = self._merged(node, path)
        out = YMap(mark=_mark(self.file, node.start_mark))
        # Explicit keys first (a duplicate is an error), then merged ones that are not overridden.
        for index, (key_node, value_node) in enumerate(explicit + merged):
            from_merge = index >= len(explicit)
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
            out[key] = self.convert(value_node, path + (key,), where=_mark(self.file, key_node.start_mark))
            out.key_marks[key] = _mark(self.file, key_node.start_mark)
            out.value_marks[key] = _mark(self.file, value_node.start_mark)
        return out

    def _merged(self, node: MappingNode, path: tuple) -> list:
        """The (key, value) node pairs that `<<: *anchor` merges in, earlier merges first.

        PyYAML's flatten_mapping rewrites the node tree in place, which breaks an anchor that
        is used twice; this reads it without changing it.
        """
        out = []
        for key_node, value_node in node.value:
            if key_node.tag != _MERGE:
                continue
            sources = value_node.value if isinstance(value_node, SequenceNode) else [value_node]
            for source in sources:
                if not isinstance(source, MappingNode):
                    raise _error(self.file, source.start_mark, "<< merges a mapping or a list of mappings (e.g. <<: *defaults)", format_path(path))
                if id(source) in self.merging or id(source) in self.active:
                    raise _error(self.file, key_node.start_mark, "recursive merge: a mapping merges itself (<<:)", format_path(path))
                self.merging.add(id(source))
                try:
                    for pair in source.value:
                        self._count(pair[0])
                    out.extend((k, v) for k, v in source.value if k.tag != _MERGE)
                    out.extend(self._merged(source, path))
                finally:
                    self.merging.discard(id(source))
        return out

    def _key(self, key_node, path: tuple) -> str | None:
        where = format_path(path)
        if not isinstance(key_node, ScalarNode):
            self.problems.append(Diagnostic(_mark(self.file, key_node.start_mark), where, "a key must be plain text, not a list or mapping"))
            return None
        try:
            key = self.loader.construct_object(key_node)
        except yaml.MarkedYAMLError:
            raise
        except Exception:
            key = None
        if not isinstance(key, str):
            kinds = {bool: "a boolean", int: "an integer", float: "a number", type(None): "null"}
            kind = kinds.get(type(key)) if key is not None or key_node.tag.endswith(":null") else None
            self.problems.append(Diagnostic(
                _mark(self.file, key_node.start_mark), where,
                f"key {key_node.value} is read as {kind or _tag_name(key_node.tag)}, not text: quote it ('{key_node.value}')",
            ))
            return None
        if has_lone_surrogate(key):
            self.problems.append(Diagnostic(_mark(self.file, key_node.start_mark), format_path(path + (key,)), "this key " + SURROGATE_MESSAGE))
        return key


SURROGATE_MESSAGE = "contains a lone surrogate (a \\udXXX escape that is not a character): it cannot be written as UTF-8"


def has_lone_surrogate(text: str) -> bool:
    """A lone surrogate ('\\udc80', from a "\\udc80" escape) cannot be encoded as UTF-8."""
    return any("\ud800" <= char <= "\udfff" for char in text)


def _tag_name(tag: str) -> str:
    prefix = "tag:yaml.org,2002:"
    return "!!" + tag[len(prefix):] if tag.startswith(prefix) else tag



# --- positions inside a text value ------------------------------------------------------------


def text_position(mark: Mark, value: str, offset: int) -> Mark:
    """The file position of value[offset], for the text `value` whose YAML node starts at `mark`.

    Exact for every character that is not whitespace, in every scalar style: a block literal
    (`|`) or folded (`>`) scalar, plain, single- or double-quoted text, over several lines, with
    `''` and backslash escapes. A whitespace character (which folding may have made from a line
    break) maps to the position right after the character before it. Without the file (or when
    the node is not found there) the answer is `mark`, the start of the value.
    """
    found = _scalar_at(mark.file, mark.line, mark.column)
    if found is None:
        return mark
    text, node = found
    positions = _align(text, node, value)
    if positions is None or not 0 <= offset < len(positions):
        return mark
    index = positions[offset]
    line_start = text.rfind("\n", 0, index) + 1
    return Mark(mark.file, text.count("\n", 0, index) + 1, index - line_start + 1)


def _scalar_at(file: str, line: int, column: int):
    try:
        text = Path(file).read_bytes().decode("utf-8")
    except (OSError, UnicodeDecodeError):
        return None
    node = _scalars(text).get((line, column))
    return None if node is None else (text, node)


@functools.lru_cache(maxsize=8)
def _scalars(text: str) -> dict:
    """(line, column) -> ScalarNode for every scalar of a spec file's text; composed again only
    to place a message inside a value, so never on the way of a valid spec."""
    try:
        loader = _Loader(text)
        try:
            root = loader.get_single_node()
        finally:
            loader.dispose()
    except yaml.YAMLError:
        return {}
    out: dict = {}
    seen: set[int] = set()
    stack = [root] if root is not None else []
    while stack:
        node = stack.pop()
        if id(node) in seen:
            continue
        seen.add(id(node))
        if isinstance(node, ScalarNode):
            out[(node.start_mark.line + 1, node.start_mark.column + 1)] = node
        elif isinstance(node, SequenceNode):
            stack.extend(node.value)
        elif isinstance(node, MappingNode):
            for key, item in node.value:
                stack.extend((key, item))
    return out


_SPACE = " \t\r\n"


def _align(text: str, node: ScalarNode, value: str) -> list[int] | None:
    """For each character of `value`, its index in `text`; None when they do not match."""
    style = node.style
    start = node.start_mark.index
    if style in ("|", ">"):
        start = text.find("\n", start) + 1  # the content starts after the header line
        if start == 0:
            return None
    elif style in ("'", '"'):
        start += 1
    end = node.end_mark.index
    out: list[int] = []
    j = start
    for char in value:
        if char in _SPACE:
            out.append(min(j, end))
            continue
        while True:
            while j < end and text[j] in _SPACE:
                j += 1
            if j >= end:
                return None
            if style == '"' and text[j] == "\\":
                produced, width = _escape(text, j)
                if produced is None:
                    return None
                if produced == "" or produced in _SPACE:
                    j += width
                    continue
            elif style == "'" and text[j] == "'":
                produced, width = "'", 2
            else:
                produced, width = text[j], 1
            if produced != char:
                return None
            out.append(j)
            j += width
            break
    return out


def _escape(text: str, j: int) -> tuple[str | None, int]:
    """The character a double-quoted escape at text[j] stands for ("" for a line continuation),
    and how many characters it takes."""
    code = text[j + 1: j + 2]
    if code in ("\r", "\n"):
        return "", 1  # the line break itself is skipped as space
    if code in yaml.scanner.Scanner.ESCAPE_REPLACEMENTS:
        return yaml.scanner.Scanner.ESCAPE_REPLACEMENTS[code], 2
    if code in yaml.scanner.Scanner.ESCAPE_CODES:
        length = yaml.scanner.Scanner.ESCAPE_CODES[code]
        try:
            return chr(int(text[j + 2: j + 2 + length], 16)), 2 + length
        except ValueError:
            return None, 0
    return None, 0
