"""Step caching: a step whose config, inputs and code are unchanged reuses earlier outputs.

The key hashes: the step's IR entry (its config, SQL, options), the fingerprints of the outputs
of the steps it depends on (so a changed input re-runs everything downstream), the parameter
values, the run's values only when the step references them, the data fingerprint for file
sources, and the code behind user functions (module file hash) or the library version; for
train also the metrics it scores its models on (the select metric, evaluation.metrics and the
user metric functions' code), which select reads from its trials.

Never cached: steps with effects or whose result depends on the world (deploy, evaluate and
gate, which read the registry's production model; custom commands, and custom steps that declare
no outputs), and SQL sources. A `python:` custom step that declares its outputs is a function of
its declared inputs and its module's code, so it is cached like a feature. A predict or custom
step that reads a registry alias or version is cached with the version it resolves to now and
that version's fingerprint in the key.
"""

from __future__ import annotations

import dataclasses
import hashlib
import json
from importlib import metadata

from .. import __version__
from ..ir import IR, Step
from ..runtime.context import StepContext
from ..runtime.store import Store

CACHEABLE = ("source", "feature", "validate", "plan", "train", "select", "predict")
_LIBRARIES = {"validate": "great-expectations", "train": "scikit-learn", "feature": "duckdb", "source": "duckdb",
              "predict": "scikit-learn"}


def _version(package: str) -> str:
    try:
        return metadata.version(package)
    except metadata.PackageNotFoundError:
        return "absent"


def cache_key(ctx: StepContext, ir: IR) -> str | None:
    step: Step = ctx.step
    if step.kind not in CACHEABLE and not _cacheable_custom(step):
        return None
    step_json = _step_json(ir, step.id)
    text = json.dumps(step_json["config"], sort_keys=True)
    parts: dict = {
        "dagsmith": __version__,
        "step": step_json,
        "params": ctx.values.params,
        "inputs": {dep: ctx.store.require(ctx.key_of(dep)).get("fingerprint") for dep in step.depends_on
                   if not _waited_for_only(ir, step, dep)},
        "library": _version(_LIBRARIES[step.kind]) if step.kind in _LIBRARIES else None,
    }
    if "${run.date}" in text:
        parts["run_date"] = ctx.values.run_date
    if "${run.id}" in text:
        return None  # different in every run by definition
    if step.kind == "source":
        from ..runtime.sources import fingerprint

        data = fingerprint(ctx)
        if data is None:
            return None
        parts["data"] = data
    if step.kind in ("custom", "predict"):
        registry = _registry_versions(ctx)  # a registry version: its number and files, as resolved now
        if registry is None:
            return None
        parts["registry"] = registry
    model_config = step.config.get("model") if step.kind == "train" else None  # predict's `model` is a name
    code = step.config.get("transform") or (model_config or {}).get("entrypoint") or step.config.get("python")
    if code:
        from ..runtime.userscode import code_fingerprint

        parts["code"] = code_fingerprint(code, ctx.root)
    if step.kind == "train":  # it scores each model on the select metric and evaluation.metrics
        from ..runtime.metrics import functions_of
        from ..runtime.userscode import code_fingerprint

        parts["metrics"] = {s.kind: s.config.get("metrics") or s.config.get("metric") for s in ir.steps if s.kind in ("select", "evaluate")}
        functions = functions_of(ir)
        if functions:  # user metric functions: their definitions and their code
            parts["metric_functions"] = functions
            parts["metric_code"] = {name: code_fingerprint(f["function"], ctx.root) for name, f in functions.items()}
    return hashlib.sha256(json.dumps(parts, sort_keys=True, default=str).encode()).hexdigest()


def _cacheable_custom(step: Step) -> bool:
    return step.kind == "custom" and "python" in step.config and any(a.startswith("table:") for a in step.outputs)


def _registry_versions(ctx: StepContext) -> dict | None:
    """The registry models a custom or predict step reads ({model: production}...), each as the
    version its alias points at now and that version's fingerprint; None (not cached) when one
    cannot be resolved (the step then fails saying why). This run's model is in the key through
    its step's fingerprint (a dependency)."""
    refs = [a.partition(":")[2] for a in ctx.step.inputs if a.startswith("registry:")]
    if not refs:
        return {}
    from ..runtime import registry

    deploy = next((s for s in ctx.ir.steps if s.kind == "deploy"), None)
    if deploy is None:
        return None
    model = deploy.config["model_name"]
    found = {}
    try:
        for ref in refs:
            version = registry.resolve(ctx.store, model, ref)
            found[ref] = [version, registry.version_manifest(ctx.store, model, version).get("fingerprint")]
    except registry.RegistryError:
        return None
    return found


def _waited_for_only(ir: IR, step: Step, dep: str) -> bool:
    """A predict or custom step reading a registry alias waits for deploy, but reads the version
    the alias names (in the key as the model's fingerprint), not deploy's outputs: an unchanged
    deploy ("unchanged, version N") writes another result, and must not make it run again."""
    return ir.step(dep).kind == "deploy" and any(a.startswith("registry:") for a in step.inputs)


def _step_json(ir: IR, step_id: str) -> dict:
    # asdict gives the step's IR JSON entry once dumped (tuples become lists either way).
    data = dataclasses.asdict(ir.step(step_id))
    data.pop("origin")  # where the step is written in the spec, not what it does
    return data


def lookup(store: Store, key: str) -> dict | None:
    """The earlier outputs for this key: {"run_id", "step_id", "items"}, if still there."""
    entry = store.read_json(f"cache/{key}.json")
    if entry is None:
        return None
    if store.manifest(Store.step_key(entry["run_id"], entry["step_id"])) is None:
        return None
    return entry


def remember(store: Store, key: str, run_id: str, step_id: str, items: int | None) -> None:
    store.write_json(f"cache/{key}.json", {"run_id": run_id, "step_id": step_id, "items": items})


def reuse(store: Store, entry: dict, run_id: str, step_id: str) -> None:
    """Publish the earlier outputs (and a fan-out's items) under this run, without copying."""
    for item in range(entry.get("items") or 0):
        manifest = store.manifest(Store.step_key(entry["run_id"], step_id, item))
        if manifest is not None:
            store.link(Store.step_key(run_id, step_id, item), manifest)
    for name in ("result.json",):
        data = store.read_json(f"{Store.step_key(entry['run_id'], step_id)}/{name}")
        if data is not None:
            store.write_json(f"{Store.step_key(run_id, step_id)}/{name}", data)
    store.link(Store.step_key(run_id, step_id), store.manifest(Store.step_key(entry["run_id"], step_id)))
