"""Pass: expand the spec's sections into IR steps (before edges from validation and gates)."""

from __future__ import annotations

from dataclasses import replace

from ..ir import Step
from ..spec.model import Spec
from .fanout import lower_training, rows_fanout
from .make import make_step, table


def upstream_tables(spec: Spec, names) -> tuple[str, ...]:
    """The tables `names` and every table they are derived from through features, in spec order
    (sources, then features)."""
    derived_from = {feature.name: feature.inputs for feature in spec.features}
    derived_from.update({output: custom.inputs for custom in spec.steps for output in custom.outputs})
    seen: set[str] = set()
    todo = list(names)
    while todo:
        name = todo.pop()
        if name not in seen:
            seen.add(name)
            todo.extend(derived_from.get(name, ()))
    order = [source.name for source in spec.sources] + [feature.name for feature in spec.features]
    order += [output for custom in spec.steps for output in custom.outputs]
    return tuple(table(name) for name in order if name in seen)


def expand(spec: Spec) -> list[Step]:
    """Every step with its own dependencies (inputs, after); validation edges come later."""
    steps: list[Step] = []
    for source in spec.sources:
        config = {"type": source.type}
        for key in ("uri", "format", "query", "connection"):
            if getattr(source, key) is not None:
                config[key] = getattr(source, key)
        config.update(source.read)  # in the step's config, hence in its cache key
        steps.append(make_step(
            source.name, "source", source.options, outputs=(table(source.name),), config=config,
            connections=(source.connection,) if source.connection else (),
        ))
    for feature in spec.features:
        config = {"inputs": list(feature.inputs), "key": list(feature.key)}
        config.update({"sql": feature.sql} if feature.sql is not None else {"transform": feature.transform})
        steps.append(make_step(
            feature.name, "feature", feature.options, depends_on=feature.inputs,
            inputs=tuple(table(i) for i in feature.inputs), outputs=(table(feature.name),), config=config,
        ))
    for check in spec.validations:
        steps.append(make_step(
            check.name, "validate", check.options, depends_on=(check.on,), inputs=(table(check.on),),
            outputs=(f"validation:{check.name}",),
            config={
                "table": check.on,
                "on_failure": check.on_failure,
                "expectations": [{"type": e.type, "kwargs": e.kwargs} for e in check.expectations],
            },
        ))
    last = None  # the step whose completion means "trained / evaluated / deployed so far"
    # MLflow tracking: select logs the trials, gate reads the champion, deploy registers the model
    mlflow = ((spec.deployment.targets or {}).get("mlflow") if spec.deployment else None)
    if spec.training:
        keys = tuple(k for f in spec.features if f.name in spec.training.inputs for k in f.key)
        training_steps = lower_training(spec.training, spec.evaluation, keys)
        if mlflow:
            training_steps = [replace(s, config={**s.config, "mlflow": mlflow}) if s.kind == "select" else s
                              for s in training_steps]
        steps.extend(training_steps)
        last = training_steps[-1].id
    builtin = {"train": last}
    # Evaluate and gate score models on the held-out split, which they re-derive from the
    # training tables (runtime/data.py), so they read those tables as well as the model.
    training_tables = tuple(table(name) for name in spec.training.inputs) if spec.training else ()
    if spec.evaluation:
        evaluation = spec.evaluation
        model = f"model:{last}"
        steps.append(make_step(
            "evaluate", "evaluate", evaluation.options, depends_on=(last,), inputs=(model,) + training_tables,
            outputs=("metrics:evaluate",), config={"metrics": list(evaluation.metrics), **metric_functions(evaluation)},
        ))
        last = builtin["evaluate"] = "evaluate"
        if evaluation.gates:
            gates = [
                {k: v for k, v in (("metric", g.metric), ("op", g.op), ("value", g.value), ("compare_to", g.compare_to), ("delta", g.delta)) if v is not None}
                for g in evaluation.gates
            ]
            # The model too: gate goes through its models per partition, and scores them itself
            # for a metric evaluate did not compute (and production's on the same rows).
            steps.append(make_step(
                "gate", "gate", evaluation.options, depends_on=("evaluate",),
                inputs=("metrics:evaluate", model) + training_tables,
                outputs=("gate:gate",), config={"gates": gates, "model_name": spec.deployment.model_name if spec.deployment else None,
                                                **({"mlflow": mlflow} if mlflow else {})},
            ))
            last = "gate"
    if spec.deployment:
        deployment = spec.deployment
        config = {"model_name": deployment.model_name, "target": deployment.target, "strategy": deployment.strategy}
        if deployment.canary_percent is not None:
            config["canary"] = {"traffic_percent": deployment.canary_percent}
        config.update(deployment.targets or {})  # sagemaker / kserve / mlflow settings, as written
        model = builtin["train"]
        # Every table the model was trained from: the version's lineage records their fingerprints.
        lineage = upstream_tables(spec, spec.training.inputs) if spec.training else ()
        steps.append(make_step(
            "deploy", "deploy", deployment.options, depends_on=(last,),
            inputs=tuple(a for a in (f"model:{model}", "metrics:evaluate" if spec.evaluation else None, "gate:gate" if last == "gate" else None) if a) + lineage,
            outputs=("deployment:deploy",), config=config,
        ))
        builtin["deploy"] = "deploy"
    for custom in spec.steps:
        after = tuple(builtin.get(name, name) for name in custom.after)
        config = {"python": custom.python} if custom.python else {"command": list(custom.command)}
        # What it reads: tables by name, this run's model (from the step that makes it, which it
        # waits for), the registry's by alias or version (no edge: `after: [deploy]` orders it).
        models = tuple(f"model:{builtin['train']}" if ref == "trained" else f"registry:{ref}" for ref in custom.models)
        steps.append(make_step(
            custom.name, "custom", custom.options,
            depends_on=after + custom.inputs + ((builtin["train"],) if "trained" in custom.models else ()),
            inputs=tuple(table(name) for name in custom.inputs) + models,
            outputs=tuple(table(name) for name in custom.outputs), config=config,
        ))
    steps.extend(predict_steps(spec, builtin))
    # A table a custom step writes is made by that step: whoever reads it waits for the step.
    producer = {output: custom.name for custom in spec.steps for output in custom.outputs}
    return [replace(step, depends_on=tuple(sorted({producer.get(d, d) for d in step.depends_on}))) for step in steps]


