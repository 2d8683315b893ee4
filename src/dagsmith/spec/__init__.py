"""Spec loading: YAML with positions -> includes -> environment -> --param -> checks -> Spec."""

from __future__ import annotations

import os
from pathlib import Path

from ..errors import Diagnostic, SpecError, did_you_mean
from . import limits, schema_check, semantics
from .build import build_spec
from .document import apply_environment, load_document, locate, locate_nearest
from .model import Spec
from .values import GivenText
from .yamlpos import YMap

__all__ = ["Spec", "check_all", "checked_document", "load_spec", "load_spec_and_document", "diagnostics_at", "environment_names", "parse_param_overrides"]


def load_spec(path: str | os.PathLike, env: str | None = None, params: dict[str, str] | None = None) -> Spec:
    """Load, merge, check and type a spec. Raises SpecError listing every problem found."""
    return load_spec_and_document(path, env, params)[0]


def load_spec_and_document(path: str | os.PathLike, env: str | None = None, params: dict[str, str] | None = None) -> tuple[Spec, YMap]:
    """The spec, and the document it came from (to put later messages at their lines)."""
    doc = checked_document(path, env, params)
    # Relative, never absolute: the IR must not depend on where the checkout lives.
    try:
        spec_dir = Path(os.path.relpath(Path(path).resolve().parent)).as_posix()
    except ValueError:  # on another drive (Windows): relative is impossible
        spec_dir = Path(path).resolve().parent.as_posix()
    return build_spec(doc, spec_dir), doc


def diagnostics_at(doc: YMap, problems) -> list[Diagnostic]:
    """Problems found after the spec was checked (a backend's), placed in the spec document:
    each has `level`, `path` (a spec path tuple) and `message`."""
    from ..errors import format_path

    return [Diagnostic(locate_nearest(doc, tuple(p.path)), format_path(p.path), p.message, level=p.level) for p in problems]


def checked_document(path: str | os.PathLike, env: str | None = None, params: dict[str, str] | None = None) -> YMap:
    """The merged document, checked. Raises SpecError listing every error; the warnings found
    (e.g. a feature input its SQL never reads) are the document's `warnings` (and the
    SpecError's, when there are errors too), for the command to print: they fail nothing."""
    return _checked(load_document(Path(path)), env, params)


def check_all(path: str | os.PathLike, envs: list[str | None] | None = None) -> tuple[list[Diagnostic], list[Diagnostic]]:
    """(errors, warnings) of the spec with each of `envs` (None: without an environment), by
    default the spec and each of its environments: what `dagsmith validate` reports. The file and
    its includes are read and parsed once, whatever the number of environments; each list is
    unique, in the order found."""
    try:
        raw = load_document(Path(path))
    except SpecError as exc:
        return list(exc.diagnostics), list(getattr(exc, "warnings", ()))
    if envs is None:
        environments = raw.get("environments")
        envs = [None] + (sorted(environments) if isinstance(environments, dict) else [])
    errors: dict[Diagnostic, None] = {}  # insertion-ordered sets: `not in list` is quadratic
    warnings: dict[Diagnostic, None] = {}
    sections = schema_check.check_environments(raw)  # once, not once per environment
    for name in envs:
        try:
            found = _checked(raw, name, environments_problems=sections).warnings
        except SpecError as exc:
            errors.update(dict.fromkeys(exc.diagnostics))
            found = getattr(exc, "warnings", ())
        warnings.update(dict.fromkeys(found))
    return list(errors), list(warnings)


def _checked(raw: YMap, env: str | None, params: dict[str, str] | None = None, *,
             environments_problems: list[Diagnostic] | None = None) -> YMap:
    """checked_document on a loaded document (which it does not change); `environments_problems`:
    schema_check.check_environments(raw), when the caller has it already."""
    doc = apply_environment(raw, env)
    if params:
        doc = _override_params(doc, params)
    # The limits first: every later check is linear in what they bound.
    too_big = limits.text_problems(doc)
    if too_big:
        raise SpecError(too_big)
    too_many = limits.step_count_problem(doc)
    if too_many:
        raise SpecError([too_many])
    problems = semantics.secrets_in_plain_sight(doc) + semantics.unwritable_text(doc)
    leaked = {d.path for d in problems}
    # Nothing else about a leaked value: a message or hint could repeat the password in some form.
    problems += [
        d for d in schema_check.check(doc) + (schema_check.check_environments(raw) if environments_problems is None else environments_problems)
        if not (leaked and _leaked(d.path, leaked))
    ]
    if not problems:
        problems = semantics.check(doc)
    warnings = tuple(SpecError([p for p in problems if p.level != "error"]).diagnostics)  # sorted, unique, redacted
    errors = [p for p in problems if p.level == "error"]
    if errors:
        error = SpecError(errors)
        error.warnings = warnings
        raise error
    doc.warnings = warnings
    return doc


def _leaked(path: str, leaked: set[str]) -> bool:
    """Whether `path` is a leaked path or below one: looks up each ancestor of `path` (a set
    look-up each), not each leaked path (that was errors x leaks)."""
    while True:
        if path in leaked:
            return True
        cut = max(path.rfind("."), path.rfind("["))
        if cut <= 0:
            return False
        path = path[:cut]


def environment_names(path: str | os.PathLike) -> list[str]:
    doc = load_document(Path(path))
    environments = doc.get("environments")
    return sorted(environments) if isinstance(environments, dict) else []


def parse_param_overrides(pairs: list[str]) -> dict[str, str]:
    """['a=1', 'b=x'] -> {'a': '1', 'b': 'x'}; values stay text until their type is known."""
    out = {}
    for pair in pairs:
        name, sep, value = pair.partition("=")
        if not sep or not name:
            from ..errors import UsageError

            raise UsageError(f"--param takes NAME=VALUE, got {pair!r}")
        out[name.strip()] = value
    return out


def _override_params(doc: YMap, overrides: dict[str, str]) -> YMap:
    """Apply --param NAME=VALUE as the parameter's new default, converted to its type."""
    params = doc.get("params")
    problems = []
    for name, text in overrides.items():
        path = ("params", name)
        if not isinstance(params, dict) or name not in params or not isinstance(params[name], dict):
            known = list(params) if isinstance(params, dict) else []
            problems.append(Diagnostic(locate(doc, ("params",), key=True), "params", f"--param {name}: no such parameter (known: {', '.join(known) or 'none'})", did_you_mean(name, known)))
            continue
        kind = params[name].get("type")
        try:
            value = _convert(kind, text)
        except ValueError as exc:
            problems.append(Diagnostic(locate(doc, path, key=True), f"params.{name}", f"--param {name}={text}: {exc}"))
            continue
        entry = YMap(params[name], mark=params[name].mark)
        entry.key_marks = dict(params[name].key_marks)
        entry.value_marks = dict(params[name].value_marks)
        entry["default"] = GivenText(value) if isinstance(value, str) else value
        entry.key_marks.setdefault("default", params.key_marks[name])
        entry.value_marks.setdefault("default", params.value_marks[name])
        params[name] = entry
    if problems:
        raise SpecError(problems)
    return doc


def _convert(kind: str, text: str):
    from ..paramtext import convert

    return convert(kind, text)
