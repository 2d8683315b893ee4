"""Step deploy: register the model(s) that passed the gates, then move the aliases.

A new version registry/<model>/<version>/ (the next free version, claimed atomically: see
registry.claim_version; concurrent deploys get distinct versions) holds the
models (unpartitioned: model.joblib; partitioned: models/<n>.joblib, one per partition that
passed, plus, for partitions that did not pass, a reference to the previous production
version's model so that the version still serves every partition), metrics.json, lineage.json
{run_id, run_date, pipeline, spec_hash, params, inputs: {source step: manifest fingerprint},
features: {...}, partitions, model_step, model_fingerprint, selection, deployed_at} and
model.json (the index registry.load_model reads). See registry.py for the layout.

Aliases (registry/<model>/aliases.json, one atomic write):
  replace  production = new version (the previous one goes to history); any canary ends.
  canary   canary = {version: new, traffic_percent}; with no production yet, the new version
           becomes production directly (the result says so).

target sagemaker / kserve (deploy_sagemaker.py, deploy_kserve.py): the version is registered
here as for local, then served by the target (a SageMaker endpoint's variants, a KServe
InferenceService's canary) BEFORE the aliases move: when the target refuses, the step fails,
the aliases stay, and the target keeps serving what it served. deployment.mlflow
(deploy_mlflow.py): the version is also registered in the MLflow Model Registry, its aliases
(champion, challenger) moved as these. See docs/deployment.md.

When the gate did not pass, nothing is deployed (result deployed: false; exit 0). A retry of
the same run reuses the version it already allocated (same run id and model fingerprint, in its
claim), and publishes it if it had not yet; another run never takes it.
"""

from __future__ import annotations

import datetime as _dt
import json
import shutil

from . import registry
from .context import StepContext, StepFailed
from .data import partition_key
from .evaluate import is_partitioned, load_selected, model_step_id, selected
from .store import StoreError


def _input_step(ctx: StepContext, kind: str) -> str | None:
    return next(iter(ctx.input_steps(kind)), None)


def _read(ctx: StepContext, step_id: str, name: str):
    try:
        return ctx.read_json(step_id, name)
    except StoreError:
        raise StepFailed(f"step {step_id!r} has no {name} in run {ctx.values.run_id!r} (did it run?)") from None


def lineage_inputs(ctx: StepContext, *kinds: str) -> dict:
    """{step id: manifest fingerprint} of this run's steps of these kinds that training depends on
    and that write tables (the compiler declares those tables as deploy's inputs)."""
    import networkx as nx

    model_step = model_step_id(ctx)
    upstream = nx.ancestors(ctx.ir.graph, model_step)
    out = {}
    for step in ctx.ir.steps:
        if step.kind in kinds and step.id in upstream and any(o.startswith("table:") for o in step.outputs):
            manifest = ctx.manifest_of(step.id, missing_ok=True)
            out[step.id] = manifest.get("fingerprint") if manifest else None
    return out


