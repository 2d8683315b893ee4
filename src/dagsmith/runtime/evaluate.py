"""Steps evaluate and gate.

evaluate  scores the model(s) of `select` (or of `train` without a fan-out) on the held-out
          split (data.training_frame: the same rows the trials were scored on), per partition.
          Commits metrics.json: {metric: value}, or {"<partition>": {metric: value}} when
          partitioned. Result: {"metrics": the same}.
gate      checks every gate for every partition's model:
            {metric, op, value}                 observed (from evaluate) op value
            {metric, op, compare_to: production, delta}
                                                observed op (production's score + delta), where
                                                production's score is the model in production
                                                (registry alias, gate config model_name) scored
                                                on the SAME held-out rows (this run's; the check's
                                                `compared_on` says how many and how they were
                                                chosen). No production model
                                                (or none for this partition): passes, with a note.
          A value or delta written ${params.NAME} is this run's value of the parameter (an
          overridden param gates with the overridden value); the check records what it was
          written as in `params` ({"value": "${params.min_auc}"}).
          Comparisons forgive float noise only (TOLERANCE, below): metrics are rounded to 6
          decimals, and so is production's score + delta, so a challenger identical to
          production passes `>=` with delta 0 exactly; `difference` is observed - production's
          score at those 6 decimals (0.0, never -0.0 or -1.1e-16).
          Commits decision.json {passed, partitions_passed, partitions_failed, gates: [{metric,
          op, threshold, observed, passed, partition?, params?, compare_to?, production_version?,
          production_value?, compared_on?, delta?, difference?, note?}]}; the result is the
          same. `passed`: unpartitioned, every gate passed; partitioned, at least one partition passed every gate
          (partitions_passed lists them, deploy takes only those). A failed gate is not an
          error: the step exits 0 and the runner/backend skips what follows ("gated").
"""

from __future__ import annotations

import math

from .. import references
from . import metrics as M
from . import registry
from .context import StepContext, StepFailed
from .data import model_input, partition_key, prepare, train_step, user_path
from .store import StoreError

RESULT_LIMIT = 50

# Metrics are rounded to 6 decimals (metrics.rounded) and a compare_to threshold is production's
# rounded score + delta, rounded again, so a challenger identical to production meets `>= delta 0`
# exactly. The comparison still forgives float noise of TOLERANCE relative to the larger of the two
# magnitudes (and at least TOLERANCE): 0.9 >= 0.9000000000000001 passes, 0.9 >= 0.9000001 fails.
TOLERANCE = 1e-12


def _slack(a: float, b: float) -> float:
    return TOLERANCE * max(1.0, abs(a), abs(b))


OPS = {
    ">=": lambda a, b: a >= b - _slack(a, b),
    ">": lambda a, b: a > b + _slack(a, b),
    "<=": lambda a, b: a <= b + _slack(a, b),
    "<": lambda a, b: a < b - _slack(a, b),
    "==": lambda a, b: math.isclose(a, b, rel_tol=1e-9, abs_tol=1e-9),
}


# --- the models to evaluate -------------------------------------------------------------------

def model_step_id(ctx: StepContext) -> str:
    """The step whose model(s) this step consumes (select, or train without a fan-out): its
    declared `model:` input."""
    models = ctx.input_steps("model")
    if not models:
        raise StepFailed(f"step {ctx.step.id!r} declares no model in its inputs (a dagsmith bug)")
    return models[0]


def selected(ctx: StepContext) -> list[dict]:
    """[{partition, file, model_step, index?, params?, metrics?}] of the models to evaluate/deploy."""
    step_id = model_step_id(ctx)
    try:
        if ctx.ir.step(step_id).kind == "select":
            return [{**entry, "file": entry["model"], "model_step": step_id}
                    for entry in ctx.read_json(step_id, "selection.json")]
        ctx.manifest_of(step_id)
    except StoreError:
        raise StepFailed(f"step {step_id!r} has no outputs in run {ctx.values.run_id!r} (did it run?)") from None
    return [{"partition": None, "file": "model.joblib", "model_step": step_id}]


def load_selected(ctx: StepContext, entry: dict) -> dict:
    import joblib

    user_path(ctx.root)
    return joblib.load(ctx.input_file(entry["model_step"], entry["file"]))


def is_partitioned(ctx: StepContext) -> bool:
    fanout = train_step(ctx.ir).fanout
    return fanout is not None and fanout.partition_by is not None


