"""SQL checked at validate time, without running it: a feature's `sql` and a sql source's `query`
are parsed with sqlglot's DuckDB dialect (pure Python; imported only when a spec has SQL).

- A syntax error is placed at the offending token, at its line and column in the YAML file, also
  inside a block scalar (yamlpos.text_position).
- The SQL is parsed as it runs: every reference rewritten into a bound parameter the way the
  runtime does it (dagsmith.references.rewrite_sql), so what passes here is what DuckDB gets.
- A reference is checked where it stands: never as a table, column or alias name (it is bound as
  a value), an integer where a row count goes (LIMIT, OFFSET, FETCH), parenthesized after
  INTERVAL; a query parameter dagsmith does not set (`$1`, `?`, `$name`) is an error.
- A feature reads only its `inputs` (table references, CTE names excepted); an input it never
  reads is a warning.
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from functools import lru_cache

from .. import references
from ..errors import did_you_mean


@dataclass(frozen=True)
class Finding:
    offset: int  # in the SQL as written
    message: str
    hint: str | None = None
    level: str = "error"


@dataclass(frozen=True)
class Analysis:
    findings: tuple[Finding, ...] = ()
    tables: tuple[tuple[str, int], ...] = ()  # (table name as written, offset) the SQL reads
    parsed: bool = False  # False after a syntax error: no table list


_ROW_COUNTS = {"Limit": "LIMIT", "Offset": "OFFSET", "Fetch": "FETCH"}
_NAME_SLOTS = {  # parent expression type -> what stands there
    "Table": "a table name", "TableAlias": "an alias", "Column": "a column name", "Dot": "a name",
    "Alias": "an alias", "CTE": "a name",
}


def analyze(sql: str, param_types: dict[str, str]) -> Analysis:
    """Problems in one SQL text (offsets in it), and the tables it reads."""
    return _analyze(sql, tuple(sorted(param_types.items())))


@lru_cache(maxsize=512)  # the spec and each environment usually share their SQL
def _analyze(sql: str, param_types: tuple[tuple[str, str], ...]) -> Analysis:
    from sqlglot import exp
    from sqlglot.dialects.dialect import Dialect
    from sqlglot.errors import ParseError

    types = dict(param_types)
    findings: list[Finding] = []
    try:
        rewritten = references.rewrite_sql(sql, lambda ref: f"dagsmith_ref_{ref.index}")
    except references.SqlSyntaxError as exc:
        return Analysis((Finding(exc.offset, str(exc)),))
    refs = rewritten.references
    for ref in rewritten.problems:
        findings.append(Finding(ref.start, f"${{{ref.name}}}: {ref.problem}"))
    text = rewritten.text
    try:
        tokens = references.tokenize(text)
    except references.SqlSyntaxError as exc:
        return Analysis(tuple(findings) + (Finding(rewritten.source_offset(exc.offset), str(exc)),))
    by_index = {f"dagsmith_ref_{ref.index}": ref for ref in refs}
    starts = {ref.start for ref in refs}  # a reference that cannot be bound is reported already
    for token in tokens:
        if token.token_type.name not in ("PARAMETER", "PLACEHOLDER"):
            continue
        shown = "?" if token.token_type.name == "PLACEHOLDER" else _parameter_text(text, token)
        if shown[1:] in by_index or rewritten.source_offset(token.start) in starts:
            continue
        findings.append(Finding(
            rewritten.source_offset(token.start),
            f"query parameter '{shown}' has no value: dagsmith binds only its own references; write ${{params.NAME}}",
        ))
    try:
        parser = Dialect.get_or_raise("duckdb").parser(error_message_context=len(text) + 1)
        statements = [s for s in parser.parse(tokens, text) if s is not None]
    except ParseError as exc:
        error = exc.errors[0] if exc.errors else {}
        start = len(error.get("start_context") or "")
        findings.append(Finding(rewritten.source_offset(start), _syntax_message(error, str(exc))))
        return Analysis(tuple(findings))
    except Exception as exc:  # sqlglot's own failure is no reason to reject the spec
        findings.append(Finding(0, f"the SQL could not be checked (sqlglot: {type(exc).__name__}: {exc})", level="warning"))
        return Analysis(tuple(findings))

    ctes: set[str] = set()
    tables: list[tuple[str, int]] = []
    for statement in statements:
        for node in statement.walk():
            if isinstance(node, exp.CTE) and node.alias:
                ctes.add(node.alias.lower())
    for statement in statements:
        for node in statement.walk():
            if isinstance(node, exp.Placeholder):
                ref = by_index.get(node.name)
                if ref is not None:
                    problem = _misplaced(node, ref, types, exp)
                    if problem:
                        findings.append(Finding(ref.start, problem))
            elif isinstance(node, exp.Table) and isinstance(node.this, exp.Identifier):
                name = ".".join(part.name for part in node.parts)
                if not node.args.get("db") and not node.args.get("catalog") and node.name.lower() in ctes:
                    continue
                start = node.this.meta.get("start")
                first = node.parts[0].meta.get("start", start) if node.parts else start
                tables.append((name, rewritten.source_offset(first if first is not None else 0)))
    return Analysis(tuple(findings), tuple(tables), True)


def _parameter_text(text: str, token) -> str:
    match = re.match(r"\$\w*", text[token.start:])
    return match.group(0) if match else "$"


def _misplaced(node, ref: references.SqlReference, types: dict[str, str], exp) -> str | None:
    """Why the reference `ref` (the Placeholder `node`) cannot stand where it does, or None."""
    written = f"${{{ref.name}}}"
    parent, child = node.parent, node
    while isinstance(parent, exp.Paren):
        parent, child = parent.parent, parent
    kind = type(parent).__name__ if parent is not None else ""
    if kind in _NAME_SLOTS and not (kind == "Alias" and child.arg_key == "this"):
        return (f"{written} stands where {_NAME_SLOTS[kind]} goes: a reference is bound as a value, never pasted "
                "into the SQL, so it cannot name a table, column or alias")
    if kind in _ROW_COUNTS and child.arg_key in ("expression", "count"):
        what = _type_of(ref, types)
        if what is not None and what != "integer":
            quoted = " (it is in quotes: text)" if ref.place == "literal" else ""
            return f"{_ROW_COUNTS[kind]} takes a row count, but {written} is {_article(what)} {what}{quoted}; use an integer parameter"
    if kind == "Interval" and child is node and ref.place == "value":
        return f"write INTERVAL ({written}) with parentheses: DuckDB reads a parameter after INTERVAL only in parentheses"
    return None


def _type_of(ref: references.SqlReference, types: dict[str, str]) -> str | None:
    if ref.place == "literal" and ref.literal is None:
        return "string"
    if ref.name in references.RUN_VALUES:
        return "string"
    if ref.name.startswith("params."):
        return types.get(ref.name[len("params."):])
    return None


def _article(word: str) -> str:
    return "an" if word[:1] in "aeiou" else "a"


def _syntax_message(error: dict, fallback: str) -> str:
    description = error.get("description") or fallback.split("\n")[0]
    description = re.sub(r"<class '(?:[\w]+\.)*(\w+)'>", r"\1", description).rstrip(".")
    description = re.sub(r"<Token token_type: TokenType\.\w+, text: (.*?), line: .*?>", lambda m: repr(m.group(1)), description)
    missing = re.match(r"Required keyword: '(\w+)' missing for (\w+)", description)
    if missing:
        description = f"incomplete expression ({missing.group(2)} without its '{missing.group(1)}')"
    near = (error.get("highlight") or "").strip()
    return f"SQL syntax error at {near!r}: {description}" if near else f"SQL syntax error: {description}"


# --- the checks of one spec ----------------------------------------------------------------------


def check(doc) -> list[tuple[tuple, int | None, str, str | None, str]]:
    """Every SQL of a checked document: features' `sql`, sql sources' `query`."""
    params = {name: p.get("type") for name, p in doc.get("params", {}).items() if isinstance(p, dict)}
    names = list(doc.get("sources", {})) + list(doc.get("features", {}))
    names += [o for step in doc.get("steps", {}).values() for o in step.get("outputs", []) if isinstance(o, str)]
    out: list[tuple[tuple, int | None, str, str | None, str]] = []
    for name, source in doc.get("sources", {}).items():
        if source.get("type") == "sql" and isinstance(source.get("query"), str):
            path = ("sources", name, "query")
            for finding in analyze(source["query"], params).findings:
                out.append((path, finding.offset, finding.message, finding.hint, finding.level))
    for name, feature in doc.get("features", {}).items():
        if not isinstance(feature.get("sql"), str):
            continue
        path = ("features", name, "sql")
        analysis = analyze(feature["sql"], params)
        for finding in analysis.findings:
            out.append((path, finding.offset, finding.message, finding.hint, finding.level))
        if analysis.parsed:
            out.extend(_check_inputs(name, feature.get("inputs", []), analysis.tables, names))
    return out


def _check_inputs(name: str, inputs: list, tables, names: list[str]):
    declared = {i.lower(): i for i in inputs if isinstance(i, str)}
    read: set[str] = set()
    for table, offset in tables:
        key = table.lower()
        if key in declared:
            read.add(key)
            continue
        listing = ", ".join(inputs) if inputs else "none"
        path = ("features", name, "sql")
        other = next((n for n in names if n.lower() == key), None)
        if other is not None and other != name:
            yield (path, offset, f"reads '{table}', which is not one of its inputs ({listing}): add '{other}' to inputs", None, "error")
        else:
            hint = did_you_mean(table, list(declared.values())) or did_you_mean(table, [n for n in names if n != name])
            yield (path, offset, f"reads table '{table}', which is not one of its inputs ({listing})", hint, "error")
    for index, item in enumerate(inputs):
        if isinstance(item, str) and item.lower() not in read and item != name:
            yield (("features", name, "inputs", index), None, f"input '{item}' is never read by the SQL", None, "warning")
