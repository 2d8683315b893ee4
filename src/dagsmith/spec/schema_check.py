"""Check a raw spec document against schema/pipeline.schema.json and explain each error.

jsonschema's own messages ("Additional properties are not allowed ('trainig' was unexpected)")
are rewritten into one short sentence per problem, placed at the offending key or value, with a
"did you mean" where a known key or value is close.
"""

from __future__ import annotations

import json
import math
import re
from functools import lru_cache
from importlib import resources

from jsonschema import Draft202012Validator, validators
from jsonschema.exceptions import ValidationError, best_match

from ..errors import Diagnostic, did_you_mean, format_path
from .document import locate
from .values import check_function_ref, parse_duration, parse_quantity
from .yamlpos import YMap, describe

_EXPECTED = {"object": "a mapping", "array": "a list", "string": "text", "integer": "an integer", "number": "a number", "boolean": "true or false", "null": "null"}


@lru_cache(maxsize=1)
def pipeline_schema() -> dict:
    text = resources.files("dagsmith.schema").joinpath("pipeline.schema.json").read_text(encoding="utf-8")
    return json.loads(text)


@lru_cache(maxsize=1)
def _validator() -> Draft202012Validator:
    # JSON Schema counts 2.0 as an integer; a spec may not: `samples: 5.0` would reach the IR
    # and every backend as a float. An integer here is a Python int (and never a bool).
    strict = Draft202012Validator.TYPE_CHECKER.redefine(
        "integer", lambda checker, value: isinstance(value, int) and not isinstance(value, bool)
    )
    validator_class = validators.extend(Draft202012Validator, type_checker=strict)
    return validator_class(pipeline_schema())


def check(doc: YMap) -> list[Diagnostic]:
    """Every schema problem of the document, each with its position."""
    problems = list(_non_finite(doc, doc, ()))
    for error in _validator().iter_errors(doc):
        problems.extend(_explain(error, doc))
    return _without_echoes(problems)


def check_environments(raw: YMap) -> list[Diagnostic]:
    """The `environments` section itself (names, one mapping each), which the merged document
    no longer has: its overlays are checked as part of the spec they make, with --env."""
    if "environments" not in raw:
        return []
    schema = {"type": "object", "properties": {"environments": pipeline_schema()["properties"]["environments"]}}
    validator = type(_validator())(schema)
    out = []
    for error in validator.iter_errors({"environments": raw["environments"]}):
        path = tuple(error.absolute_path)
        if error.validator == "type" and len(path) == 2:  # worded as apply_environment does, so --env agrees
            out.append(Diagnostic(locate(raw, path), format_path(path), f"an environment must be a mapping of spec sections, got {_describe(error.instance)}"))
        else:
            out.extend(_explain(error, raw))
    return out


def _without_echoes(problems: list[Diagnostic]) -> list[Diagnostic]:
    """Drop "missing required key 'uri'" when the same mapping has 'urI' with "did you mean 'uri'?"."""
    hinted = {
        (d.path.rpartition(".")[0] if "." in d.path else "", d.hint)
        for d in problems if d.hint and d.message.startswith("unknown key ")
    }
    return [
        d for d in problems
        if not (d.message.startswith("missing required key '")
                and (d.path, f"did you mean '{d.message.split(chr(39))[1]}'?") in hinted)
    ]


def _non_finite(doc, node, path: tuple):
    """NaN and infinity are never valid thresholds or values (and have no JSON form)."""
    if isinstance(node, float) and not math.isfinite(node):
        written = ".nan" if node != node else ".inf" if node > 0 else "-.inf"
        yield Diagnostic(locate(doc, path), format_path(path), f"{written} is not a finite number")
    elif isinstance(node, dict):
        for key, value in node.items():
            yield from _non_finite(doc, value, path + (key,))
    elif isinstance(node, list):
        for index, value in enumerate(node):
            yield from _non_finite(doc, value, path + (index,))


_describe = describe