def run(ctx: StepContext) -> dict:
    config = ctx.step.config
    model_name = config["model_name"]
    target = config.get("target", "local")
    strategy = config.get("strategy", "replace")
    partitioned = is_partitioned(ctx)
    notes = []

    gate_id = _input_step(ctx, "gate")
    decision = _read(ctx, gate_id, "decision.json") if gate_id else None
    if decision is not None and not decision["passed"]:
        result = {"deployed": False, "model": model_name, "reason": "the gates did not pass: nothing deployed"}
        _commit_result(ctx, result)
        return result

    entries = selected(ctx)
    if partitioned and decision is not None:
        passed = decision.get("partitions_passed") or []
        entries = [e for e in entries if e["partition"] in passed]
    if not entries:
        raise StepFailed("no model to deploy")

    evaluate_id = _input_step(ctx, "metrics")
    evaluated = _read(ctx, evaluate_id, "metrics.json") if evaluate_id else None
    model_step = model_step_id(ctx)
    model_fingerprint = ctx.manifest_of(model_step).get("fingerprint")

    same = _unchanged(ctx, model_name, strategy, model_fingerprint, entries, partitioned)
    if same is not None:
        version, alias = same
        aliases = registry.read_aliases(ctx.store, model_name)
        location = f"{ctx.store.uri.rstrip('/')}/{registry.version_key(model_name, version)}"
        result = {
            "deployed": False, "unchanged": True, "model": model_name, "version": version, "target": target,
            "strategy": strategy, "registry": location, "production": aliases["production"], "canary": aliases["canary"],
            "reason": f"unchanged, version {version}: the model is the {alias} version's (the same model fingerprint); "
                      "nothing registered, the aliases stay",
        }
        if partitioned:
            result["partitions"] = [e["partition"] for e in entries]
        ctx.notes.append(f"{model_name}: unchanged, version {version} ({alias}): nothing registered")
        _commit_result(ctx, result)
        return result

    previous = registry.production_version(ctx.store, model_name)  # whose models partitions inherit
    version, published = _reusable(ctx, model_name, model_fingerprint)
    if version is None:
        owner = {"run_id": ctx.values.run_id, "model_fingerprint": model_fingerprint}
        version = registry.claim_version(ctx.store, model_name, owner)
    if published:
        notes.append(f"version {version} was already created by this run (a retry): reused")
        index = registry.version_index(ctx.store, model_name, version)
        inherited = [e["partition"] for e in index["models"] if "version" in e]
    else:
        inherited = _publish(ctx, model_name, version, entries, evaluated, partitioned, previous,
                             model_step, model_fingerprint, decision)

    served = None
    moved_notes: list[str] = []

    def move(aliases: dict) -> dict:
        # Called again when another deploy moved the aliases meanwhile: decided on what is there.
        nonlocal served
        moved_notes.clear()
        current = aliases["production"]
        new_aliases = dict(aliases)
        history = list(aliases.get("history") or [])
        if strategy == "canary" and current is not None and current != version:
            percent = (config.get("canary") or {}).get("traffic_percent")
            new_aliases["canary"] = {"version": version, "traffic_percent": percent}
        else:
            if strategy == "canary":
                moved_notes.append(f"no production model of {model_name!r} yet: version {version} became production directly (no canary)")
            if current is not None and current != version:
                history.append(current)
            new_aliases.update(production=version, canary=None)
        new_aliases["history"] = history
        served = _serve_remote(ctx, target, config, model_name, version, new_aliases)
        return new_aliases

    aliases, new_aliases = registry.move_aliases(ctx.store, model_name, move)
    previous = aliases["production"]
    notes.extend(moved_notes)
    tracked = None
    if config.get("mlflow"):
        from . import deploy_mlflow

        tracked = deploy_mlflow.register(ctx, config["mlflow"], model_name, version, new_aliases)

    location = f"{ctx.store.uri.rstrip('/')}/{registry.version_key(model_name, version)}"
    if target != "local" and served is None:
        notes.append(f"target {target}: a local run deploys to the local model registry ({location}), not to {target}")
    if inherited:
        failed = set((decision or {}).get("partitions_failed") or [])
        gated = [p for p in inherited if p in failed]
        absent = [p for p in inherited if p not in failed]
        if gated:
            notes.append(f"partitions {gated} did not pass the gates: version {version} keeps their production models")
        if absent:
            notes.append(f"partitions {absent} are not in this run's data: version {version} keeps their production models")
    ctx.notes.extend(notes)
    result = {
        "deployed": True,
        "model": model_name,
        "version": version,
        "target": target,
        "strategy": strategy,
        "registry": location,
        "production": new_aliases["production"],
        "canary": new_aliases["canary"],
        "previous_production": previous,
    }
    if served is not None:
        result[target] = served
    if tracked is not None:
        result["mlflow"] = tracked
    if partitioned:
        result["partitions"] = [e["partition"] for e in entries]
        if inherited:
            result["inherited"] = inherited
    if notes:
        result["notes"] = notes
    _commit_result(ctx, result)
    return result


def _serve_remote(ctx: StepContext, target: str, config: dict, model_name: str, version: int, aliases: dict):
    """Serve the new aliases' traffic on a remote target (None for local, or settings absent)."""
    if target == "sagemaker" and config.get("sagemaker"):
        from . import deploy_sagemaker

        return deploy_sagemaker.deploy(ctx.store, model_name, version, aliases, config["sagemaker"], ctx.step.image)
    if target == "kserve":
        from . import deploy_kserve

        return deploy_kserve.deploy(ctx.store, model_name, version, aliases, config.get("kserve") or {}, ctx.step.image)
    return None


def _commit_result(ctx: StepContext, result: dict) -> None:
    staging = ctx.stage()
    staging.write_json("deployment.json", result)
    ctx.store.commit(staging)


