"""References in spec text, `${params.NAME}`, `${run.date}`, `${run.id}`, and the escape `$${`.

One definition for the two places that read them: the spec checks (dagsmith.spec) and the
runtime that fills them in (dagsmith.runtime). Neither may import the other, so this module
imports nothing of dagsmith.

`$${` is a literal `${` in every text of a spec, one rule: in the texts filled in when a step runs
(paths and URIs, argv items, env values, SQL) the runtime fills each reference with its value and
writes `$${` as `${` (`substitute`, `rewrite_sql`); every other text (descriptions, model and
expectation arguments, backend options...) is filled in with nothing, so it is unescaped when the
spec is built (`literal`), and a reference in it stays as written.
In SQL a reference is never pasted: `rewrite_sql` turns it into a bound query parameter, from
the SQL's own tokens (sqlglot's DuckDB tokenizer): where a value stands it becomes `$p_NAME`;
inside a quoted string literal the literal becomes the parameter (`'${params.x}'` -> `$t_x`) or a
concatenation (`'a-${params.x}'` -> `('a-' || $t_x)`); in a comment it stays as written, unbound.
"""

from __future__ import annotations

import re
from bisect import bisect_right
from dataclasses import dataclass, field
from typing import Callable, Iterator

# `$${` (the escape: a literal `${`) or a reference `${...}`. At a `$$` the escape wins.
PATTERN = re.compile(r"\$\$\{|\$\{([^}]*)\}")
RUN_VALUES = ("run.date", "run.id")


@dataclass(frozen=True)
class Reference:
    """`${...}` at text[start:end]; `name` is what the braces hold, spaces removed."""

    start: int
    end: int
    name: str


def references(text: str) -> Iterator[Reference]:
    """Every reference in `text`, in order; `$${...}` (an escape) is not one."""
    for match in PATTERN.finditer(text):
        if match.group(1) is not None:
            yield Reference(match.start(), match.end(), match.group(1).strip())


def whole(text) -> str | None:
    """The name of the one reference `text` is made of (`${params.x}` -> "params.x"), or None
    when it is anything else (a number, other text around it, an escape): a value that is only
    a reference (a gate's threshold) takes the referenced value's type, not text."""
    if not isinstance(text, str):
        return None
    match = PATTERN.fullmatch(text)
    return match.group(1).strip() if match and match.group(1) is not None else None


def substitute(text: str, value: Callable[[str], object]) -> str:
    """`text` with each reference replaced by str(value(name)) and each `$${` by `${`."""
    if "${" not in text:
        return text
    return PATTERN.sub(lambda m: "${" if m.group(1) is None else str(value(m.group(1).strip())), text)


def literal(text: str) -> str:
    """A text nothing is filled in: `$${` as `${`, references as written (`substitute` without
    values). Applied once (when the spec is built): the result holds no escape any more."""
    if "$${" not in text:
        return text
    return PATTERN.sub(lambda m: "${" if m.group(1) is None else m.group(0), text)


def parameter_name(name: str) -> str:
    """The query parameter a reference is bound as: params.x -> p_x, run.date -> run_date."""
    if name.startswith("params."):
        return "p_" + re.sub(r"\W", "_", name[len("params."):])
    return re.sub(r"\W", "_", name)


def text_parameter_name(name: str) -> str:
    """The parameter of a reference inside a quoted literal whose value is not text (bound as
    its text): params.x -> t_x. Never the same as a parameter_name (p_..., run_...)."""
    return "t_" + parameter_name(name).removeprefix("p_")


# --- SQL ------------------------------------------------------------------------------------


class SqlSyntaxError(ValueError):
    """The SQL cannot be tokenized; `offset` is where, in the SQL as written in the spec."""

    def __init__(self, message: str, offset: int):
        super().__init__(message)
        self.offset = offset


@dataclass
class SqlReference:
    """One reference in a SQL text, and how it is bound."""

    index: int  # its order in the SQL
    name: str  # params.x, run.date...
    start: int  # offsets of `${...}` in the SQL as written
    end: int
    place: str = ""  # value | literal | comment | invalid
    problem: str | None = None  # why it cannot be bound where it stands (place == invalid)
    literal: str | None = None  # for place == literal: the literal's type keyword (DATE...), if any


@dataclass
class RewrittenSql:
    text: str  # the SQL to run: references as parameters
    references: list[SqlReference]
    _final: "_OffsetMap" = field(repr=False, default=None)  # type: ignore[assignment]
    _stage: "_OffsetMap" = field(repr=False, default=None)  # type: ignore[assignment]

    def source_offset(self, offset: int) -> int:
        """Where text[offset] comes from in the SQL as written (a character dagsmith added
        maps to the start of what it replaces)."""
        if self._final is None:
            return offset
        return self._stage.source(self._final.source(offset))

    @property
    def problems(self) -> list[SqlReference]:
        return [r for r in self.references if r.place == "invalid"]


