"""Turn a checked spec document into the typed Spec (defaults applied, durations in seconds)."""

from __future__ import annotations

import hashlib
import json

from .. import references
from .model import (
    ALL_READ_OPTIONS, CustomStep, Deployment, Distributed, Evaluation, Expectation, Feature, Gate, MetricFunction,
    NewDataTrigger, Param, Predict, Source, Spec, StepOptions, Sweep, Training, Validation,
)
from .values import GivenText, parse_duration

DEFAULT_BATCH_ROWS = 10_000  # predict: rows scored at once
_OPTION_KEYS = ("image", "retries", "retry_delay", "timeout", "resources", "secrets", "env")


def plain(node):
    """YMap/YList -> dict/list (for hashing and for the IR, which must not carry marks)."""
    if isinstance(node, dict):
        return {key: plain(value) for key, value in node.items()}
    if isinstance(node, list):
        return [plain(value) for value in node]
    return node


# The texts a step fills in when it runs (references.substitute / rewrite_sql): they keep `$${`
# for the runtime. A path part None matches any name or index.
_FILLED_IN = (
    ("sources", None, "uri"),
    ("sources", None, "query"),
    ("features", None, "sql"),
    ("steps", None, "run", "command", None),
    *((section, "env", None) for section in ("defaults", "training", "evaluation", "deployment")),
    *((section, None, "env", None) for section in ("sources", "features", "validation", "steps")),
    ("predict", None, "env", None),
)


def _filled_in(path: tuple) -> bool:
    return any(len(path) == len(pattern) and all(p is None or p == part for p, part in zip(pattern, path))
               for pattern in _FILLED_IN)


def literal_texts(node, path: tuple = ()):
    """Every text nothing fills in (descriptions, model and expectation arguments, param values
    written in the spec, backend options...) with `$${` as the literal `${` it stands for
    (references.literal): `$${` means `${` in every text of a spec. The texts a step fills in
    when it runs keep `$${` (the runtime unescapes them as it fills them in)."""
    if isinstance(node, GivenText):  # a --param value: data, as given
        return str(node)
    if isinstance(node, str):
        return node if _filled_in(path) else references.literal(node)
    if isinstance(node, dict):
        return {key: value if isinstance(key, str) and key.startswith("x-") else literal_texts(value, path + (key,))
                for key, value in node.items()}
    if isinstance(node, list):
        return [literal_texts(value, path + (index,)) for index, value in enumerate(node)]
    return node


def spec_hash(doc) -> str:
    canonical = json.dumps(plain(doc), sort_keys=True, separators=(",", ":"), ensure_ascii=False)
    return hashlib.sha256(canonical.encode("utf-8")).hexdigest()


def _options(defaults: dict, own: dict) -> StepOptions:
    merged = {**defaults, **{k: own[k] for k in _OPTION_KEYS if k in own}}
    resources = {**defaults.get("resources", {}), **own.get("resources", {})}
    return StepOptions(
        image=merged.get("image"),
        retries=merged.get("retries", 0),
        retry_delay=parse_duration(merged.get("retry_delay", "1m")),
        timeout=parse_duration(merged["timeout"]) if "timeout" in merged else None,
        resources={k: (str(v) if k != "gpu" else v) for k, v in sorted(resources.items()) if not k.startswith("x-")},
        secrets=tuple(merged.get("secrets", ())),
        env={k: str(v).lower() if isinstance(v, bool) else str(v) for k, v in sorted(merged.get("env", {}).items())},
    )