# Operators people write for the ones a gate takes.
_OPERATOR_SYNONYMS = {"=": "==", "=>": ">=", "=<": "<=", "≥": ">=", "≤": "<=", "gte": ">=", "ge": ">=", "gt": ">",
                      "lte": "<=", "le": "<=", "lt": "<", "eq": "=="}


def _enum_hint(value, options: list) -> str | None:
    texts = [o for o in options if isinstance(o, str)]
    if isinstance(value, str) and texts:
        synonym = _OPERATOR_SYNONYMS.get(value.strip().lower())
        if synonym in texts:
            return f"did you mean '{synonym}'?"
    return did_you_mean(value, texts)


def _name_hint(value: str, allowed: str, transform) -> str | None:
    """A corrected spelling of a name that failed its pattern, when one is obvious."""
    fixed = transform(value)
    return f"did you mean '{fixed}'?" if fixed and fixed != value and re.fullmatch(allowed, fixed) else None


_NAME_RULE = "use a letter, then letters, digits, '_' or '-'"
_ENV_RULE = "use letters, digits and '_', not starting with a digit"
# pattern -> (what the value is, the rule in words, a fix-up for the did-you-mean or None)
_PATTERNS = {
    "^[A-Za-z][A-Za-z0-9_-]*$": ("name", _NAME_RULE, lambda v: re.sub(r"[^A-Za-z0-9_-]+", "_", v.strip()).strip("_")),
    "^[a-z0-9]([a-z0-9-]*[a-z0-9])?$": ("pipeline name", "use lowercase letters, digits and '-' (not first or last)",
                                         lambda v: re.sub(r"[^a-z0-9]+", "-", v.lower()).strip("-")),
    "^[A-Za-z_][A-Za-z0-9_]*$": ("name", _ENV_RULE, lambda v: re.sub(r"[^A-Za-z0-9_]+", "_", v.strip()).strip("_")),
    "^[A-Za-z0-9][A-Za-z0-9_.-]*$": ("model name", "use letters, digits, '_', '.' or '-', starting with a letter or digit", None),
    "^[A-Za-z0-9][A-Za-z0-9_-]*$": ("environment name", "use a letter or digit, then letters, digits, '_' or '-'", None),
    "^[A-Za-z0-9_.-]+$": ("DAG id", "use letters, digits, '_', '.' or '-'", lambda v: re.sub(r"[^A-Za-z0-9_.-]+", "_", v.strip()).strip("_")),
    "^arn:": ("role ARN", "expected arn:aws:iam::ACCOUNT:role/NAME", None),
}


def _pattern_problem(value, pattern: str, path: tuple) -> tuple[str, str | None]:
    """(message, hint) for a value that does not match `pattern` at spec path `path`."""
    last = path[-1] if path else ""
    full = pattern
    pattern = pattern.removesuffix("(?!\\n)")  # the published patterns end "$(?!\n)": see scripts/build_schema.py
    if ":" in pattern and pattern.endswith("*$") and pattern.startswith("^[A-Za-z_]"):  # a function reference
        try:
            check_function_ref(value)
        except ValueError as exc:
            return str(exc), getattr(exc, "hint", None)
        return f"{_quoted(value)} is not a function reference like package.module:function", None
    what, rule, fix = _PATTERNS.get(pattern, ("value", f"expected text matching {pattern}", None))
    if last == "connection":
        what, rule = "connection", "a connection is a NAME (a letter, then letters, digits, '_' or '-'), never a URL; each backend looks up its address and credentials"
    elif pattern == "^[A-Za-z][A-Za-z0-9_-]*$" and (len(path) == 2 or path[-1:] == ("name",)):
        kinds = {"sources": "source", "features": "feature", "steps": "step", "validation": "validation", "predict": "predict"}
        what = f"{kinds[path[0]]} name" if path[0] in kinds else what
    elif pattern == "^[A-Za-z_][A-Za-z0-9_]*$" and path[:2] == ("evaluation", "metrics"):
        what, rule = "metric name", "use letters, digits and '_', not starting with a digit (gates refer to it)"
    elif pattern == "^[A-Za-z_][A-Za-z0-9_]*$":
        what = "parameter name" if path[:1] == ("params",) and len(path) == 2 else "secret name" if "secrets" in path else "environment variable name"
    hint = _name_hint(value, full, fix) if fix and isinstance(value, str) else None
    return f"invalid {what} {_quoted(value)}: {rule}", hint