def score(ctx: StepContext, model: dict, partition, names) -> dict:
    """Metrics of one model dict on the held-out rows of a partition (its own encoding)."""
    prepared = prepare(ctx, partition)
    X = prepared.X_test if list(model["columns"]) == list(prepared.columns) else model_input(model, prepared.test_rows)
    return M.compute(names, model["estimator"], X, prepared.y_test, model["task"], M.functions_of(ctx.ir), ctx.root)


# --- evaluate ---------------------------------------------------------------------------------

def run_evaluate(ctx: StepContext) -> dict:
    names = list(ctx.step.config.get("metrics") or [])
    M.check_names(names, M.functions_of(ctx.ir))
    partitioned = is_partitioned(ctx)
    per_partition = {}
    for entry in selected(ctx):
        model = load_selected(ctx, entry)
        if not names:
            names = list(M.DEFAULTS[model["task"]])
        per_partition[partition_key(entry["partition"]) if partitioned else None] = score(ctx, model, entry["partition"], names)
    out = per_partition if partitioned else per_partition[None]
    staging = ctx.stage()
    staging.write_json("metrics.json", out)
    ctx.store.commit(staging)
    result = {"metrics": out}
    if partitioned and len(out) > RESULT_LIMIT:
        result = {"metrics": dict(list(out.items())[:RESULT_LIMIT]), "partitions": len(out),
                  "summary": _summary(out, names)}
    return result


def _summary(per_partition: dict, names) -> dict:
    out = {}
    for name in names:
        values = [m[name] for m in per_partition.values() if m.get(name) is not None]
        if values:
            out[name] = {"min": min(values), "max": max(values), "mean": M.rounded(sum(values) / len(values))}
    return out


# --- gate -------------------------------------------------------------------------------------

def run_gate(ctx: StepContext) -> dict:
    config = ctx.step.config
    gates = list(config.get("gates") or [])
    model_name = config.get("model_name")
    partitioned = is_partitioned(ctx)
    evaluate_id = next(iter(ctx.input_steps("metrics")), None)
    evaluated = None  # without an evaluate step, gate metrics are scored here
    if evaluate_id is not None:
        try:
            evaluated = ctx.read_json(evaluate_id, "metrics.json")
        except StoreError:
            raise StepFailed(f"step {evaluate_id!r} has no outputs in run {ctx.values.run_id!r} (did it run?)") from None

    production = registry.production_version(ctx.store, model_name) if model_name else None
    production_store = ctx.store
    if model_name and config.get("mlflow") and any(g.get("compare_to") for g in gates):
        from .deploy_mlflow import champion  # deployment.mlflow: production is MLflow's champion

        production, production_store = champion(ctx, config["mlflow"], model_name)
    records, passed_partitions, failed_partitions = [], [], []
    for entry in selected(ctx):
        partition = entry["partition"]
        observed_metrics = dict((evaluated or {}).get(partition_key(partition), {}) if partitioned else (evaluated or {}))
        model = None

        def observed(metric):
            nonlocal model
            if metric not in observed_metrics:  # not evaluated: score it here
                model = model or load_selected(ctx, entry)
                observed_metrics.update(score(ctx, model, partition, [metric]))
            return observed_metrics[metric]

        all_passed = True
        for gate in gates:
            record = _check(ctx, gate, observed(gate["metric"]), partition, model_name, production, production_store)
            if partitioned:
                record["partition"] = partition
            all_passed &= record["passed"]
            records.append(record)
        (passed_partitions if all_passed else failed_partitions).append(partition)

    if partitioned:
        passed = bool(passed_partitions)
        decision = {"passed": passed, "partitions_passed": passed_partitions, "partitions_failed": failed_partitions,
                    "gates": records}
    else:
        passed = not failed_partitions
        decision = {"passed": passed, "partitions_passed": None, "partitions_failed": None, "gates": records}
    staging = ctx.stage()
    staging.write_json("decision.json", decision)
    ctx.store.commit(staging)
    for note in dict.fromkeys(r["note"] for r in records if r.get("note")):
        ctx.notes.append(note)
    if not passed:
        ctx.notes.append(("gated: " + "; ".join(_describe(r) for r in records if not r["passed"]))[:2000])
    result = dict(decision)
    if ctx.notes:
        result["notes"] = list(ctx.notes)[:RESULT_LIMIT]
    if len(records) > RESULT_LIMIT:
        failing = [r for r in records if not r["passed"]]
        result["gates"] = failing[:RESULT_LIMIT]
        result["gates_total"] = len(records)
        result["gates_failed"] = len(failing)
    return result