def build_spec(doc, spec_dir: str) -> Spec:
    doc = plain(doc)
    hashed = spec_hash(doc)  # of the spec as written
    doc = literal_texts(doc)
    defaults = doc.get("defaults", {})
    pipeline = doc["pipeline"]
    params = tuple(
        Param(
            name=name, type=p["type"], default=p.get("default"), required="default" not in p,
            description=p.get("description"), enum=tuple(p["enum"]) if "enum" in p else None,
        )
        for name, p in doc.get("params", {}).items()
    )
    sources = tuple(
        Source(
            name=name, type=s["type"], options=_options(defaults, s), uri=s.get("uri"),
            format=s.get("format", "parquet") if s["type"] == "s3" else None,
            connection=s.get("connection"), query=s.get("query"), description=s.get("description"),
            read={k: ("null" if k == "on_bad_value" and s[k] is None else s[k]) for k in ALL_READ_OPTIONS if k in s},
        )
        for name, s in doc.get("sources", {}).items()
    )
    features = tuple(
        Feature(
            name=name, inputs=tuple(f.get("inputs", ())), options=_options(defaults, f), sql=f.get("sql"),
            transform=f.get("transform"), key=(f["key"],) if isinstance(f.get("key"), str) else tuple(f.get("key", ())),
            description=f.get("description"),
        )
        for name, f in doc.get("features", {}).items()
    )
    validations = tuple(
        Validation(
            name=v["name"], on=v["on"],
            expectations=tuple(Expectation(type=k, kwargs=kw or {}) for e in v["expectations"] for k, kw in e.items()),
            on_failure=v.get("on_failure", "fail"), options=_options(defaults, v), description=v.get("description"),
        )
        for v in doc.get("validation", [])
    )
    triggers = doc.get("triggers", {})
    return Spec(
        name=pipeline["name"],
        description=pipeline.get("description"),
        owner=pipeline.get("owner"),
        tags=tuple(pipeline.get("tags", ())),
        params=params,
        sources=sources,
        features=features,
        validations=validations,
        training=_training(doc["training"], defaults) if "training" in doc else None,
        evaluation=_evaluation(doc["evaluation"], defaults) if "evaluation" in doc else None,
        deployment=_deployment(doc["deployment"], defaults) if "deployment" in doc else None,
        schedule=triggers.get("schedule"),
        on_new_data=tuple(
            NewDataTrigger(
                source=t["source"],
                min_interval=parse_duration(t["min_interval"]) if "min_interval" in t else None,
                queue=t.get("queue"),
            )
            for t in triggers.get("on_new_data", [])
        ),
        steps=tuple(
            CustomStep(
                name=name, after=tuple(s.get("after", ())), python=s["run"].get("python"),
                command=tuple(s["run"]["command"]) if "command" in s["run"] else None,
                options=_options(defaults, s), description=s.get("description"),
                inputs=tuple(i for i in s.get("inputs", ()) if isinstance(i, str)),
                models=tuple(i["model"] for i in s.get("inputs", ()) if isinstance(i, dict)),
                outputs=tuple(s.get("outputs", ())),
            )
            for name, s in doc.get("steps", {}).items()
        ),
        backends={k: v for k, v in doc.get("backends", {}).items() if not k.startswith("x-")},
        spec_dir=spec_dir,
        spec_hash=hashed,
        predict=tuple(
            Predict(
                name=name, model=p["model"], input=p["input"],
                output_columns=tuple(p.get("output_columns", ("prediction", "probability"))),
                batch_rows=p.get("batch_rows", DEFAULT_BATCH_ROWS), options=_options(defaults, p),
                description=p.get("description"), rows_per_task=p.get("rows_per_task"),
            )
            for name, p in doc.get("predict", {}).items()
        ),
    )


def _training(t: dict, defaults: dict) -> Training:
    split = t.get("split", {})
    if "column" in split:
        split = {"column": split["column"], "test_value": split.get("test_value", "test")}
    elif "hash_of" in split:
        split = {"hash_of": list(split["hash_of"]), "test_fraction": split.get("test_fraction", 0.2)}
    else:
        split = {"test_size": split.get("test_size", 0.2), "seed": split.get("seed", 0)}
    sweep = t.get("sweep")
    distributed = t.get("distributed")
    model = t["model"]
    return Training(
        inputs=tuple(t["inputs"]),
        target=t["target"],
        split=split,
        estimator=model.get("estimator"),
        entrypoint=model.get("entrypoint"),
        model_params=model.get("params", {}),
        options=_options(defaults, t),
        partition_by=t.get("partition_by"),
        partitions=tuple(t["partitions"]) if "partitions" in t else None,
        sweep=Sweep(
            method=sweep["method"],
            parameters=sweep["parameters"],
            samples=sweep.get("samples"),
            seed=sweep.get("seed", 0),
            max_parallel=sweep.get("max_parallel"),
            select_metric=sweep["select"]["metric"],
            select_goal=sweep["select"]["goal"],
        ) if sweep else None,
        distributed=Distributed(
            framework=distributed["framework"],
            workers=distributed["workers"],
            gpus_per_worker=distributed.get("gpus_per_worker", 0),
        ) if distributed else None,
    )


def _evaluation(e: dict, defaults: dict) -> Evaluation:
    gates = tuple(
        Gate(metric=g["metric"], op=g["op"], value=g.get("value"), compare_to=g.get("compare_to"),
             delta=g.get("delta", 0.0) if "compare_to" in g else None)
        for g in e.get("gates", [])
    )
    names, functions = [], []
    for item in e["metrics"]:
        if isinstance(item, dict):  # {name, function, needs, params}: a user metric
            names.append(item["name"])
            functions.append(MetricFunction(item["name"], item["function"], item.get("needs", "prediction"), plain(item.get("params") or {})))
        else:
            names.append(item)
            if ":" in item:  # package.module:function, named as written
                functions.append(MetricFunction(item, item))
    return Evaluation(metrics=tuple(names), gates=gates, options=_options(defaults, e), functions=tuple(functions))


def _deployment(d: dict, defaults: dict) -> Deployment:
    strategy = d.get("strategy", "replace")
    return Deployment(
        model_name=d["model_name"],
        target=d.get("target", "local"),
        strategy=strategy,
        canary_percent=d["canary"]["traffic_percent"] if strategy == "canary" else None,
        options=_options(defaults, d),
        targets={k: dict(d[k]) for k in ("sagemaker", "kserve", "mlflow") if k in d} or None,
    )
