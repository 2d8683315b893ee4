"""Airflow 3 backend: the IR as a DAG file (airflow.sdk + providers.standard) and the IR beside it.

Mapping (anything else in the IR is refused by `check`, never dropped silently):
  step                  -> a PythonOperator running the step through the dagsmith runtime
  fan-out (sweep, partitions) -> ONE mapped task over index ranges (`.expand`), preceded by a
                           small task that lists the ranges: at most `max_map_length` instances
                           (Airflow's limit, 1024 by default), one item each when they fit
  gate                  -> a ShortCircuitOperator: a failed gate skips deploy and what follows;
                           the run ends `success` (dagsmith's "gated")
  failed validation     -> the task fails; what depends on it is upstream_failed
  retries, retry_delay, timeout -> retries, retry_delay, execution_timeout
  params                -> Param with type, default, description, enum
  schedule / on_new_data -> cron, Assets (AssetAny), or AssetOrTimeSchedule for both; a trigger's
                           SQS queue becomes an AssetWatcher with a MessageQueueTrigger
  min_interval          -> a first ShortCircuitOperator that skips data-triggered runs that come
                           too soon after the last one
"""

from __future__ import annotations

import json
from pathlib import Path

from jinja2 import Environment, FileSystemLoader, StrictUndefined

from .. import naming
from ..compiler import ir_filename
from ..errors import UsageError
from ..ir import IR, Step

OPERATORS_SUPPORTED = ("python", "bash", "kubernetes")
GATED_EXIT_CODE = 99  # bash mode: `dagsmith step --skip-exit-code`, BashOperator(skip_on_exit_code)
# IR fields that cannot apply when the step runs inside the Airflow worker.
WORKER_MODE_NOT_APPLIED = ("image", "resources")
_PARAM_TYPES = {"integer": "integer", "number": "number", "string": "string", "boolean": "boolean"}


class AirflowBackendError(UsageError):
    """The IR uses something this backend cannot express (named, never dropped)."""


def _environment() -> Environment:
    env = Environment(
        loader=FileSystemLoader(str(Path(__file__).resolve().parent.parent / "templates")),
        undefined=StrictUndefined,
        trim_blocks=True,
        lstrip_blocks=True,
        keep_trailing_newline=True,
        autoescape=False,
    )
    env.filters["py"] = _py
    return env


def _py(value) -> str:
    """A Python literal for a JSON-like value: strings, numbers, booleans, None, lists, dicts."""
    if isinstance(value, dict):
        return "{" + ", ".join(f"{_py(k)}: {_py(v)}" for k, v in value.items()) + "}"
    if isinstance(value, (list, tuple)):
        return "[" + ", ".join(_py(v) for v in value) + "]"
    if isinstance(value, str):
        # A JSON string is also a Python string literal with the same value (double-quoted,
        # every quote, backslash and control character escaped).
        return json.dumps(value, ensure_ascii=False)
    if isinstance(value, (bool, int, float)) or value is None:
        return repr(value)
    raise TypeError(f"not a JSON value: {type(value).__name__}")


def _duration(seconds: int) -> str:
    return f"datetime.timedelta(seconds={int(seconds)})"


