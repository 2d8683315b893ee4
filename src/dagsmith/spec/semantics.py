"""Checks the schema cannot express: references, cycles, name collisions, value languages,
Great Expectations names, secrets in plain sight. Runs on a schema-valid document, so every
value already has the type the schema promises; each check appends Diagnostics and goes on.
"""

from __future__ import annotations

import json
from functools import lru_cache
from importlib import resources


from .. import metricnames, naming, references
from ..graphs import CycleError, topological_order
from ..storeuri import store_uri
from ..errors import URL_PASSWORD, Diagnostic, did_you_mean, format_path
from .document import locate
from .model import ALL_READ_OPTIONS, READ_OPTIONS
from .values import GivenText, check_class_path, check_cron, check_function_ref, parse_duration, parse_quantity
from .yamlpos import SURROGATE_MESSAGE, YMap, has_lone_surrogate


# The keys of each kind of training.split (a split uses the keys of exactly one kind).
_SPLIT_KINDS = {
    "{test_size, seed}": ("test_size", "seed"),
    "{column, test_value}": ("column", "test_value"),
    "{hash_of, test_fraction}": ("hash_of", "test_fraction"),
}

BUILTIN_STEPS = ("train", "select", "evaluate", "gate", "deploy", "plan")  # reserved step ids
# Tasks that backends add (fan-out range listings, min_interval admission) have ids starting with
# "dagsmith-" (backends/plan.py); no name may start so on any backend.
RESERVED_PREFIX = "dagsmith"
AFTER_BUILTINS = {"train": "training", "evaluate": "evaluation", "deploy": "deployment"}
RUN_VALUES = references.RUN_VALUES
_URL_PASSWORD = URL_PASSWORD


@lru_cache(maxsize=1)
def gx_expectations() -> dict:
    text = resources.files("dagsmith.spec").joinpath("gx_expectations.json").read_text(encoding="utf-8")
    return json.loads(text)["expectations"]


_ROOT = object()


def secrets_in_plain_sight(doc, node=_ROOT, path: tuple = ()) -> list[Diagnostic]:
    """A URL with a password anywhere in the spec is a leaked secret (runs before the schema)."""
    node = doc if node is _ROOT else node  # not None: a null value must not restart at the root
    out = []
    if isinstance(node, str) and _URL_PASSWORD.search(node):
        out.append(Diagnostic(
            locate(doc, path), format_path(path),
            "contains a URL with a password: secrets never go in a spec. Use a connection NAME "
            "(Airflow connection / DAGSMITH_CONN_<NAME>) or `secrets: [NAME]`",
        ))
    elif isinstance(node, dict):
        for key, value in node.items():
            if _URL_PASSWORD.search(key):
                out.append(Diagnostic(
                    locate(doc, path + (key,), key=True), format_path(path + (key,)),
                    "this key contains a URL with a password: secrets never go in a spec",
                ))
                continue
            out.extend(secrets_in_plain_sight(doc, value, path + (key,)))
    elif isinstance(node, list):
        for index, value in enumerate(node):
            out.extend(secrets_in_plain_sight(doc, value, path + (index,)))
    return out


def unwritable_text(doc, node=_ROOT, path: tuple = ()) -> list[Diagnostic]:
    """Text no file can hold: every key and value with a lone surrogate (runs before the schema)."""
    node = doc if node is _ROOT else node
    message = SURROGATE_MESSAGE  # yamlpos reports them in the files; this also checks --param values
    if isinstance(node, str):
        return [Diagnostic(locate(doc, path), format_path(path), message)] if has_lone_surrogate(node) else []
    out = []
    if isinstance(node, dict):
        for key, value in node.items():
            if isinstance(key, str) and has_lone_surrogate(key):
                out.append(Diagnostic(locate(doc, path + (key,), key=True), format_path(path + (key,)), "this key " + message))
                continue
            out.extend(unwritable_text(doc, value, path + (key,)))
    elif isinstance(node, list):
        for index, value in enumerate(node):
            out.extend(unwritable_text(doc, value, path + (index,)))
    return out


