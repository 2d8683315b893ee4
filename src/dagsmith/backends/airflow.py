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

OPERATORS_SUPPORTED = ("python", "bash")
OPERATORS_PLANNED = ("kubernetes",)
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
        used = {field for step in ir.steps for field in WORKER_MODE_NOT_APPLIED if getattr(step, field)}
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
            "sdk_imports": sorted({"DAG", "Param", *sdk_imports}),
            "assets": assets,
            "has_watchers": any(a["queue"] for a in assets),
            "has_gate": any(step.kind == "gate" for step in ir.steps),
            "bash": operator == "bash",
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