class AirflowBackend:
    name = "airflow"
    default_output = "build/airflow"

    def emit(self, ir: IR, options: dict) -> dict[str, str]:
        self.check(ir, options)
        dag_id = options.get("dag_id") or naming.airflow_id(ir.name)
        context = self.context(ir, options, dag_id)
        text = _environment().get_template("airflow_dag.py.j2").render(**context)
        return {f"{dag_id}.py": text, ir_filename(ir.name): ir.dumps()}

    def deploy(self, ir: IR, options: dict, dags_folder: Path) -> list[Path]:
        """Compile into a staging folder beside DIR, prove Airflow loads it (DagBag, zero import
        errors), then rename the files in: the IR first, the DAG file last, so Airflow never
        sees a half-written file or a DAG without its IR. On any error DIR is left untouched."""
        import os
        import shutil
        import tempfile

        from ..output import write_files

        dags_folder = Path(dags_folder)
        if not dags_folder.is_dir():
            raise UsageError(f"--dags-folder {dags_folder}: no such folder")
        files = self.emit(ir, options)
        staging = Path(tempfile.mkdtemp(prefix=".dagsmith-deploy-", dir=dags_folder.parent))
        try:
            write_files(staging, files)
            errors = dagbag_import_errors(staging)
            if errors:
                details = "; ".join(f"{Path(path).name}: {message.strip().splitlines()[-1]}" for path, message in sorted(errors.items()))
                raise UsageError(f"Airflow cannot load the generated DAG, nothing deployed: {details}")
            if options.get("operator") == "kubernetes":  # pods read the IR from the store
                from ..runtime.s3 import client, split_uri

                bucket, key = split_uri(ir_uri(ir, options))
                client().put_object(Bucket=bucket, Key=key, Body=files[ir_filename(ir.name)].encode("utf-8"))
            ordered = sorted(files, key=lambda name: name.endswith(".py"))  # the DAG file last
            for name in ordered:
                os.replace(staging / name, dags_folder / name)
            return [dags_folder / name for name in ordered]
        finally:
            shutil.rmtree(staging, ignore_errors=True)

    # --- capabilities ---------------------------------------------------------------------

    def check(self, ir: IR, options: dict) -> None:
        operator = options.get("operator", "python")
        if operator not in OPERATORS_SUPPORTED:
            raise AirflowBackendError(
                f"backends.airflow.operator: {operator!r} is not supported by the airflow backend yet "
                f"(supported: {', '.join(OPERATORS_SUPPORTED)}); it is planned"
            )
        if operator == "kubernetes":
            self.check_kubernetes(ir, options)
        dag_id = options.get("dag_id") or naming.airflow_id(ir.name)
        if len(dag_id) > 250:
            raise AirflowBackendError(f"backends.airflow.dag_id: {dag_id[:40]!r}... is longer than Airflow's 250 characters")
        for tag in [*ir.pipeline.get("tags", []), *options.get("tags", [])]:
            if len(tag) > 100:
                raise AirflowBackendError(f"tag {tag[:30]!r}... is longer than the 100 characters Airflow allows")
        ids = {}
        for step in ir.steps:
            for task_id in self.task_ids(step):
                if task_id in ids:
                    raise AirflowBackendError(f"steps {ids[task_id]!r} and {step.id!r} would both be the Airflow task {task_id!r}")
                ids[task_id] = step.id

    @staticmethod
    def check_kubernetes(ir: IR, options: dict) -> None:
        """Pods share no disk and Airflow renders the operator's fields as templates."""
        store = options.get("store") or ""
        if not store.startswith("s3://"):
            raise AirflowBackendError("backends.airflow.operator: kubernetes needs backends.airflow.store: s3://bucket/prefix (pods share no disk)")
        missing = [step.id for step in ir.steps if not step.image]
        if missing:
            raise AirflowBackendError(f"backends.airflow.operator: kubernetes runs each step in its image; no image for: {', '.join(missing)} (set defaults.image)")
        for value in [store, options.get("namespace") or "", *(step.image for step in ir.steps)]:
            if "{{" in value or "{%" in value:
                raise AirflowBackendError(f"{value!r}: Airflow renders pod fields as templates, so they cannot contain '{{{{' or '{{%'")
        namespace = options.get("namespace")
        if namespace and naming.k8s_name(namespace) != namespace:
            raise AirflowBackendError(f"backends.airflow.namespace: {namespace!r} is not a Kubernetes namespace name")

    @staticmethod
    def task_ids(step: Step) -> list[str]:
        task_id = naming.airflow_id(step.id)
        return [task_id, f"{task_id}__batches"] if step.fanout else [task_id]

    # --- the template's view of the IR ------------------------------------------------------

    def context(self, ir: IR, options: dict, dag_id: str) -> dict:
        tasks = [self.task(step, options) for step in ir.steps]
        edges = []
        for step in ir.steps:
            task_id = naming.airflow_id(step.id)
            if step.fanout:
                edges.extend((naming.airflow_id(up), f"{task_id}__batches") for up in step.depends_on)
                edges.append((f"{task_id}__batches", task_id))
            else:
                edges.extend((naming.airflow_id(up), task_id) for up in step.depends_on)
        intervals = [t["min_interval"] for t in ir.triggers["on_new_data"] if t.get("min_interval")]
        guard = min(intervals) if intervals else None
        if guard:  # the guard runs first: every root step waits for it
            roots = [s for s in ir.steps if not s.depends_on]
            edges = [("min_interval_guard", self.task_ids(s)[-1]) for s in roots] + edges
        assets = self.assets(ir)
        schedule, sdk_imports = self.schedule(ir, assets)
        operator = options.get("operator", "python")
        used = {field for step in ir.steps for field in WORKER_MODE_NOT_APPLIED if getattr(step, field)} if operator != "kubernetes" else set()
        default_args = {"owner": options.get("owner") or ir.pipeline.get("owner") or "dagsmith"}
        for key in ("pool", "queue"):
            if options.get(key):
                default_args[key] = options[key]
        tags = list(dict.fromkeys(["dagsmith", *ir.pipeline.get("tags", []), *options.get("tags", [])]))
        return {
            "title": f"Airflow DAG of the dagsmith pipeline {ir.name}.",
            "pipeline": ir.name,
            "spec_hash": ir.pipeline.get("spec_hash") or "",
            "ir_file": ir_filename(ir.name),
            "operator": operator,
            "not_applied": sorted(used),
            "dag_id": dag_id,
            "description": ir.pipeline.get("description"),
            "schedule": schedule,
            "sdk_imports": sorted({"DAG", *sdk_imports} | ({"Param"} if ir.params else set())),
            "python_imports": python_imports(ir, operator, guard),
            "assets": assets,
            "has_watchers": any(a["queue"] for a in assets),
            "has_gate": any(step.kind == "gate" for step in ir.steps),
            "bash": operator == "bash",
            "kubernetes": operator == "kubernetes",
            "pod_secrets": any(step.secrets or step.connections for step in ir.steps),
            # Pods run dagsmith themselves; the Airflow side needs it only to list fan-out items
            # or to guard min_interval.
            "uses_tasks_module": operator != "kubernetes" or guard is not None or any(s.fanout for s in ir.steps),
            "namespace": options.get("namespace") or "default",
            "ir_uri": ir_uri(ir, options) if operator == "kubernetes" else None,
            "gated_exit_code": GATED_EXIT_CODE,
            "guard": guard,
            "tags": tags,
            "default_args": default_args,
            "params": [
                {
                    "name": name, "type": _PARAM_TYPES[param["type"]], "has_default": not param["required"],
                    "default": param["default"], "description": param.get("description"), "enum": param.get("enum"),
                }
                for name, param in ir.params.items()
            ],
            "tasks": tasks,
            "edges": edges,
            "max_map_length": int(options.get("max_map_length", 1024)),
        }

    def task(self, step: Step, options: dict) -> dict:
        task_options = [("retries", str(step.retries)), ("retry_delay", _duration(step.retry_delay))]
        if step.timeout:
            task_options.append(("execution_timeout", _duration(step.timeout)))
        task_id = naming.airflow_id(step.id)
        comment = f"{step.kind} step {step.id}"
        if step.fanout:
            fan = step.fanout
            size = f"{fan.size} items" if fan.size is not None else f"{fan.trials} trials per partition found at run time"
            comment = f"{step.kind} fan-out: {size}, one mapped task"
            if fan.max_parallel:
                task_options.append(("max_active_tis_per_dagrun", str(int(fan.max_parallel))))
        gate = step.kind == "gate"
        return {
            "task_id": task_id,
            "step_id": step.id,
            "pod_name": naming.k8s_name(f"{step.id}"),
            "image": step.image,
            "resources": pod_resources(step.resources),
            # A secret NAME is the Kubernetes Secret k8s_name(NAME) with the key NAME; a connection
            # is the Secret dagsmith-conn-<name> with the key uri (docs/backends/airflow.md).
            "secrets": [{"name": name, "secret": naming.k8s_name(name), "key": name} for name in step.secrets]
            + [{"name": connection_variable(c), "secret": naming.k8s_name(f"dagsmith-conn-{c}"), "key": "uri"} for c in step.connections],
            "comment": comment + (": a failed gate skips what follows" if gate else ""),
            "mapped": step.fanout is not None,
            "batches_id": f"{task_id}__batches",
            "operator": "ShortCircuitOperator" if gate else "PythonOperator",
            "callable": "run_gate" if gate else "run_step",
            "options": task_options,
        }

    @staticmethod
    def assets(ir: IR) -> list[dict]:
        return [
            {
                "name": f"{ir.name}.{trigger['source']}",
                "uri": trigger["uri"] or f"dagsmith://{ir.name}/{trigger['source']}",
                "queue": trigger.get("queue"),
                "watcher": f"{ir.name}.{trigger['source']}.sqs",
            }
            for trigger in ir.triggers["on_new_data"]
        ]

    @staticmethod
    def schedule(ir: IR, assets: list[dict]) -> tuple[str, set[str]]:
        cron = ir.triggers.get("schedule")
        imports = {"Asset"} if assets else set()
        if any(a["queue"] for a in assets):
            imports.add("AssetWatcher")
        if not assets:
            return (_py(cron), imports)
        on_data = "AssetAny(*ASSETS)"
        imports.add("AssetAny")
        if cron is None:
            return (on_data, imports)
        imports.update({"AssetOrTimeSchedule", "CronTriggerTimetable"})
        return (f'AssetOrTimeSchedule(timetable=CronTriggerTimetable({_py(cron)}, timezone="UTC"), assets={on_data})', imports)