class _OffsetMap:
    """Built piece by piece: each piece of the new text is a copy of the old one (positions map
    one to one) or added text (every position maps to one old offset)."""

    def __init__(self) -> None:
        self.parts: list[str] = []
        self.starts: list[int] = []  # start of each piece in the new text
        self.origins: list[tuple[int, bool]] = []  # (old offset, is a copy)
        self.length = 0

    def copy(self, text: str, start: int, end: int, escape: Callable[[str], str] | None = None) -> None:
        if end > start:
            piece = text[start:end]
            self._add(escape(piece) if escape else piece, start, escape is None)

    def put(self, piece: str, origin: int) -> None:
        if piece:
            self._add(piece, origin, False)

    def _add(self, piece: str, origin: int, exact: bool) -> None:
        self.parts.append(piece)
        self.starts.append(self.length)
        self.origins.append((origin, exact))
        self.length += len(piece)

    def text(self) -> str:
        return "".join(self.parts)

    def source(self, offset: int) -> int:
        index = bisect_right(self.starts, offset) - 1
        if index < 0:
            return offset
        origin, exact = self.origins[index]
        return origin + (offset - self.starts[index]) if exact else origin


# Literals a reference may stand in: their opening and closing delimiters are known.
_LITERALS = ("STRING", "NATIONAL_STRING", "HEREDOC_STRING")
_QUOTED_NAME = "IDENTIFIER"


def _tokenizer():
    from sqlglot.dialects.duckdb import DuckDB

    return DuckDB.tokenizer_class()  # cheap; one per call, so threads never share one


def tokenize(sql: str):
    """sqlglot's DuckDB tokens of `sql`; SqlSyntaxError when it cannot be tokenized."""
    from sqlglot.errors import TokenError

    try:
        return _tokenizer().tokenize(sql)
    except TokenError as exc:
        cause = str(exc.__cause__ or "")
        found = re.search(r"Missing (.+) from \d+:(\d+)$", cause)
        if found:
            raise SqlSyntaxError(f"SQL syntax error: missing the closing {found.group(1)}", int(found.group(2))) from None
        offset = exc.start + 50 if exc.start else 0  # sqlglot quotes 50 characters either side
        raise SqlSyntaxError(f"SQL syntax error: {cause or exc}", min(offset, max(len(sql) - 1, 0))) from None


def rewrite_sql(sql: str, name: Callable[[SqlReference], str], *, style: str = "duckdb") -> RewrittenSql:
    """The SQL with its references as bound parameters, and where each one stands.

    `name(reference)` gives the parameter's name. `style` is how parameters are written:
    "duckdb" (`$name`) or "sqlalchemy" (`:name`, every other colon escaped as `\\:` so that
    SQLAlchemy's text() binds only dagsmith's parameters). Raises SqlSyntaxError when the SQL
    cannot be tokenized; a reference that cannot be bound where it stands (a table or column
    name) has place "invalid" and a `problem` (see RewrittenSql.problems).
    """
    escape = (lambda s: s.replace(":", "\\:")) if style == "sqlalchemy" else None
    mark = ":" if style == "sqlalchemy" else "$"
    if "${" not in sql:  # nothing to bind, nothing to unescape
        return RewrittenSql(escape(sql) if escape else sql, [])
    refs: list[SqlReference] = []
    # Stage 1: every reference as a placeholder `$rN`, every `$${` as `${`, then the tokens.
    stage = _OffsetMap()
    spans: list[tuple[int, int]] = []  # each reference's placeholder in the stage-1 text
    last = 0
    for match in PATTERN.finditer(sql):
        stage.copy(sql, last, match.start())
        if match.group(1) is None:
            stage.copy(sql, match.start() + 1, match.end())
        else:
            ref = SqlReference(len(refs), match.group(1).strip(), match.start(), match.end())
            placeholder = f"$r{ref.index}"
            spans.append((stage.length, stage.length + len(placeholder)))
            stage.put(placeholder, match.start())
            refs.append(ref)
        last = match.end()
    stage.copy(sql, last, len(sql))
    text = stage.text()
    if not refs:
        if escape:
            return RewrittenSql(escape(text), [])
        out = RewrittenSql(text, [], _OffsetMap(), stage)
        out._final.copy(text, 0, len(text))
        return out
    try:
        tokens = tokenize(text)
    except SqlSyntaxError as exc:
        raise SqlSyntaxError(str(exc), stage.source(exc.offset)) from None
    starts = [t.start for t in tokens]
    in_literal: dict[int, list[int]] = {}  # token index -> the references inside it
    for ref, (start, end) in zip(refs, spans):
        index = bisect_right(starts, start) - 1
        token = tokens[index] if index >= 0 and tokens[index].end >= start else None
        kind = token.token_type.name if token is not None else None
        if token is None:
            ref.place = "comment"
        elif kind == "PARAMETER" and token.start == start:
            after = tokens[index + 1] if index + 1 < len(tokens) else None
            if after is not None and after.start == start + 1 and after.end == end - 1:
                ref.place = "value"
            else:
                ref.place, ref.problem = "invalid", "a reference must not be followed by a letter, digit or '_': add a space"
        elif kind in _LITERALS:
            ref.place = "literal"
            in_literal.setdefault(index, []).append(ref.index)
        elif kind == _QUOTED_NAME:
            ref.place, ref.problem = "invalid", (
                "a reference inside a quoted name (\"...\"): references are bound as values, never pasted "
                "into the SQL, so they cannot name a table or column")
        elif kind.endswith("STRING"):
            ref.place, ref.problem = "invalid", "a reference inside this kind of literal: write it in a plain '...' string"
        else:
            after = stage.source(token.end + 1) if token.end + 1 < len(text) else len(sql)
            word = sql[stage.source(token.start):after]
            ref.place, ref.problem = "invalid", (
                f"a reference as part of the word {word!r}: references are bound as values, never pasted "
                "into the SQL, so they cannot be part of a name or keyword")

    # Stage 2: the SQL to run, from the stage-1 text and its tokens.
    final = _OffsetMap()
    edits: list[tuple[int, int, Callable[[], None]]] = []  # stage-1 [start, end) -> writer
    for ref, (start, end) in zip(refs, spans):
        if ref.place == "value":
            edits.append((start, end, lambda r=ref, s=start: final.put(mark + name(r), s)))
        elif ref.place == "comment":
            edits.append((start, end, lambda r=ref, s=start: final.put(sql[r.start:r.end], s)))
    for index, members in in_literal.items():
        token = tokens[index]
        before = tokens[index - 1] if index > 0 else None
        typed = before is not None and _is_type_keyword(before, tokens[index - 2] if index > 1 else None)
        if typed:
            for member in members:
                refs[member].literal = before.text.upper()
        start = before.start if typed and before.token_type.name != "INTERVAL" else token.start
        edits.append((start, token.end + 1, lambda t=token, b=before if typed else None, m=members: _write_literal(
            final, text, t, b, [(refs[i], spans[i]) for i in m], mark, name, escape)))
    edits.sort(key=lambda e: e[0])
    last = 0
    for start, end, write in edits:
        final.copy(text, last, start, escape)
        write()
        last = end
    final.copy(text, last, len(text), escape)
    return RewrittenSql(final.text(), refs, final, stage)