def _describe(record: dict) -> str:
    where = f"[{record['partition']}] " if "partition" in record else ""
    against = " (production + delta" + (f", {record['compared_on']}" if record.get("compared_on") else "") + ")" \
        if record.get("compare_to") else ""
    return f"{where}{record['metric']} {record['observed']} {record['op']} {record['threshold']}{against}: failed"


def _check(ctx: StepContext, gate: dict, observed, partition, model_name, production, production_store=None) -> dict:
    op = gate["op"]
    if op not in OPS:
        raise StepFailed(f"unknown gate operator {op!r} (known: {', '.join(OPS)})")
    record = {"metric": gate["metric"], "op": op, "observed": observed}
    for key in ("value", "delta"):  # written as ${params.NAME}: this run's value
        if references.whole(gate.get(key)) is not None:
            record.setdefault("params", {})[key] = gate[key]
    if gate.get("compare_to"):
        delta = _number(ctx, gate.get("delta") or 0.0, "delta") + 0.0  # + 0.0: -0.0 reads 0.0
        record.update(compare_to=gate["compare_to"], delta=delta, production_version=production)
        baseline, note = _production_score(ctx, gate["metric"], partition, model_name, production, production_store)
        if baseline is None:
            record.update(threshold=None, passed=True, note=note)
            return record
        record["production_value"] = baseline
        record["compared_on"] = compared_on(ctx, partition)
        if observed is not None:  # how much better (+) or worse (-) than production, at the metrics' 6 decimals
            record["difference"] = M.rounded(observed - baseline)
        threshold = M.rounded(baseline + delta)
    else:
        threshold = _number(ctx, gate.get("value"), "value")
    record["threshold"] = threshold
    if observed is None:
        record.update(passed=False, note=f"{gate['metric']} is undefined on this held-out split")
    else:
        record["passed"] = bool(OPS[op](observed, threshold))
    return record


def compared_on(ctx: StepContext, partition) -> str:
    """Which rows a champion/challenger check scored both models on: this run's held-out rows
    (data.prepare: the same rows evaluate used), and how they were chosen."""
    prepared = prepare(ctx, partition)
    split = train_step(ctx.ir).config.get("split") or {}
    if "hash_of" in split:
        how = f"split by a hash of {', '.join(split['hash_of'])}: a row stays on its side as data grows"
    elif "column" in split:
        how = f"the rows whose {split['column']} is {split.get('test_value', 'test')!r}"
    else:
        how = "a random split of this run's rows: other rows than earlier runs' when the data changed"
    where = f" of partition {partition!r}" if partition is not None else ""
    return f"both on this run's {len(prepared.y_test)} test rows{where} ({how})"


def _number(ctx: StepContext, value, key: str) -> float | int:
    """A gate's value or delta: a number, or ${params.NAME} filled in with this run's value."""
    ref = references.whole(value)
    if ref is not None:
        try:
            value = ctx.values.lookup(ref)
        except StepFailed:
            raise StepFailed(f"gate {key} {value!r}: no such parameter in this run (known: {', '.join(sorted(ctx.values.params)) or 'none'})") from None
        if isinstance(value, str):  # a value given as text (DAGSMITH_PARAMS from a caller): a number written out
            try:
                value = float(value)
            except ValueError:
                pass
    if isinstance(value, bool) or not isinstance(value, (int, float)) or not math.isfinite(value):
        raise StepFailed(f"gate {key} {value!r}{f' (from ${{{ref}}})' if ref else ''} is not a finite number")
    return value


def _production_score(ctx: StepContext, metric: str, partition, model_name, production, store=None):
    """(production model's score on the same held-out rows, None) or (None, why there is none)."""
    store = store or ctx.store
    if not model_name:
        return None, "no deployment model_name: nothing in production to compare with"
    if production is None:
        return None, f"no production model of {model_name!r} yet: passes"
    user_path(ctx.root)
    if not registry.has_partition(store, model_name, production, partition):
        what = f"partition {partition!r}" if partition is not None else "an unpartitioned model"
        return None, f"production version {production} of {model_name!r} has no {what}: passes"
    try:
        model = registry.load_model(store, model_name, production, partition)
        value = score(ctx, model, partition, [metric])[metric]
    except Exception as exc:  # e.g. its features are gone, or its code no longer imports
        return None, f"production version {production} cannot be scored on this data ({exc}): passes"
    if value is None:
        return None, f"{metric} of production version {production} is undefined on this split: passes"
    return value, None