def _quoted(value) -> str:
    text = repr(value)
    return text if len(text) <= 60 else text[:57] + "..."


def _explain(error: ValidationError, doc) -> list[Diagnostic]:
    path = tuple(error.absolute_path)
    where = format_path(path)
    kind = error.validator
    schema = error.schema if isinstance(error.schema, dict) else {}

    if kind in ("anyOf", "oneOf"):
        return _explain_choice(error, doc)
    if kind == "additionalProperties":
        allowed = list(schema.get("properties", {}))
        out = []
        for key in error.instance:
            if key in allowed or (schema.get("patternProperties") and key.startswith("x-")):
                continue
            hint = did_you_mean(key, allowed)
            listing = "" if hint else f" (allowed: {', '.join(sorted(allowed))})" if allowed and len(allowed) <= 16 else ""
            out.append(Diagnostic(locate(doc, path + (key,), key=True), format_path(path + (key,)), f"unknown key '{key}'{listing}", hint))
        return out
    if kind == "required":
        missing = error.message.split("'")[1] if error.message.startswith("'") else str(error.validator_value)
        return [Diagnostic(locate(doc, path, key=True), where, f"missing required key '{missing}'")]
    if kind == "propertyNames":
        return [_explain_name(error, doc)]
    if kind == "type":
        expected = error.validator_value if isinstance(error.validator_value, list) else [error.validator_value]
        wanted = " or ".join(_EXPECTED.get(t, t) for t in expected)
        return [Diagnostic(locate(doc, path), where, f"expected {wanted}, got {_describe(error.instance)}")]
    if kind == "enum":
        # YAML's null is one option where `null` means "none" (sources' on_bad_value: null): shown once
        options = list(dict.fromkeys("null" if o is None else o for o in error.validator_value))
        hint = _enum_hint(error.instance, options)
        listing = ", ".join(str(o) for o in options)
        return [Diagnostic(locate(doc, path), where, f"must be one of: {listing}; got {_describe(error.instance)}", hint)]
    if kind == "const":
        if path == ("dagsmith",):
            if isinstance(error.instance, int) and not isinstance(error.instance, bool):
                return [Diagnostic(locate(doc, path), where, f"unsupported spec version {error.instance}: this dagsmith reads `dagsmith: {error.validator_value}`")]
            return [Diagnostic(locate(doc, path), where, f"the spec version must be the number {error.validator_value}, got {_describe(error.instance)}")]
        return [Diagnostic(locate(doc, path), where, f"must be {error.validator_value!r}, got {_describe(error.instance)}")]
    if kind == "pattern":
        if "propertyNames" in error.absolute_schema_path and isinstance(error.instance, str):
            # A bad key of a mapping (a source name, an env variable...): point at that key.
            key_path = path + (error.instance,)
            message, hint = _pattern_problem(error.instance, error.validator_value, key_path)
            return [Diagnostic(locate(doc, key_path, key=True), format_path(key_path), message, hint)]
        message, hint = _pattern_problem(error.instance, error.validator_value, path)
        return [Diagnostic(locate(doc, path), where, message, hint)]
    if kind == "maxLength":
        return [Diagnostic(locate(doc, path), where, f"too long: {len(error.instance)} characters, at most {error.validator_value}")]
    if kind in ("minimum", "maximum", "exclusiveMinimum", "exclusiveMaximum"):
        op = {"minimum": ">=", "maximum": "<=", "exclusiveMinimum": ">", "exclusiveMaximum": "<"}[kind]
        return [Diagnostic(locate(doc, path), where, f"must be {op} {error.validator_value}, got {error.instance!r}")]
    if kind == "minItems":
        return [Diagnostic(locate(doc, path), where, "must not be empty" if error.validator_value == 1 else f"needs at least {error.validator_value} items")]
    if kind == "minProperties":
        return [Diagnostic(locate(doc, path), where, "must not be empty")]
    if kind == "maxProperties":
        return [Diagnostic(locate(doc, path), where, f"must have at most {error.validator_value} key(s); write one per list item")]
    if kind == "uniqueItems":
        items = error.instance if isinstance(error.instance, list) else []
        for index, item in enumerate(items):
            if any(_same(item, earlier) for earlier in items[:index]):
                first = next(i for i, earlier in enumerate(items) if _same(item, earlier))
                what = _quoted(item) if isinstance(item, (str, int, float)) else _describe(item)
                return [Diagnostic(locate(doc, path + (index,)), format_path(path + (index,)), f"duplicate item {what} (also at index {first})")]
        return [Diagnostic(locate(doc, path), where, "has duplicate items")]
    return [Diagnostic(locate(doc, path), where, error.message)]