def dagbag_import_errors(folder: Path) -> dict:
    """Parse every DAG file of a folder with Airflow's own DagBag: {file: error}."""
    try:
        from airflow.dag_processing.dagbag import DagBag
    except ImportError:
        raise UsageError("deploying to Airflow needs Airflow: pip install 'dagsmith[airflow]'") from None
    return dict(DagBag(dag_folder=str(folder)).import_errors)


def ir_uri(ir: IR, options: dict) -> str:
    """Where pods read the IR: in the store, named by the spec's hash (deploy uploads it)."""
    return f"{options['store'].rstrip('/')}/ir/{ir.name}-{(ir.pipeline.get('spec_hash') or '')[:12]}.ir.json"


def connection_variable(name: str) -> str:
    from ..runtime.sources import connection_env

    return connection_env(name)


def pod_resources(resources: dict) -> dict:
    """IR resources -> Kubernetes requests and limits (GPUs are limits: nvidia.com/gpu)."""
    requests = {key: str(resources[key]) for key in ("cpu", "memory") if key in resources}
    limits = {"nvidia.com/gpu": str(resources["gpu"])} if resources.get("gpu") else {}
    return {"requests": requests, "limits": limits}


def python_imports(ir: IR, operator: str, guard) -> list[str]:
    """The operators from providers.standard that the DAG file uses (and no others)."""
    names = set()
    if guard:
        names.add("ShortCircuitOperator")
    if any(step.fanout for step in ir.steps):
        names.add("PythonOperator")  # the <step>__batches tasks
    if operator == "python":
        names.add("PythonOperator")
        if any(step.kind == "gate" for step in ir.steps):
            names.add("ShortCircuitOperator")
    return sorted(names)