def _unchanged(ctx: StepContext, model_name: str, strategy: str, model_fingerprint, entries: list, partitioned: bool):
    """(version, alias) when the model(s) to deploy are exactly those of the version serving as
    production (strategy canary: the canary's, else production's): the same model step
    fingerprint (a hash of the model files) and, partitioned, the same partitions from this run.
    Re-running an unchanged pipeline then registers nothing and calls no remote target. None:
    deploy as usual."""
    if not model_fingerprint:
        return None
    aliases = registry.read_aliases(ctx.store, model_name)
    candidates = []
    if strategy == "canary" and aliases.get("canary") and aliases["canary"].get("version") is not None:
        candidates.append((aliases["canary"]["version"], "canary"))
    if aliases.get("production") is not None:
        candidates.append((aliases["production"], "production"))
    partitions = sorted((json.dumps(e["partition"], sort_keys=True, default=str) for e in entries)) if partitioned else None
    for version, alias in candidates:
        try:
            lineage = registry.read_version_json(ctx.store, model_name, int(version), "lineage.json")
        except (StepFailed, StoreError, OSError, ValueError):
            continue  # a version without lineage (or unreadable): never "the same"
        if not isinstance(lineage, dict) or lineage.get("model_fingerprint") != model_fingerprint:
            continue
        if partitioned:
            had = sorted(json.dumps(p, sort_keys=True, default=str) for p in (lineage.get("partitions") or []))
            if had != partitions:
                continue
        return int(version), alias
    return None


RETRY_LOOKBACK = 20  # latest versions searched for this run's own (a retry comes soon after)


def _reusable(ctx: StepContext, model_name: str, model_fingerprint) -> tuple[int | None, bool]:
    """(the version this same run already allocated for this same model: a retry, or None;
    whether it is published). Runs without an id of their own ("adhoc") are never retries."""
    from .environment import DEFAULT_RUN_ID

    run_id = ctx.values.run_id
    if not run_id or run_id == DEFAULT_RUN_ID:
        return None, False
    known = sorted({*registry.versions(ctx.store, model_name), *registry.claimed(ctx.store, model_name)})
    for version in reversed(known[-RETRY_LOOKBACK:]):
        owner = registry.claim_of(ctx.store, model_name, version)
        if owner and owner.get("run_id") == run_id and owner.get("model_fingerprint") == model_fingerprint:
            return version, ctx.store.manifest(registry.version_key(model_name, version)) is not None
    return None, False


def _publish(ctx, model_name, version, entries, evaluated, partitioned, previous, model_step, model_fingerprint, decision):
    staging = ctx.store.stage(registry.version_key(model_name, version))
    models, metrics = [], {}
    for position, entry in enumerate(entries):
        name = f"models/{position}.joblib" if partitioned else "model.joblib"
        shutil.copyfile(ctx.input_file(entry["model_step"], entry["file"]), staging.path(name))
        models.append({"partition": entry["partition"], "file": name})
        if evaluated is not None:
            scores = evaluated.get(partition_key(entry["partition"])) if partitioned else evaluated
        else:
            scores = entry.get("metrics") or _train_metrics(ctx, entry)
        if partitioned:
            metrics[partition_key(entry["partition"])] = scores
        else:
            metrics = scores
    inherited = []
    if partitioned and previous is not None:
        have = {m["partition"] for m in models}
        for old in registry.version_index(ctx.store, model_name, previous)["models"]:
            if old["partition"] not in have:
                models.append({"partition": old["partition"], "file": old["file"], "version": old.get("version", previous)})
                inherited.append(old["partition"])
    sample = load_selected(ctx, entries[0])
    staging.write_json("model.json", {
        "model_name": model_name, "version": version,
        "partition_by": sample.get("partition_by"), "task": sample.get("task"), "target": sample.get("target"),
        "source": sample.get("source"), "models": models,
    })
    staging.write_json("metrics.json", metrics)
    staging.write_json("lineage.json", {
        "run_id": ctx.values.run_id,
        "run_date": ctx.values.run_date,
        "pipeline": ctx.ir.name,
        "spec_hash": ctx.ir.pipeline.get("spec_hash"),
        "params": ctx.values.params,
        "inputs": lineage_inputs(ctx, "source"),
        "features": lineage_inputs(ctx, "feature"),
        "steps": lineage_inputs(ctx, "custom", "predict") or None,  # user code's tables the model comes from
        "partitions": [e["partition"] for e in entries] if partitioned else None,
        "inherited": inherited or None,
        "model_step": model_step,
        "model_fingerprint": model_fingerprint,
        "selection": [{k: e.get(k) for k in ("partition", "index", "trial", "params")} for e in entries]
        if entries[0].get("index") is not None else None,
        "gates": (decision["gates"] if len(decision["gates"]) <= 200 else f"{len(decision['gates'])} checks: see the run")
        if decision is not None else None,
        "deployed_at": _dt.datetime.now(_dt.timezone.utc).replace(microsecond=0).isoformat(),
    })
    ctx.store.commit(staging, exclusive=True)  # a published version is never replaced
    return inherited


def _train_metrics(ctx: StepContext, entry: dict) -> dict:
    try:
        return ctx.read_json(entry["model_step"], "metrics.json")
    except StoreError:
        return {}