def _explain_choice(error: ValidationError, doc) -> list[Diagnostic]:
    """anyOf/oneOf: explain the branch that got furthest, or say what was expected."""
    path = tuple(error.absolute_path)
    parser = _value_parser(error.schema, path)
    if parser is not None and isinstance(error.instance, (str, int, float)) and not isinstance(error.instance, bool):
        try:
            parser(error.instance)
        except ValueError as exc:
            return [Diagnostic(locate(doc, path), format_path(path), str(exc), getattr(exc, "hint", None))]
    deeper = [e for e in error.context if len(e.absolute_path) > len(path)]
    if deeper:
        return _explain(best_match(deeper), doc)
    objects = [i for i, branch in enumerate(error.validator_value) if isinstance(branch, dict) and branch.get("type") == "object"]
    if isinstance(error.instance, dict) and len(objects) == 1:  # a mapping where one kind of mapping goes: its problems
        problems = [e for e in error.context if list(e.schema_path)[:1] == objects and e.validator != "type"]
        if problems:
            return [d for e in problems for d in _explain(e, doc)]
    description = error.schema.get("description") if isinstance(error.schema, dict) else None
    if description:
        if len(description) > 1 and description[1].islower():  # "CPU cores" stays, "A duration" -> "a duration"
            description = description[0].lower() + description[1:]
        message = f"invalid value {_describe(error.instance)}: expected {_sentence(description)}"
        return [Diagnostic(locate(doc, path), format_path(path), message)]
    return _explain(best_match(error.context), doc)


def _same(a, b) -> bool:
    """JSON Schema equality: 1 and true differ, 1 and 1.0 do not."""
    if isinstance(a, bool) or isinstance(b, bool):
        return type(a) is type(b) and a == b
    return a == b


def _value_parser(schema, path: tuple):
    """The spec's own parser for a value language the schema checks with anyOf, for one message."""
    if schema == pipeline_schema()["$defs"]["duration"]:
        return parse_duration
    if len(path) >= 2 and path[-2] == "resources" and path[-1] in ("cpu", "memory"):
        return lambda value: parse_quantity(value, path[-1])
    return None


def _explain_name(error: ValidationError, doc) -> Diagnostic:
    """propertyNames failed: find which key of the mapping is the bad one."""
    path = tuple(error.absolute_path)
    mapping = error.instance
    name_schema = error.validator_value
    if isinstance(name_schema, dict) and "$ref" in name_schema:
        name_schema = pipeline_schema()["$defs"][name_schema["$ref"].rsplit("/", 1)[1]]
    bad = [k for k in mapping if not Draft202012Validator(name_schema).is_valid(k)] if isinstance(mapping, dict) else []
    key = bad[0] if bad else None
    pattern = name_schema.get("pattern") if isinstance(name_schema, dict) else None
    if key is None or pattern is None:
        return Diagnostic(locate(doc, path), format_path(path), error.message)
    message, hint = _pattern_problem(key, pattern, path + (key,))
    return Diagnostic(locate(doc, path + (key,), key=True), format_path(path + (key,)), message, hint)


def _sentence(text: str) -> str:
    return text.rstrip(".")