def _is_type_keyword(token, previous) -> bool:
    """`DATE` in `DATE '2024-01-31'`, `INTERVAL` in `INTERVAL '3' DAY`: a typed literal."""
    from sqlglot.parser import Parser
    from sqlglot.tokens import TokenType

    if token.token_type == TokenType.INTERVAL:
        return True
    if token.token_type not in Parser.TYPE_TOKENS:
        return False
    # `x::DATE 'a'` and `AS DATE 'a'` are not typed literals; `t.date 'a'` is a column
    return previous is None or previous.token_type not in (TokenType.DCOLON, TokenType.DOT, TokenType.ALIAS)


def _write_literal(final: _OffsetMap, text: str, token, type_token, members, mark, name, escape) -> None:
    """A literal holding references, as a parameter or a concatenation (in parentheses):
    'a ${x} b' -> ('a ' || $x || ' b'); DATE '${x}' -> CAST($x AS DATE); INTERVAL '${x}' DAY ->
    INTERVAL ($x) DAY."""
    raw = text[token.start:token.end + 1]
    kind = token.token_type.name
    if kind == "HEREDOC_STRING":  # $tag$...$tag$
        opening = raw[: raw.index("$", 1) + 1]
        closing = opening
    else:  # '...', N'...'
        opening = raw[: raw.index(raw[-1]) + 1]
        closing = raw[-1]
    parts: list[Callable[[], None]] = []
    position = token.start + len(opening)
    content_end = token.end + 1 - len(closing)

    def literal(a: int, b: int) -> Callable[[], None]:
        def write() -> None:
            final.put(opening, a)
            final.copy(text, a, b, escape)
            final.put(closing, b)
        return write

    for ref, (start, end) in members:
        if start > position:
            parts.append(literal(position, start))
        parts.append(lambda r=ref, s=start: final.put(mark + name(r), s))
        position = end
    if content_end > position:
        parts.append(literal(position, content_end))
    interval = type_token is not None and type_token.token_type.name == "INTERVAL"
    wrap = len(parts) > 1 or interval
    if type_token is not None and not interval:
        final.put("CAST(", type_token.start)
    elif wrap:
        final.put("(", token.start)
    for number, write in enumerate(parts):
        if number:
            final.put(" || ", token.start)
        write()
    if type_token is not None and not interval:
        final.put(f" AS {type_token.text})", token.end)
    elif wrap:
        final.put(")", token.end)