class _Checker:
    def __init__(self, doc: YMap):
        self.doc = doc
        self.problems: list[Diagnostic] = []
        self.names: dict[str, tuple] = {}  # name -> path of its definition
        self.watched: set[tuple] = set()  # the uris of watched sources already reported

    def error(self, path: tuple, message: str, hint: str | None = None, *, key: bool = False) -> None:
        self.problems.append(Diagnostic(locate(self.doc, path, key=key), format_path(path), message, hint))

    def warn(self, path: tuple, message: str, hint: str | None = None) -> None:
        """A problem that does not stop anything: printed, and validation still passes."""
        self.problems.append(Diagnostic(locate(self.doc, path), format_path(path), message, hint, level="warning"))

    def run(self) -> list[Diagnostic]:
        self.collect_names()
        self.check_references()
        self.check_cycles()
        self.check_training()
        self.check_evaluation_and_deployment()
        self.check_predict()
        self.check_steps_and_features()
        self.check_source_options()
        self.check_validations()
        self.check_values()
        self.check_env()
        self.check_params()
        self.check_sql()
        return self.problems

    # --- names ----------------------------------------------------------------------------

    def collect_names(self) -> None:
        doc = self.doc
        defined: list[tuple[str, tuple, str]] = []
        for section, kind in (("sources", "source"), ("features", "feature"), ("steps", "step"), ("predict", "predict")):
            for name in doc.get(section, {}):
                defined.append((name, (section, name), kind))
        for index, item in enumerate(doc.get("validation", [])):
            defined.append((item["name"], ("validation", index, "name"), "validation"))
        for step_name, step in doc.get("steps", {}).items():  # a custom step's tables join the names
            for index, output in enumerate(step.get("outputs", [])):
                defined.append((output, ("steps", step_name, "outputs", index), "step output"))
        for name, path, kind in defined:
            key = _is_key(path)
            if name in BUILTIN_STEPS:
                self.error(path, f"'{name}' is a reserved step name (reserved: {', '.join(BUILTIN_STEPS)})", key=key)
            elif name.lower().startswith(RESERVED_PREFIX):
                self.error(path, f"'{name}': names starting with '{RESERVED_PREFIX}' are reserved for the tasks dagsmith adds (fan-out listings, min_interval admission); rename it", key=key)
            elif name in self.names:
                first_path = self.names[name]
                first = locate(self.doc, first_path, key=_is_key(first_path))
                here = locate(self.doc, path, key=key)
                where = f"line {first.line}" if first.file == here.file else f"{first.file}:{first.line}"
                self.error(path, f"name '{name}' is already used by the {self.kind_of(name)} at {where}; names are unique across sources, features, validations and steps"
                                 + (" (and the tables steps write)" if "step output" in (kind, self.kind_of(name)) else ""), key=key)
            else:
                self.names[name] = path
        clashes: dict[tuple[str, str], list[str]] = {}
        # backends name tasks after steps; a step's output table is no task
        tasks = [name for name in self.names if self.kind_of(name) != "step output"]
        for backend, ident, first, second in naming.collisions(tasks + list(BUILTIN_STEPS)):
            clashes.setdefault((first, second), []).append(f"'{ident}' on {backend}")
        for (first, second), where in clashes.items():
            builtin = first if first in BUILTIN_STEPS else second if second in BUILTIN_STEPS else None
            if builtin:
                name = second if builtin == first else first
                path = self.names[name]
                self.error(path, f"name '{name}' becomes {' and '.join(where)}, the id of the built-in step '{builtin}'; rename it", key=_is_key(path))
            else:
                path = self.names[second]
                self.error(path, f"names '{first}' and '{second}' both become {' and '.join(where)}; rename one", key=_is_key(path))

    def kind_of(self, name: str) -> str | None:
        path = self.names.get(name)
        if path is None:
            return None
        if path[0] == "steps" and len(path) == 4:
            return "step output"  # ("steps", step, "outputs", index): a table a custom step writes
        return {"sources": "source", "features": "feature", "steps": "step", "validation": "validation",
                "predict": "predict"}[path[0]]

    def producer_of(self, name: str) -> str:
        """The step id that makes table `name`: a custom step for its outputs, else the name."""
        path = self.names.get(name)
        return path[1] if path is not None and self.kind_of(name) == "step output" else name

    def reference(self, path: tuple, name: str, allowed: tuple[str, ...], what: str) -> None:
        kind = self.kind_of(name)
        if kind in allowed:
            return
        candidates = [n for n in self.names if self.kind_of(n) in allowed]
        if kind is None:
            self.error(path, f"unknown {what} '{name}'", did_you_mean(name, candidates))
        else:
            self.error(path, f"'{name}' is a {kind}, not a {what}")

    # --- references and graph ---------------------------------------------------------------

    def check_references(self) -> None:
        doc = self.doc
        tables = ("source", "feature", "step output", "predict")  # a predict's output table is read like a feature's
        # custom steps' outputs are tables too; the words stay as they were for specs without any
        table = "source, feature or step output" if any(self.kind_of(n) == "step output" for n in self.names) else "source or feature"
        for name, feature in doc.get("features", {}).items():
            for index, ref in enumerate(feature.get("inputs", [])):
                if ref != name:  # a self-reference is reported as a cycle
                    self.reference(("features", name, "inputs", index), ref, tables, table)
        for index, item in enumerate(doc.get("validation", [])):
            self.reference(("validation", index, "on"), item["on"], tables, table)
        for name, item in doc.get("predict", {}).items():
            if item["input"] != name:
                self.reference(("predict", name, "input"), item["input"], tables,
                               "source, feature, step output or predict table" if "step output" in table
                               else "source, feature or predict table")
        training = doc.get("training")
        if training:
            for index, ref in enumerate(training["inputs"]):
                self.reference(("training", "inputs", index), ref, tables, table)
        for name, step in doc.get("steps", {}).items():
            for index, ref in enumerate(step.get("after", [])):
                path = ("steps", name, "after", index)
                if ref in AFTER_BUILTINS:
                    if AFTER_BUILTINS[ref] not in doc:
                        self.error(path, f"'{ref}' runs only when the spec has a '{AFTER_BUILTINS[ref]}' section")
                elif self.kind_of(ref) == "step output":
                    self.error(path, f"'{ref}' is a table step '{self.producer_of(ref)}' writes, not a step: "
                                     f"put it in inputs (or write after: [{self.producer_of(ref)}])")
                elif ref != name and ref not in self.names:
                    self.error(path, f"unknown step '{ref}'", did_you_mean(ref, list(self.names) + list(AFTER_BUILTINS)))
            for index, ref in enumerate(step.get("inputs", [])):
                path = ("steps", name, "inputs", index)
                if isinstance(ref, str):
                    if self.names.get(ref, ())[:3] == ("steps", name, "outputs"):
                        self.error(path, f"'{ref}' is one of this step's own outputs: a step cannot read what it writes")
                    else:
                        self.reference(path, ref, tables, table)
                elif isinstance(ref, dict) and "model" in ref:
                    self.check_model_input(path + ("model",), ref["model"])
        for index, trigger in enumerate(doc.get("triggers", {}).get("on_new_data", [])):
            path = ("triggers", "on_new_data", index, "source")
            self.reference(path, trigger["source"], ("source",), "source")
            source = doc.get("sources", {}).get(trigger["source"])
            if source and source["type"] == "sql":
                self.error(path, f"source '{trigger['source']}' is a sql query: on_new_data watches files and s3 prefixes")
            elif source and isinstance(source.get("uri"), str):
                self.check_watched_uri(trigger["source"], source["uri"], index)
            queue = trigger.get("queue")
            found = next(references.references(queue), None) if isinstance(queue, str) else None
            if found is not None:
                from .yamlpos import text_position

                path = ("triggers", "on_new_data", index, "queue")
                self.problems.append(Diagnostic(text_position(locate(self.doc, path), queue, found.start), format_path(path),
                                                f"'{queue[found.start:found.end]}': the queue a trigger listens to is fixed when the "
                                                "pipeline is deployed, before any run's values exist: write its URL"))

    def check_model_input(self, path: tuple, model) -> None:
        """`{model: trained}` is this run's model (needs training); an alias or version is the
        registry's model named by deployment.model_name (needs a deployment section)."""
        if model == "trained":
            if "training" not in self.doc:
                self.error(path, "model: trained is the model this run trains: the spec has no training section")
        elif "deployment" not in self.doc:
            self.error(path, f"model: {model} is a version of the registry's model named by deployment.model_name: "
                             "the spec has no deployment section")

    def check_watched_uri(self, name: str, uri: str, index: int) -> None:
        """A watched source's location is fixed: each orchestrator's trigger (an EventBridge rule,
        an Argo Events filter, an Airflow Asset) is set up when the pipeline is deployed, before any
        run has values, and its run's values come after the data. A reference there could never
        match (it was written as it stands), so it is an error at the uri; `$${` is a literal `${`."""
        found = next(references.references(uri), None)
        if found is not None and ("sources", name, "uri") not in self.watched:
            self.watched.add(("sources", name, "uri"))
            from .yamlpos import text_position

            path = ("sources", name, "uri")
            self.problems.append(Diagnostic(
                text_position(locate(self.doc, path), uri, found.start), format_path(path),
                f"'{uri[found.start:found.end]}': triggers.on_new_data[{index}] watches this source, and a trigger watches a "
                "location fixed when the pipeline is deployed, before any run's values exist: write the location itself "
                "(an environment can set it per deployment)"))

    def check_cycles(self) -> None:
        """Edges point from a step to what it depends on, so a cycle reads "a needs b needs a"."""
        where: dict[tuple[str, str], tuple] = {}
        for section, field in (("features", "inputs"), ("steps", "after"), ("steps", "inputs")):
            for name, item in self.doc.get(section, {}).items():
                if self.names.get(name) != (section, name):
                    continue  # a duplicate or reserved name, already reported
                for index, ref in enumerate(item.get(field, [])):
                    if isinstance(ref, dict):  # {model: trained} waits for training
                        if ref.get("model") == "trained" and "training" in self.doc:
                            where.setdefault((name, "train"), (section, name, field, index))
                        continue
                    if section == "steps" and field == "inputs" and (
                            self.kind_of(ref) not in ("source", "feature", "step output", "predict") or self.producer_of(ref) == name):
                        continue  # reported as a reference
                    where.setdefault((name, ref), (section, name, field, index))
        # custom steps' outputs, and the built-in steps, where tables can lead back to a custom step
        for output, path in self.names.items():
            if self.kind_of(output) == "step output":
                where.setdefault((output, path[1]), path)
        training = self.doc.get("training")
        if training and any(self.kind_of(n) == "step output" for n in self.names):
            for index, ref in enumerate(training["inputs"]):
                where.setdefault(("train", ref), ("training", "inputs", index))
            for index, item in enumerate(self.doc.get("validation", [])):
                where.setdefault((item["name"], item["on"]), ("validation", index, "on"))
            if "evaluation" in self.doc:
                where.setdefault(("evaluate", "train"), ("evaluation",))
            if "deployment" in self.doc:
                where.setdefault(("deploy", "evaluate" if "evaluation" in self.doc else "train"), ("deployment",))
        for name, item in self.doc.get("predict", {}).items():
            if self.names.get(name) == ("predict", name):
                where.setdefault((name, item["input"]), ("predict", name, "input"))
        try:
            topological_order((), where)  # the common case: no cycle, and no networkx import
            return
        except CycleError:
            pass
        import networkx as nx  # only to name the cycles precisely

        graph = nx.DiGraph(list(where))
        for component in sorted(nx.strongly_connected_components(graph), key=min):
            if len(component) == 1:
                (name,) = component
                if graph.has_edge(name, name):
                    path = where[(name, name)]
                    self.error(path, f"'{name}' depends on itself: remove it from its own {path[2]}" if len(path) > 3
                               else f"'{name}' cannot score its own output: input names another table")
                continue
            members = sorted(component)
            start = members[0]
            inside = graph.subgraph(component)
            # The shortest way around from the first name (alphabetically) back to it.
            back = min((nx.shortest_path(inside, nxt, start) for nxt in inside.successors(start) if nxt != start), key=lambda p: (len(p), p))
            order = [start] + back
            self.error(where[(order[-2], start)], f"cycle between {', '.join(repr(m) for m in members)}: each depends on the next ({' -> '.join(order)})")

    # --- sections -------------------------------------------------------------------------

    def check_training(self) -> None:
        training = self.doc.get("training")
        if not training:
            return
        model = training["model"]
        has = [k for k in ("estimator", "entrypoint") if k in model]
        if len(has) != 1:
            self.error(("training", "model"), _one_of(has, "estimator", "a class path", "entrypoint", "package.module:function"), key=True)
        if "estimator" in model:
            self._syntax(("training", "model", "estimator"), model["estimator"], check_class_path)
        if "entrypoint" in model:
            self._syntax(("training", "model", "entrypoint"), model["entrypoint"], check_function_ref)
        split = training.get("split", {})
        kinds = [kind for kind, keys in _SPLIT_KINDS.items() if any(k in split for k in keys)]
        if len(kinds) > 1:
            self.error(("training", "split"), "a split is one of {test_size, seed}, {column, test_value} or "
                       f"{{hash_of, test_fraction}}; this one mixes {' and '.join(kinds)}")
        if "test_value" in split and "column" not in split:
            self.error(("training", "split", "test_value"), "test_value goes with column", key=True)
        if "test_fraction" in split and "hash_of" not in split:
            self.error(("training", "split", "test_fraction"), "test_fraction goes with hash_of (the key columns to hash)", key=True)
        for index, column in enumerate(split.get("hash_of") or []):
            if column == training["target"]:
                self.error(("training", "split", "hash_of", index), f"'{column}' is the target column: a split key "
                           "must not depend on the label (hash a row identifier, e.g. a customer id)")
            elif column == training.get("partition_by") and len(split["hash_of"]) == 1:
                self.error(("training", "split", "hash_of", index), f"'{column}' is the partition_by column: every row "
                           "of a partition has the same key, so a partition would be all train or all test; hash a row identifier")
        if "partitions" in training and "partition_by" not in training:
            self.error(("training", "partitions"), "partitions needs partition_by (the column they are values of)", key=True)
        for column in ("partition_by", "split"):
            value = training.get(column) if column == "partition_by" else split.get("column")
            if value is not None and value == training["target"]:
                self.error(("training", column), f"'{value}' is the target column; it cannot also be the {column.replace('_', ' ')}")
        sweep = training.get("sweep")
        if sweep:
            self._check_sweep(sweep)

    def _check_sweep(self, sweep: dict) -> None:
        base = ("training", "sweep")
        if sweep["method"] == "random" and "samples" not in sweep:
            self.error(base, "a random sweep needs samples: (how many combinations to draw)", key=True)
        if sweep["method"] == "grid":
            if "samples" in sweep:
                self.error(base + ("samples",), "samples is for method: random; a grid runs every combination", key=True)
            for name, values in sweep["parameters"].items():
                if not isinstance(values, list):
                    self.error(base + ("parameters", name), "a grid sweep takes a list of values; ranges ({low, high}) need method: random")
        for name, values in sweep["parameters"].items():
            if isinstance(values, dict) and values["low"] > values["high"]:
                self.error(base + ("parameters", name), f"low ({values['low']}) is greater than high ({values['high']})")
            if isinstance(values, dict) and values.get("log") and values["low"] <= 0:
                self.error(base + ("parameters", name, "low"), "a log-scale range needs low > 0")
        if "select" not in sweep:
            self.error(base, "a sweep needs select: {metric, goal} to pick the best trial", key=True)

    def check_evaluation_and_deployment(self) -> None:
        doc = self.doc
        evaluation = doc.get("evaluation")
        if evaluation and "training" not in doc:
            self.error(("evaluation",), "evaluation needs a training section (it evaluates the trained model)", key=True)
        self.check_select_metric(self.check_metrics(evaluation["metrics"]) if evaluation else [])
        if evaluation:
            metrics = [m["name"] if isinstance(m, dict) else m for m in evaluation["metrics"]]
            for index, gate in enumerate(evaluation.get("gates", [])):
                path = ("evaluation", "gates", index)
                if gate["metric"] not in metrics:
                    self.error(path + ("metric",), f"gate metric '{gate['metric']}' is not in evaluation.metrics ({', '.join(metrics)})", did_you_mean(gate["metric"], metrics))
                for key in ("value", "delta"):
                    self.check_number_param(path + (key,), gate.get(key))
                if "compare_to" in gate:
                    if "value" in gate:
                        self.error(path, "a champion/challenger gate (compare_to) takes delta, not value")
                elif "value" not in gate:
                    self.error(path, "a gate needs value: (absolute threshold) or compare_to: production with delta")
                elif "delta" in gate:
                    self.error(path + ("delta",), "delta goes with compare_to: production", key=True)
        deployment = doc.get("deployment")
        if deployment:
            if "training" not in doc:
                self.error(("deployment",), "deployment needs a training section (it deploys the trained model)", key=True)
            strategy = deployment.get("strategy", "replace")
            if strategy == "canary" and "canary" not in deployment:
                self.error(("deployment", "strategy"), "strategy: canary needs canary: {traffic_percent: N} (the share of requests the new model gets)")
            if strategy != "canary" and "canary" in deployment:
                self.error(("deployment", "canary"), "canary settings need strategy: canary", key=True)
            target = deployment.get("target", "local")
            for name in ("sagemaker", "kserve"):
                if name in deployment and target != name:
                    self.error(("deployment", name), f"{name} settings need target: {name} (target is {target})", key=True)
            percent = (deployment.get("canary") or {}).get("traffic_percent")
            if target == "kserve" and isinstance(percent, (int, float)) and percent != int(percent):
                self.error(("deployment", "canary", "traffic_percent"), f"KServe splits traffic in whole percents: {percent} is not an integer")
            if target == "sagemaker" and "sagemaker" not in deployment:
                self.error(("deployment", "target"), "target: sagemaker needs sagemaker: {role_arn: ...} "
                           "(the IAM role SageMaker runs the endpoint with; instance_type and endpoint_name optional)")

    def check_metrics(self, items: list) -> list[str]:
        """evaluation.metrics: each a dagsmith metric, a scikit-learn scorer or a user function
        (dagsmith/metricnames.py); returns their names."""
        names: list[str] = []
        for index, item in enumerate(items):
            path = ("evaluation", "metrics", index)
            if isinstance(item, dict):
                name = item["name"]
                self._syntax(path + ("function",), item["function"], check_function_ref)
                if metricnames.known(name):
                    what = "a dagsmith metric" if name in metricnames.BUILTIN else "a scikit-learn scorer"
                    self.error(path + ("name",), f"'{name}' is {what}: give your function's metric another name")
            else:
                name = item
                if metricnames.is_function(name):
                    self._syntax(path, name, check_function_ref)
                elif not metricnames.known(name):
                    hint = did_you_mean(name, metricnames.BUILTIN + metricnames.scorers())
                    if hint is None and "." in name:  # pkg.metrics.mape: a function reference without its colon
                        try:
                            check_function_ref(name)
                        except ValueError as exc:
                            hint = getattr(exc, "hint", None)
                    self.error(path, f"unknown metric '{name}': neither a dagsmith metric nor a scikit-learn scorer "
                               "(sklearn.metrics.get_scorer_names()); for your own, write package.module:function", hint)
            if name in names:
                self.error(path, f"metric '{name}' is listed twice")
            names.append(name)
        return names

    def check_select_metric(self, names: list[str]) -> None:
        """sweep.select.metric: a dagsmith metric, a scikit-learn scorer or a metric of evaluation.metrics."""
        training = self.doc.get("training")
        select = ((training.get("sweep") or {}).get("select") or {}) if isinstance(training, dict) else {}
        metric = select.get("metric")
        if isinstance(metric, str) and metric not in names and not metricnames.known(metric):
            self.error(("training", "sweep", "select", "metric"), f"unknown metric '{metric}': neither a dagsmith metric, a scikit-learn "
                       "scorer nor a metric of evaluation.metrics", did_you_mean(metric, names + list(metricnames.BUILTIN + metricnames.scorers())))

    def check_number_param(self, path: tuple, value) -> None:
        """A value written as ${params.NAME} (a gate's threshold): NAME is a number or integer
        parameter (an unknown NAME is reported by check_params, like every reference)."""
        ref = references.whole(value)
        if ref is None or not ref.startswith("params."):
            return
        param = self.doc.get("params", {}).get(ref[len("params."):])
        if isinstance(param, dict) and param.get("type") not in ("number", "integer"):
            self.error(path, f"'${{{ref}}}' is a {param.get('type')} parameter: a threshold needs a number or integer parameter")

    def check_predict(self) -> None:
        """A predict's model must exist when it runs: `trained` needs training; a registry alias or
        version needs deployment (its model_name). A predict that waits for the model (trained, or
        an alias after deploy) cannot feed the training data: that would be a cycle."""
        doc = self.doc
        waits = set()
        for name, item in doc.get("predict", {}).items():
            model = item["model"]
            path = ("predict", name, "model")
            if model == "trained":
                if "training" not in doc:
                    self.error(path, "model: trained needs a training section (it scores with this run's trained model)")
                waits.add(name)
            elif "deployment" not in doc:
                self.error(path, f"model: {model} reads the model registry of deployment.model_name: it needs a deployment "
                                 "section (or model: trained, this run's model)")
            elif not isinstance(model, int):
                waits.add(name)
        training = doc.get("training")
        if not waits or not training:
            return
        derived = {name: list(f.get("inputs", [])) for name, f in doc.get("features", {}).items()}
        derived.update({name: [p["input"]] for name, p in doc.get("predict", {}).items()})
        for index, table in enumerate(training["inputs"]):
            seen, todo = set(), [table]
            while todo:
                current = todo.pop()
                if current in seen:
                    continue
                seen.add(current)
                if current in waits:
                    self.error(("training", "inputs", index),
                               f"'{table}' is derived from predict '{current}', which scores with a model this training "
                               "makes (or deploys): a cycle; score with a registry version number instead")
                    break
                todo.extend(derived.get(current, []))

    def check_source_options(self) -> None:
        """Each reader option applies to the source's format (a `sheet` on a csv is a mistake, not
        something to ignore), and the csv dialect's characters can tell a value from a separator."""
        for name, source in self.doc.get("sources", {}).items():
            path = ("sources", name)
            fmt = source.get("format", "parquet") if source["type"] == "s3" else source["type"]
            allowed = READ_OPTIONS.get(fmt, ())
            for option in ALL_READ_OPTIONS:
                if option in source and option not in allowed:
                    kind = f"an s3 source of format {fmt}" if source["type"] == "s3" else f"{'an' if fmt == 'xlsx' else 'a'} {fmt} source"
                    self.error(path + (option,), f"'{option}' does not apply to {kind}; "
                               + (f"its options: {', '.join(allowed)}" if allowed else "it takes no reader options"),
                               key=True)
            if "on_bad_value" in source and "columns" not in source and "on_bad_value" in allowed:
                self.error(path + ("on_bad_value",), "on_bad_value applies to declared columns: add `columns: "
                           "{name: type}` or remove it", key=True)
            self.check_source_extension(path, source, fmt)
            if source.get("header") is False and "header" in allowed:
                for column in source.get("columns", {}):
                    if not (column.startswith("column") and column[6:].isdigit() and column[6:].isascii()):
                        self.error(path + ("columns", column), f"with header: false the columns are named column0, "
                                   f"column1, ... (in file order): '{column}' is none of them", key=True)
            characters = {k: source[k] for k in ("delimiter", "quote", "escape") if k in allowed and k in source}
            for key, value in characters.items():
                if value in ("\n", "\r"):
                    self.error(path + (key,), f"a line break cannot be the {key}: line endings end rows")
            delimiter, quote = source.get("delimiter", ","), source.get("quote", '"')
            if "delimiter" in allowed and delimiter == quote and ("delimiter" in source or "quote" in source):
                self.error(path + ("quote" if "quote" in source else "delimiter",),
                           f"the delimiter and the quote are both {delimiter!r}: a reader cannot tell them apart")

    def check_source_extension(self, path: tuple, source: dict, fmt: str) -> None:
        """A uri whose extension names another format (data.xlsx read as csv) fails at run time
        with a parser's confusion: said here instead. json and jsonl files are often named
        either way, and a uri holding a reference or naming a folder is not judged."""
        uri = source.get("uri")
        if not isinstance(uri, str) or "${" in uri or uri.endswith("/"):
            return
        extension = uri.rsplit("/", 1)[-1].rpartition(".")[2].lower() if "." in uri.rsplit("/", 1)[-1] else ""
        if extension == "xls":
            self.error(path + ("uri",), "an .xls workbook (Excel 97-2003) is not read: save it as .xlsx and use type: xlsx")
        elif extension in READ_OPTIONS and extension != fmt and {extension, fmt} != {"json", "jsonl"} and extension != "sql":
            field = "format" if source["type"] == "s3" else "type"
            self.error(path + ("uri",), f"the file is {extension} by its name but the source reads {fmt}: "
                       f"set {field}: {extension}")

    def check_steps_and_features(self) -> None:
        for name, feature in self.doc.get("features", {}).items():
            has = [k for k in ("sql", "transform") if k in feature]
            if len(has) != 1:
                self.error(("features", name), _one_of(has, "sql", "a query", "transform", "package.module:function"), key=True)
        for name, step in self.doc.get("steps", {}).items():
            run = step["run"]
            has = [k for k in ("python", "command") if k in run]
            if len(has) != 1:
                self.error(("steps", name, "run"), _one_of(has, "python", "package.module:function", "command", "an argv list"), key=True)
            if "python" in run:
                self._syntax(("steps", name, "run", "python"), run["python"], check_function_ref)

    def check_validations(self) -> None:
        known = gx_expectations()
        for v_index, item in enumerate(self.doc.get("validation", [])):
            for e_index, expectation in enumerate(item["expectations"]):
                ((name, kwargs),) = expectation.items()
                path = ("validation", v_index, "expectations", e_index, name)
                if name not in known:
                    self.error(path, f"unknown Great Expectations expectation '{name}'", did_you_mean(name, known), key=True)
                    continue
                allowed = known[name]["required"] + known[name]["optional"]
                kwargs = kwargs or {}
                for kwarg in kwargs:
                    if kwarg not in allowed:
                        hint = did_you_mean(kwarg, allowed)
                        listing = "" if hint else f" (it takes: {', '.join(allowed)})"
                        self.error(path + (kwarg,), f"'{name}' takes no argument '{kwarg}'{listing}", hint, key=True)
                missing = [r for r in known[name]["required"] if r not in kwargs]
                if missing:
                    noun = "argument" if len(missing) == 1 else "arguments"
                    self.error(path, f"'{name}' needs the {noun} {', '.join(repr(m) for m in missing)}", key=True)

    # --- value languages --------------------------------------------------------------------

    def check_values(self) -> None:
        doc = self.doc
        for path, options in self._option_blocks():
            for key in ("retry_delay", "timeout"):
                if key in options:
                    self._syntax(path + (key,), options[key], parse_duration)
            resources = options.get("resources", {})
            for key in ("cpu", "memory"):
                if key in resources:
                    self._syntax(path + ("resources", key), resources[key], lambda v, k=key: parse_quantity(v, k))
        for backend, options in (doc.get("backends") or {}).items():
            if isinstance(options, dict) and isinstance(options.get("store"), str):
                self._syntax(("backends", backend, "store"), options["store"], store_uri)
        schedule = doc.get("triggers", {}).get("schedule")
        if schedule is not None:
            self._syntax(("triggers", "schedule"), schedule, check_cron)
        for index, trigger in enumerate(doc.get("triggers", {}).get("on_new_data", [])):
            if "min_interval" in trigger:
                self._syntax(("triggers", "on_new_data", index, "min_interval"), trigger["min_interval"], parse_duration)

    def check_env(self) -> None:
        """`env` names a step cannot take as plain values, the same on every backend: dagsmith's
        own (DAGSMITH_*: the run's values, connections' URIs; runtime/environment.py) and the
        step's secrets (each backend passes a secret by name, as that variable)."""
        defaults = self.doc.get("defaults", {})
        reported = set()
        for path, options in self._option_blocks():
            own = "env" in options
            env, where = (options.get("env"), path) if own else (defaults.get("env"), ("defaults",))
            secrets = options.get("secrets", defaults.get("secrets", []))
            if not isinstance(env, dict) or not isinstance(secrets, list):
                continue
            for name in env:
                at = where + ("env", name)
                if str(name).startswith("DAGSMITH_") and at not in reported:
                    reported.add(at)
                    self.error(at, f"'{name}': names starting with DAGSMITH_ are dagsmith's (the run's values, "
                                   "connections); rename it", key=True)
                elif name in secrets and at not in reported:
                    reported.add(at)
                    self.error(at, f"'{name}' is also in secrets: the secret's value would be replaced; rename one", key=True)

    def _option_blocks(self):
        doc = self.doc
        if "defaults" in doc:
            yield ("defaults",), doc["defaults"]
        for section in ("sources", "features", "steps", "predict"):
            for name, item in doc.get(section, {}).items():
                yield (section, name), item
        for index, item in enumerate(doc.get("validation", [])):
            yield ("validation", index), item
        for section in ("training", "evaluation", "deployment"):
            if section in doc:
                yield (section,), doc[section]

    def _syntax(self, path: tuple, value, parser) -> None:
        try:
            parser(value)
        except ValueError as exc:
            self.error(path, str(exc), getattr(exc, "hint", None))

    # --- params -------------------------------------------------------------------------

    def check_params(self) -> None:
        params = self.doc.get("params", {})
        for name, param in params.items():
            path = ("params", name)
            if "default" in param:
                problem = param_type_problem(param["type"], param["default"])
                if problem:
                    self.error(path + ("default",), f"default {problem}")
                elif "enum" in param and _as_built(param["default"]) not in [_as_built(v) for v in param["enum"]]:
                    self.error(path + ("default",), f"default {param['default']!r} is not one of enum {param['enum']}")
            for index, option in enumerate(param.get("enum", [])):
                problem = param_type_problem(param["type"], option)
                if problem:
                    self.error(path + ("enum", index), f"enum value {problem}")
        for path, text in _strings(self.doc, ()):
            if any(isinstance(part, str) and part.startswith("x-") for part in path):
                continue  # extension keys are the user's own business
            if isinstance(text, GivenText):
                continue  # a --param value is data, never a template
            for reference in references.references(text):
                ref = reference.name
                if ref in RUN_VALUES:
                    continue
                if ref.startswith("params."):
                    name = ref[len("params."):]
                    if name not in params:
                        self.error(path, f"unknown parameter '${{{ref}}}'", did_you_mean(name, params) if params else "declare it under params:")
                    continue
                self.error(path, f"unknown reference '${{{ref}}}': use ${{params.NAME}}, ${{run.date}} or ${{run.id}}",
                           f"for the text '${{{ref}}}' itself, write '$${{{ref}}}'" if len(ref) <= 40 else "for a literal '${', write '$${'")

    # --- SQL ----------------------------------------------------------------------------

    def check_sql(self) -> None:
        """Features' sql and sql sources' queries, parsed (sqlglot, imported only when needed)."""
        features = self.doc.get("features", {})
        sources = self.doc.get("sources", {})
        if not any("sql" in f for f in features.values()) and not any(s["type"] == "sql" for s in sources.values()):
            return
        from . import sql_check
        from .yamlpos import text_position

        for path, offset, message, hint, level in sql_check.check(self.doc):
            mark = locate(self.doc, path)
            if offset is not None:
                node = self.doc
                for part in path:
                    node = node[part]
                mark = text_position(mark, node, offset)
            self.problems.append(Diagnostic(mark, format_path(path), message, hint, level))


