"""Spec -> IR, as a short list of named passes.

    expand      sections -> steps (fan-outs lowered to one step each: compiler/fanout.py)
    guard       consumers of a validated table wait for its validations
    order       deterministic topological order (ties broken by step id)
    pipeline    params, triggers, metadata at pipeline level
    check       invariants a backend relies on (acyclic, known ids, identifiers unique per backend)

The spec checks (spec/semantics.py) have already rejected user mistakes with positions; a check
failing here is a dagsmith bug, reported as such.
"""

from __future__ import annotations

from dataclasses import replace

from .. import naming
from ..graphs import CycleError, topological_order
from ..errors import DagsmithError
from ..ir import IR, Step
from ..spec.model import Spec
from ..storeuri import store_uri
from .steps import expand


class CompilerBug(DagsmithError):
    exit_code = 3


def compile_spec(spec: Spec) -> IR:
    steps = expand(spec)
    steps = with_origins(steps, spec)
    steps = guard_validated_tables(steps)
    steps = order(steps)
    ir = IR(
        pipeline={
            "name": spec.name,
            "description": spec.description,
            "owner": spec.owner,
            "tags": list(spec.tags),
            "spec_hash": spec.spec_hash,
        },
        params={
            p.name: {"type": p.type, "default": p.default, "required": p.required, "description": p.description,
                     "enum": list(p.enum) if p.enum is not None else None}
            for p in sorted(spec.params, key=lambda p: p.name)
        },
        triggers=triggers(spec),
        steps=tuple(steps),
        backends={name: {**options, "store": store_uri(options["store"])} if isinstance(options.get("store"), str) else options
                  for name, options in spec.backends.items()},  # one spelling of the store for every backend
    )
    check(ir)
    return ir


_SECTION_OF_KIND = {"plan": "training", "train": "training", "select": "training", "evaluate": "evaluation",
                    "gate": "evaluation", "deploy": "deployment"}


def with_origins(steps: list[Step], spec: Spec) -> list[Step]:
    """Each step's place in the spec, so a backend's message about it can point at the line."""
    validations = {check.name: index for index, check in enumerate(spec.validations)}
    named = {"source": "sources", "feature": "features", "custom": "steps", "predict": "predict"}

    def origin(step: Step) -> tuple:
        if step.kind == "validate":
            return ("validation", validations[step.id])
        if step.kind in named:
            return (named[step.kind], step.id)
        return (_SECTION_OF_KIND[step.kind],)

    return [replace(step, origin=origin(step)) for step in steps]


def guard_validated_tables(steps: list[Step]) -> list[Step]:
    """A step that reads table T also waits for every validation of T, so a failed
    `on_failure: fail` check stops it (and everything after it). A validation it already waits
    for through another dependency adds no edge (evaluate reads the training tables, but waits
    for training, which waited for their checks): the graph stays as drawn by hand."""
    validations: dict[str, list[str]] = {}
    for step in steps:
        if step.kind == "validate":
            validations.setdefault(f"table:{step.config['table']}", []).append(step.id)
    wanted = {step.id: {v for artifact in step.inputs for v in validations.get(artifact, ())} for step in steps if step.kind != "validate"}
    deps = {step.id: set(step.depends_on) | wanted.get(step.id, set()) for step in steps}
    out = []
    for step in steps:
        extra = wanted.get(step.id, set()) - set(step.depends_on)
        extra = {v for v in extra if not _reaches(deps, deps[step.id] - {v}, v)}
        out.append(replace(step, depends_on=tuple(sorted(set(step.depends_on) | extra))) if extra else step)
    return out


def _reaches(deps: dict[str, set[str]], starts: set[str], target: str) -> bool:
    """Whether `target` is among `starts` or their dependencies (iterative: no recursion limit)."""
    seen, todo = set(), list(starts)
    while todo:
        node = todo.pop()
        if node == target:
            return True
        if node not in seen:
            seen.add(node)
            todo.extend(deps.get(node, ()))
    return False


def order(steps: list[Step]) -> list[Step]:
    by_id = {step.id: step for step in steps}
    try:
        ids = topological_order(by_id, ((up, step.id) for step in steps for up in step.depends_on))
    except CycleError as exc:
        raise CompilerBug(f"internal compiler error (please report): a cycle among steps {exc.remaining}") from None
    return [by_id[step_id] for step_id in ids]


def triggers(spec: Spec) -> dict:
    sources = {source.name: source for source in spec.sources}
    return {
        "schedule": spec.schedule,
        "on_new_data": [
            {
                "source": t.source,
                "type": sources[t.source].type,
                "uri": sources[t.source].uri,
                "min_interval": t.min_interval,
                "queue": t.queue,
            }
            for t in sorted(spec.on_new_data, key=lambda t: t.source)
        ],
    }


def check(ir: IR) -> None:
    ids = [step.id for step in ir.steps]
    problems = []
    if len(set(ids)) != len(ids):
        problems.append("duplicate step ids")
    unknown = {up for step in ir.steps for up in step.depends_on} - set(ids)
    if unknown:
        problems.append(f"dependencies on unknown steps {sorted(unknown)}")
    position = {step_id: index for index, step_id in enumerate(ids)}
    if any(position.get(up, len(ids)) >= position[step.id] for step in ir.steps for up in step.depends_on):
        problems.append("steps are not in topological order")
    if naming.collisions(ids):
        problems.append(f"identifier collisions {naming.collisions(ids)}")
    if problems:
        raise CompilerBug("internal compiler error (please report): " + "; ".join(problems))
