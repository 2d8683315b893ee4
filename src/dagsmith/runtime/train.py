"""Steps plan, train and select.

plan     finds the partition values at run time: commits items.json
         {"partitions": [...], "trials": n, "count": n * len(partitions)}; result {"items": count}.
train    without a fan-out: fits once, commits model.joblib + metrics.json.
         one item (--item N): fits trial N (model.params merged with the trial's parameters) on
         its partition, scores it on the held-out split, commits the item's model.joblib +
         trial.json {index, partition, trial, params, metrics, model_inputs, warnings?}.
         a fan-out without --item: runs every item in turn, in this process.
select   per partition, the best trial by the select metric and goal (ties: lowest index);
         commits models/<n>.joblib (n = the partition's position) + selection.json
         [{partition, index, trial, params, metrics, model}].

A model file (joblib) holds a dict: estimator (the fitted model), columns (its input columns),
encoding (how raw rows become those columns, see data.py), target, task ("classifier" |
"regressor"), partition, partition_by, params, trial, index, source (estimator path or
entrypoint), dropped (feature columns left out, with why).

The result of train (and of each item) has `model_inputs` (how many columns the model takes)
and, when there are any, `warnings`: the guard rails of guards.py (a text column that is mostly
numbers, a one-hot encoding wider than guards.MAX_ONE_HOT columns, a dropped column).

An entrypoint `package.module:function` is called as
``function(train, test, params, context) -> fitted model``: train and test are DataFrames of the
encoded feature columns plus the target column; params are model.params merged with the
trial's; context has rank (0), world_size (1) (with training.distributed: the worker's, see
distributed.py), output_dir (a folder whose files are committed
with the model), target, features (the feature column names), partition, trial, run_id. The
returned object needs `predict` (and `predict_proba` for roc_auc / log_loss), and must be
picklable by joblib. The spec's folder is on sys.path while it runs.
"""

from __future__ import annotations

import dataclasses
import shutil
from pathlib import Path

from . import guards
from . import metrics as M
from .context import StepContext, StepFailed
from .data import (
    distinct_partitions, estimator_task, import_object, load_inputs, make_estimator, prepare, train_step, user_path,
)
from .fanout import decode, item_count, partitions_of
from .store import StoreError
from .userscode import TrainContext, user_code_error

MODEL_FILE = "model.joblib"
RESULT_LIMIT = 10  # entries in a result before it is trimmed (the files keep everything)


# --- plan ----------------------------------------------------------------------------------

def run_plan(ctx: StepContext) -> dict:
    config = ctx.step.config
    frame = load_inputs(ctx, list(config["inputs"]))
    partitions = distinct_partitions(frame, config["partition_by"])
    if not partitions:
        raise StepFailed(f"partition_by column {config['partition_by']!r} has no values: nothing to train")
    trials = int(config.get("trials") or 1)
    count = trials * len(partitions)
    staging = ctx.stage()
    staging.write_json("items.json", {"partitions": partitions, "trials": trials, "count": count})
    ctx.store.commit(staging)
    result = {"items": count, "partitions": len(partitions), "trials": trials}
    result["values"] = partitions[:RESULT_LIMIT]
    return result


# --- train -----------------------------------------------------------------------------------

def _step_of_kind(ir, kind: str):
    return next((s for s in ir.steps if s.kind == kind), None)


def scored_metrics(ir, task: str) -> list[str]:
    """What a trial or a single model is scored on: the select metric + evaluation.metrics."""
    names = []
    select = _step_of_kind(ir, "select")
    if select is not None and select.config.get("metric"):
        names.append(select.config["metric"])
    evaluate = _step_of_kind(ir, "evaluate")
    if evaluate is not None:
        names.extend(evaluate.config.get("metrics") or [])
    if not names:
        names = list(M.DEFAULTS[task])
    return list(dict.fromkeys(names))