def _is_key(path: tuple) -> bool:
    """Whether a name's definition is a mapping key (sources.x) rather than a value (a
    validation's name, a custom step's outputs[i])."""
    return path[0] != "validation" and len(path) == 2


def _as_built(value):
    """A param value as the built spec has it: spec text with `$${` as `${` (build.literal_texts),
    a --param value as given."""
    if isinstance(value, str) and not isinstance(value, GivenText):
        return references.literal(value)
    return value


def _strings(node, path: tuple):
    if isinstance(node, str):
        yield path, node
    elif isinstance(node, dict):
        for key, value in node.items():
            yield from _strings(value, path + (key,))
    elif isinstance(node, list):
        for index, value in enumerate(node):
            yield from _strings(value, path + (index,))


def _one_of(found: list[str], first: str, first_is: str, second: str, second_is: str) -> str:
    if found:
        return f"set only one of '{first}' or '{second}', not both"
    return f"needs '{first}' ({first_is}) or '{second}' ({second_is})"


def param_type_problem(kind: str, value) -> str | None:
    """None when `value` fits the parameter type, else a short reason."""
    ok = {
        "integer": isinstance(value, int) and not isinstance(value, bool),
        "number": isinstance(value, (int, float)) and not isinstance(value, bool),
        "string": isinstance(value, str),
        "boolean": isinstance(value, bool),
    }[kind]
    article = "an" if kind == "integer" else "a"
    return None if ok else f"{value!r} is not {article} {kind}"


def check(doc: YMap) -> list[Diagnostic]:
    return _Checker(doc).run()
