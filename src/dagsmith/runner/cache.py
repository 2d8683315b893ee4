"""Step caching: a step whose config, inputs and code are unchanged reuses earlier outputs.

The key hashes: the step's IR entry (its config, SQL, options), the fingerprints of the outputs
of the steps it depends on (so a changed input re-runs everything downstream), the parameter
values, the run's values only when the step references them, the data fingerprint for file
sources, and the code behind user functions (module file hash) or the library version.

Never cached: steps with effects or whose result depends on the world (custom steps, deploy,
evaluate and gate, which read the registry's production model) and SQL sources. A predict step
that scores with a registry alias or version is cached with the version it resolves to now and
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
    if step.kind not in CACHEABLE:
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
    if step.kind == "predict":
        from ..runtime.predict import model_fingerprint

        model = model_fingerprint(ctx)  # a registry version: its number and files, as resolved now
        if model is None:
            return None
        parts["model"] = model
    model_config = step.config.get("model") if step.kind == "train" else None  # predict's `model` is a name
    code = step.config.get("transform") or (model_config or {}).get("entrypoint")
    if code:
        from ..runtime.userscode import code_fingerprint

        parts["code"] = code_fingerprint(code, ctx.root)
    return hashlib.sha256(json.dumps(parts, sort_keys=True, default=str).encode()).hexdigest()


def _waited_for_only(ir: IR, step: Step, dep: str) -> bool:
    """A predict scoring with a registry alias waits for deploy, but reads the version the alias
    names (in the key as the model's fingerprint), not deploy's outputs: an unchanged deploy
    ("unchanged, version N") writes another result, and must not make the scores run again."""
    return step.kind == "predict" and ir.step(dep).kind == "deploy"


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