def fit(ctx: StepContext, prepared, params: dict, partition, trial: int | None, output_dir: Path):
    """Fit one model; returns (fitted model, task)."""
    config = train_step(ctx.ir).config
    model = config["model"]
    user_path(ctx.root)
    if config.get("distributed"):
        from .distributed import fit_distributed  # `workers` processes, each on its shard

        return fit_distributed(ctx, config, prepared, params, partition, trial, output_dir)
    if model.get("estimator"):
        estimator = make_estimator(config, params)
        try:
            estimator.fit(prepared.X_train, prepared.y_train)
        except Exception as exc:
            raise StepFailed(f"training {model['estimator']} failed"
                             + (f" (partition {partition!r})" if partition is not None else "")
                             + f": {type(exc).__name__}: {exc}") from None
        return estimator, estimator_task(estimator) or prepared.task
    import pandas as pd

    entry = model.get("entrypoint")
    if not entry:
        raise StepFailed("training.model needs an estimator or an entrypoint")
    function = import_object(entry, "entrypoint")
    target = config["target"]
    train = pd.concat([prepared.X_train, prepared.y_train.rename(target)], axis=1)
    test = pd.concat([prepared.X_test, prepared.y_test.rename(target)], axis=1)
    merged = {**(model.get("params") or {}), **params}
    context = TrainContext(rank=0, world_size=1, output_dir=output_dir, target=target, features=list(prepared.columns),
                           partition=partition, trial=trial, run_id=ctx.values.run_id, params=merged)
    try:
        fitted = function(train, test, merged, context)
    except Exception as exc:
        raise user_code_error(f"entrypoint {entry}", exc) from None
    if fitted is None or not hasattr(fitted, "predict"):
        raise StepFailed(f"entrypoint {entry} returned {type(fitted).__name__}: it must return a fitted model with predict()")
    return fitted, estimator_task(fitted) or prepared.task


def model_record(ctx: StepContext, fitted, task: str, prepared, params: dict, partition, trial, index) -> dict:
    config = train_step(ctx.ir).config
    classes = getattr(fitted, "classes_", None)
    return {
        "estimator": fitted,
        "columns": list(prepared.columns),
        "encoding": prepared.encoding,
        "dropped": dict(prepared.dropped),
        "target": config["target"],
        "task": task,
        "classes": [c.item() if hasattr(c, "item") else c for c in classes] if classes is not None else None,
        "partition": partition,
        "partition_by": config.get("partition_by"),
        "params": {**(config["model"].get("params") or {}), **params},
        "trial": trial,
        "index": index,
        "source": config["model"].get("estimator") or config["model"].get("entrypoint"),
    }


def _guard_rails(prepared, partition) -> dict:
    """The result's `warnings` (guards.py: where the encoding may be wrong; a partition's are
    prefixed with it) and `model_inputs` (how many columns the model takes)."""
    where = f"partition {partition!r}: " if partition is not None else ""
    out = {"model_inputs": len(prepared.columns)}
    if prepared.warnings:
        out["warnings"] = [where + line for line in prepared.warnings]
    return out


def _save(staging, record: dict) -> None:
    import joblib

    joblib.dump(_portable(record), staging.path(MODEL_FILE))


def _portable(value, seen: set | None = None, depth: int = 0):
    """The fitted model without what only describes the machine it was fitted on, so the same
    data and seed give the same file (and fingerprint) whatever the worker's CPU count: the
    OpenMP thread count a HistGradientBoosting model's binner records at fit time (None means
    "the machine's", decided again when the model is used, as sklearn does for n_threads=None)."""
    seen = set() if seen is None else seen
    if id(value) in seen or depth > 12:
        return value
    seen.add(id(value))
    if isinstance(value, dict):
        for item in value.values():
            _portable(item, seen, depth + 1)
    elif isinstance(value, (list, tuple)):
        for item in value:
            _portable(item, seen, depth + 1)
    elif type(value).__module__.startswith("sklearn.") and hasattr(value, "__dict__"):
        if type(value).__name__ == "_BinMapper" and getattr(value, "n_threads", None) is not None:
            value.n_threads = None
        for item in vars(value).values():
            _portable(item, seen, depth + 1)
    return value


def run_train(ctx: StepContext) -> dict:
    fanout = ctx.step.fanout
    if fanout is None:
        return _train_single(ctx)
    if ctx.item is not None:
        return train_item(ctx)
    count = item_count(ctx)
    summary, results = [], []
    for index in range(count):
        item_ctx = dataclasses.replace(ctx, item=index)  # shares ctx.notes
        result = train_item(item_ctx)
        item_ctx.write_result(result)
        results.append(result)
        summary.append({k: result[k] for k in ("index", "partition", "trial", "metrics")})
    out = {"items": count, "trials": summary[:RESULT_LIMIT]}
    warnings, counts = guards.summarize(results)
    if warnings:
        out["warnings"] = warnings[:RESULT_LIMIT * 5]
    if counts:
        out["model_inputs"] = counts[-1] if len(counts) == 1 else counts
    if ctx.notes:
        out["notes"] = list(ctx.notes)
    return out


