"""Pass: expand the spec's sections into IR steps (before edges from validation and gates)."""

from __future__ import annotations

from dataclasses import replace

from ..ir import Step
from ..spec.model import Spec, StepOptions
from .fanout import lower_training


def argv_for(ir_file: str, step_id: str) -> tuple[str, ...]:
    return ("dagsmith", "step", ir_file, step_id)


def make_step(ir_file: str, step_id: str, kind: str, options: StepOptions, **fields) -> Step:
    return Step(
        id=step_id,
        kind=kind,
        argv=argv_for(ir_file, step_id),
        image=options.image,
        resources=dict(options.resources),
        retries=options.retries,
        retry_delay=options.retry_delay,
        timeout=options.timeout,
        secrets=options.secrets,
        env=dict(options.env),
        **fields,
    )


def table(name: str) -> str:
    return f"table:{name}"


def expand(spec: Spec, ir_file: str) -> list[Step]:
    """Every step with its own dependencies (inputs, after); validation edges come later."""
    steps: list[Step] = []
    for source in spec.sources:
        config = {"type": source.type}
        for key in ("uri", "format", "query", "connection"):
            if getattr(source, key) is not None:
                config[key] = getattr(source, key)
        steps.append(make_step(
            ir_file, source.name, "source", source.options, outputs=(table(source.name),), config=config,
            connections=(source.connection,) if source.connection else (),
        ))
    for feature in spec.features:
        config = {"inputs": list(feature.inputs), "key": list(feature.key)}
        config.update({"sql": feature.sql} if feature.sql is not None else {"transform": feature.transform})
        steps.append(make_step(
            ir_file, feature.name, "feature", feature.options, depends_on=feature.inputs,
            inputs=tuple(table(i) for i in feature.inputs), outputs=(table(feature.name),), config=config,
        ))
    for check in spec.validations:
        steps.append(make_step(
            ir_file, check.name, "validate", check.options, depends_on=(check.on,), inputs=(table(check.on),),
            outputs=(f"validation:{check.name}",),
            config={
                "table": check.on,
                "on_failure": check.on_failure,
                "expectations": [{"type": e.type, "kwargs": e.kwargs} for e in check.expectations],
            },
        ))
    last = None  # the step whose completion means "trained / evaluated / deployed so far"
    if spec.training:
        keys = tuple(k for f in spec.features if f.name in spec.training.inputs for k in f.key)
        training_steps = lower_training(spec.training, ir_file, spec.evaluation, keys)
        steps.extend(training_steps)
        last = training_steps[-1].id
    builtin = {"train": last}
    if spec.evaluation:
        evaluation = spec.evaluation
        steps.append(make_step(
            ir_file, "evaluate", "evaluate", evaluation.options, depends_on=(last,), inputs=(f"model:{last}",),
            outputs=("metrics:evaluate",), config={"metrics": list(evaluation.metrics)},
        ))
        last = builtin["evaluate"] = "evaluate"
        if evaluation.gates:
            gates = [
                {k: v for k, v in (("metric", g.metric), ("op", g.op), ("value", g.value), ("compare_to", g.compare_to), ("delta", g.delta)) if v is not None}
                for g in evaluation.gates
            ]
            steps.append(make_step(
                ir_file, "gate", "gate", evaluation.options, depends_on=("evaluate",), inputs=("metrics:evaluate",),
                outputs=("gate:gate",), config={"gates": gates, "model_name": spec.deployment.model_name if spec.deployment else None},
            ))
            last = "gate"
    if spec.deployment:
        deployment = spec.deployment
        config = {"model_name": deployment.model_name, "target": deployment.target, "strategy": deployment.strategy}
        if deployment.canary_percent is not None:
            config["canary"] = {"traffic_percent": deployment.canary_percent}
        model = builtin["train"]
        steps.append(make_step(
            ir_file, "deploy", "deploy", deployment.options, depends_on=(last,),
            inputs=tuple(a for a in (f"model:{model}", "metrics:evaluate" if spec.evaluation else None, "gate:gate" if last == "gate" else None) if a),
            outputs=("deployment:deploy",), config=config,
        ))
        builtin["deploy"] = "deploy"
    for custom in spec.steps:
        after = tuple(builtin.get(name, name) for name in custom.after)
        config = {"python": custom.python} if custom.python else {"command": list(custom.command)}
        steps.append(make_step(ir_file, custom.name, "custom", custom.options, depends_on=after, config=config))
    return [replace(step, depends_on=tuple(sorted(set(step.depends_on)))) for step in steps]