def metric_functions(evaluation) -> dict:
    """The user metrics' definitions, {"metric_functions": {name: {function, needs, params}}},
    for evaluate's config (train, gate and the cache read them there); {} when there are none."""
    if not evaluation.functions:
        return {}
    return {"metric_functions": {f.name: {"function": f.function, "needs": f.needs, "params": dict(f.params)}
                                 for f in evaluation.functions}}


def predict_steps(spec: Spec, builtin: dict) -> list[Step]:
    """Batch scoring: each `predict:` entry is one step writing the table of its name. `model:
    trained` reads this run's model (after the train/select step); a registry alias waits for this
    run's deploy when the spec has one (so `production` is the model as this run left it); a
    version number reads that version as it is. With `rows_per_task`, the step is a fan-out over
    row ranges of its input (compiler/fanout.rows_fanout)."""
    out = []
    model_name = spec.deployment.model_name if spec.deployment else None
    for predict in spec.predict:
        depends_on = [predict.input]
        if predict.model == "trained":
            depends_on.append(builtin["train"])
            model = f"model:{builtin['train']}"
        else:
            model = f"registry:{predict.model}"
            if not isinstance(predict.model, int) and "deploy" in builtin:
                depends_on.append(builtin["deploy"])
        out.append(make_step(
            predict.name, "predict", predict.options, depends_on=tuple(depends_on),
            inputs=(table(predict.input), model), outputs=(table(predict.name),),
            config={"model": predict.model, "model_name": model_name, "input": predict.input,
                    "output_columns": list(predict.output_columns), "batch_rows": predict.batch_rows},
            fanout=rows_fanout(predict.rows_per_task),
        ))
    return out