def _train_single(ctx: StepContext) -> dict:
    prepared = prepare(ctx, None)
    staging = ctx.stage()
    output_dir = _output_dir(staging)
    fitted, task = fit(ctx, prepared, {}, None, None, output_dir)
    scores = M.compute(scored_metrics(ctx.ir, task), fitted, prepared.X_test, prepared.y_test, task,
                       M.functions_of(ctx.ir), ctx.root)
    _save(staging, model_record(ctx, fitted, task, prepared, {}, None, None, None))
    staging.write_json("metrics.json", scores)
    _drop_empty_output(output_dir)
    ctx.store.commit(staging)
    result = {"metrics": scores, "rows": {"train": len(prepared.y_train), "test": len(prepared.y_test)},
              "features": len(prepared.columns), **_guard_rails(prepared, None)}
    if ctx.notes:
        result["notes"] = list(ctx.notes)
    return result


def _output_dir(staging) -> Path:
    folder = staging.dir / "output"
    folder.mkdir(parents=True, exist_ok=True)
    return folder


def _drop_empty_output(output_dir: Path) -> None:
    if output_dir.exists() and not any(output_dir.iterdir()):
        output_dir.rmdir()


def train_item(ctx: StepContext) -> dict:
    """Fit and score one item of the train fan-out; commits the item's outputs."""
    fanout = ctx.step.fanout
    partition, trial, params = decode(fanout, ctx.item, partitions_of(ctx))
    prepared = prepare(ctx, partition)
    staging = ctx.stage()
    output_dir = _output_dir(staging)
    fitted, task = fit(ctx, prepared, params, partition, trial, output_dir)
    scores = M.compute(scored_metrics(ctx.ir, task), fitted, prepared.X_test, prepared.y_test, task,
                       M.functions_of(ctx.ir), ctx.root)
    _save(staging, model_record(ctx, fitted, task, prepared, params, partition, trial, ctx.item))
    record = {"index": ctx.item, "partition": partition, "trial": trial, "params": params, "metrics": scores,
              **_guard_rails(prepared, partition)}
    staging.write_json("trial.json", record)
    _drop_empty_output(output_dir)
    ctx.store.commit(staging)
    return dict(record)


# --- select -----------------------------------------------------------------------------------

def best_trial(trials: list[dict], metric: str | None, goal: str | None) -> dict:
    """The best of a partition's trials (trial.json records); ties and undefined scores: lowest index."""
    ordered = sorted(trials, key=lambda t: t["index"])
    if metric is None or len(ordered) == 1:
        return ordered[0]
    goal = goal or M.GOALS.get(metric, "max")
    scored = [t for t in ordered if t["metrics"].get(metric) is not None]
    if not scored:
        return ordered[0]
    sign = -1 if goal == "max" else 1
    return min(scored, key=lambda t: (sign * t["metrics"][metric], t["index"]))


def run_select(ctx: StepContext) -> dict:
    train = train_step(ctx.ir)
    fanout = train.fanout
    if fanout is None:
        raise StepFailed("select needs a train fan-out (a sweep or partition_by)")
    config = ctx.step.config
    metric, goal = config.get("metric"), config.get("goal")
    partitions = partitions_of(ctx, train) if fanout.partition_by else [None]
    staging = ctx.stage()
    selection, every_trial = [], []
    for position, partition in enumerate(partitions):
        trials = []
        for trial in range(fanout.trials):
            index = position * fanout.trials + trial
            try:
                trials.append(ctx.read_json(train.id, "trial.json", item=index))
            except StoreError:
                raise StepFailed(f"item {index} of {train.id!r} has no outputs in run {ctx.values.run_id!r}: "
                                 "every trial must finish before select") from None
        every_trial.extend(trials)
        best = best_trial(trials, metric, goal)
        name = f"models/{position}.joblib"
        shutil.copyfile(ctx.input_file(train.id, MODEL_FILE, item=best["index"]), staging.path(name))
        selection.append({"partition": partition, "index": best["index"], "trial": best["trial"],
                          "params": best["params"], "metrics": best["metrics"], "model": name})
    staging.write_json("selection.json", selection)
    if config.get("mlflow"):  # deployment.mlflow: every trial becomes an MLflow run (before the commit: a retry logs the rest)
        from .deploy_mlflow import log_trials

        log_trials(ctx, config["mlflow"], train.id, every_trial, MODEL_FILE)
    ctx.store.commit(staging)
    return {"count": len(selection), "metric": metric, "goal": goal, "selected": _best_few(selection, metric, goal)}


def _best_few(selection: list[dict], metric, goal) -> list[dict]:
    brief = [{k: entry[k] for k in ("partition", "index", "params", "metrics")} for entry in selection]
    if len(brief) <= RESULT_LIMIT or metric is None:
        return brief[:RESULT_LIMIT]
    sign = -1 if (goal or M.GOALS.get(metric, "max")) == "max" else 1
    defined = [e for e in brief if e["metrics"].get(metric) is not None]
    return sorted(defined, key=lambda e: (sign * e["metrics"][metric], e["index"]))[:RESULT_LIMIT]
