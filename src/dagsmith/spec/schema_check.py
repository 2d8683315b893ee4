"""Check a raw spec document against schema/pipeline.schema.json and explain each error.

jsonschema's own messages ("Additional properties are not allowed ('trainig' was unexpected)")
are rewritten into one short sentence per problem, placed at the offending key or value, with a
"did you mean" where a known key or value is close.
"""

from __future__ import annotations

import json
import math
from functools import lru_cache
from importlib import resources

from jsonschema import Draft202012Validator
from jsonschema.exceptions import ValidationError, best_match

from ..errors import Diagnostic, did_you_mean, format_path
from .document import locate
from .yamlpos import YMap

_JSON_TYPES = {dict: "a mapping", list: "a list", str: "text", bool: "a boolean", int: "an integer", float: "a number", type(None): "null"}
_EXPECTED = {"object": "a mapping", "array": "a list", "string": "text", "integer": "an integer", "number": "a number", "boolean": "true or false", "null": "null"}


@lru_cache(maxsize=1)
def pipeline_schema() -> dict:
    text = resources.files("dagsmith.schema").joinpath("pipeline.schema.json").read_text(encoding="utf-8")
    return json.loads(text)


@lru_cache(maxsize=1)
def _validator() -> Draft202012Validator:
    return Draft202012Validator(pipeline_schema())


def check(doc: YMap) -> list[Diagnostic]:
    """Every schema problem of the document, each with its position."""
    problems = list(_non_finite(doc, doc, ()))
    for error in _validator().iter_errors(doc):
        problems.extend(_explain(error, doc))
    return problems


def _non_finite(doc, node, path: tuple):
    """NaN and infinity are never valid thresholds or values (and have no JSON form)."""
    if isinstance(node, float) and not math.isfinite(node):
        yield Diagnostic(locate(doc, path), format_path(path), f"{node!r} is not a finite number")
    elif isinstance(node, dict):
        for key, value in node.items():
            yield from _non_finite(doc, value, path + (key,))
    elif isinstance(node, list):
        for index, value in enumerate(node):
            yield from _non_finite(doc, value, path + (index,))


def _describe(value) -> str:
    kind = _JSON_TYPES.get(type(value), type(value).__name__)
    if isinstance(value, (dict, list)):
        return kind
    text = repr(value)
    return f"{kind} {text if len(text) <= 40 else text[:37] + '...'}"


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
            listing = "" if hint else f" (allowed: {', '.join(sorted(allowed))})" if allowed and len(allowed) <= 12 else ""
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
        options = [o for o in error.validator_value]
        hint = did_you_mean(error.instance, [o for o in options if isinstance(o, str)])
        listing = ", ".join(str(o) for o in options)
        return [Diagnostic(locate(doc, path), where, f"must be one of: {listing}; got {_describe(error.instance)}", hint)]
    if kind == "const":
        return [Diagnostic(locate(doc, path), where, f"must be {error.validator_value!r}, got {_describe(error.instance)}")]
    if kind == "pattern":
        description = schema.get("description", f"text matching {error.validator_value}")
        return [Diagnostic(locate(doc, path), where, f"invalid value {error.instance!r}: {_sentence(description)}")]
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
        return [Diagnostic(locate(doc, path), where, "has duplicate items")]
    return [Diagnostic(locate(doc, path), where, error.message)]


def _explain_choice(error: ValidationError, doc) -> list[Diagnostic]:
    """anyOf/oneOf: explain the branch that got furthest, or say what was expected."""
    path = tuple(error.absolute_path)
    deeper = [e for e in error.context if len(e.absolute_path) > len(path)]
    if deeper:
        return _explain(best_match(deeper), doc)
    description = error.schema.get("description") if isinstance(error.schema, dict) else None
    if description:
        message = f"invalid value {_describe(error.instance)}: expected {_sentence(description[0].lower() + description[1:])}"
        return [Diagnostic(locate(doc, path), format_path(path), message)]
    return _explain(best_match(error.context), doc)


def _explain_name(error: ValidationError, doc) -> Diagnostic:
    """propertyNames failed: find which key of the mapping is the bad one."""
    path = tuple(error.absolute_path)
    mapping = error.instance
    name_schema = error.validator_value
    if isinstance(name_schema, dict) and "$ref" in name_schema:
        name_schema = pipeline_schema()["$defs"][name_schema["$ref"].rsplit("/", 1)[1]]
    bad = [k for k in mapping if not Draft202012Validator(name_schema).is_valid(k)] if isinstance(mapping, dict) else []
    key = bad[0] if bad else None
    description = name_schema.get("description", "an invalid name") if isinstance(name_schema, dict) else "an invalid name"
    if key is None:
        return Diagnostic(locate(doc, path), format_path(path), error.message)
    return Diagnostic(locate(doc, path + (key,), key=True), format_path(path + (key,)), f"invalid name {key!r}: {_sentence(description)}")


def _sentence(text: str) -> str:
    return text.rstrip(".")

