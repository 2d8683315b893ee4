"""Airflow 3 backend: the execution plan as a DAG file (airflow.sdk + providers) and the IR beside it.

Mapping of the plan's tasks (what the backend cannot express is a Problem, never dropped):
  step                  -> a task running the step through the dagsmith runtime (operator mode)
  fan-out step          -> ONE mapped task (`.expand`) over the item ranges its `dagsmith-ranges-*`
                           task lists: at most `max_map_length` instances (Airflow's limit, 1024
                           by default), one item each when they fit
  gate                  -> a ShortCircuitOperator (python) or `skip_on_exit_code` (bash,
                           kubernetes): a failed gate skips its scope; the run ends `success`
                           (dagsmith's "gated")
  dagsmith-admit        -> a PythonSensor (mode reschedule) applying min_interval: holds the run
                           while the interval runs, skips it whole when an earlier run read its data
  failed validation     -> the task fails; what depends on it is upstream_failed
  retries, retry_delay, timeout -> retries, retry_delay, execution_timeout
  params                -> Param with type, default, description, enum
  schedule / on_new_data -> cron, Assets (AssetAny), or AssetOrTimeSchedule for both; a trigger's
                           SQS queue becomes an AssetWatcher with a MessageQueueTrigger
"""

from __future__ import annotations

import json
import re
from pathlib import Path

from jinja2 import Environment, FileSystemLoader, StrictUndefined

from ... import naming
from ...errors import UsageError, format_path
from ...ir import IR
from ...runtime import environment as E
from .. import code, kubernetes
from ..code import code_files
from ..plan import Plan, Task, build_plan, new_object
from ..problems import Capabilities, Problem, check_capabilities, error, raise_errors

OPTIONS = ("backends", "airflow")
MODES = {
    "python": Capabilities("airflow", "operator mode python", runs_images=False, shared_disk=True, options_path=OPTIONS),
    "bash": Capabilities("airflow", "operator mode bash", runs_images=False, shared_disk=True, options_path=OPTIONS),
    "kubernetes": Capabilities("airflow", "operator mode kubernetes", runs_images=True, shared_disk=False, options_path=OPTIONS),
}
DEFAULT_MAX_MAP_LENGTH = 1024  # Airflow's [core] max_map_length
_PARAM_TYPES = {"integer": "integer", "number": "number", "string": "string", "boolean": "boolean"}


def _environment() -> Environment:
    env = Environment(
        loader=FileSystemLoader(str(Path(__file__).resolve().parents[2] / "templates")),
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

    def plan(self, ir: IR, options: dict, output_dir: str | None = None, spec_dir: str | None = None, package=None) -> Plan:
        operator = options.get("operator", "python")
        ir_uri = self.ir_uri(ir, options) if operator == "kubernetes" else None
        return build_plan(ir, store=options.get("store"), max_ranges=int(options.get("max_map_length", DEFAULT_MAX_MAP_LENGTH)),
                          ir_uri=ir_uri, output_dir=output_dir, spec_dir=spec_dir, code_key=package.key if package else None)

    def emit(self, ir: IR, options: dict, output_dir: str | None = None, spec_dir: str | None = None) -> dict[str, str]:
        problems = self.check(ir, options)
        raise_errors(self.name, problems)
        # kubernetes mode: the pods get the spec folder's code from the store (backends/code.py)
        package = code.package(ir, MODES[options.get("operator", "python")], options, spec_dir, output_dir)
        plan = self.plan(ir, options, output_dir, spec_dir, package)
        dag_id = options.get("dag_id") or naming.airflow_id(ir.name)
        text = _environment().get_template("airflow_dag.py.j2").render(**self.context(plan, options, dag_id, problems))
        files = {f"{dag_id}.py": text, plan.ir_file: ir.dumps()}
        if package:
            files[package.key] = package.text
        return files

    def check_code(self, ir: IR, options: dict, spec_dir: str | None) -> list[Problem]:
        """kubernetes mode: referenced user code the pods will not get (backends/code.py): warnings."""
        operator = options.get("operator", "python")
        return code.problems(ir, MODES[operator], options, spec_dir) if operator in MODES else []

    def deploy(self, ir: IR, options: dict, request, spec_dir: str | None = None) -> list[str]:
        """Compile into a staging folder beside --dags-folder, prove Airflow loads it (DagBag,
        zero import errors), then rename the files in: the IR first, the DAG file last, so
        Airflow never sees a half-written file or a DAG without its IR. On any error the folder
        is left untouched; with --dry-run nothing is written after the check."""
        import os
        import shutil
        import tempfile

        from ...output import write_files

        request.refuse_others(self.name, ("dags_folder",))
        if not request.dags_folder:
            raise UsageError("deploy --target airflow needs --dags-folder DIR")
        dags_folder = Path(request.dags_folder)
        if not dags_folder.is_dir():
            raise UsageError(f"--dags-folder {dags_folder}: no such folder")
        plan = self.plan(ir, options, str(dags_folder), spec_dir)
        files = self.emit(ir, options, output_dir=str(dags_folder), spec_dir=spec_dir)
        shipped = {name: files.pop(name) for name in code_files(files)}  # into the store, not the dags folder
        staging = Path(tempfile.mkdtemp(prefix=".dagsmith-deploy-", dir=dags_folder.parent))
        try:
            write_files(staging, files)
            errors = dagbag_import_errors(staging)
            if errors:
                details = "; ".join(f"{Path(path).name}: {message.strip().splitlines()[-1]}" for path, message in sorted(errors.items()))
                raise UsageError(f"Airflow cannot load the generated DAG, nothing deployed: {details}")
            ordered = sorted(files, key=lambda name: name.endswith(".py"))  # the DAG file last
            if request.dry_run:
                return [f"would {_change(dags_folder / name, files[name])} {dags_folder / name}" for name in ordered]
            if plan.ir_uri:  # pods read the IR from the store (bounded; a failure: exit 2, nothing deployed)
                from ..aws import put_text

                put_text(plan.ir_uri, files[plan.ir_file], "the IR")
                for name, text in shipped.items():  # where the pods' DAGSMITH_CODE points
                    put_text(f"{options['store'].rstrip('/')}/{name}", text, "the code package")
            done = {"create": "created", "update": "updated", "keep": "unchanged"}
            lines = [f"{done[_change(dags_folder / name, files[name])]} {dags_folder / name}" for name in ordered]
            for name in ordered:
                os.replace(staging / name, dags_folder / name)
            return lines
        finally:
            shutil.rmtree(staging, ignore_errors=True)

    # --- capabilities ---------------------------------------------------------------------

    def check(self, ir: IR, options: dict) -> list[Problem]:
        """Every problem at once: errors (nothing is written) and warnings (printed)."""
        operator = options.get("operator", "python")
        if operator not in MODES:
            return [error(OPTIONS + ("operator",), f"{operator!r} is not an Airflow operator mode (supported: {', '.join(MODES)})")]
        problems = check_capabilities(ir, MODES[operator], options.get("store"))
        problems += code.option_problems(MODES[operator], options)
        dag_id = options.get("dag_id") or naming.airflow_id(ir.name)
        if len(dag_id) > 250:
            problems.append(error(OPTIONS + ("dag_id",), f"{dag_id[:40]!r}... is longer than Airflow's 250 characters"))
        for path, tags in ((("pipeline", "tags"), ir.pipeline.get("tags", [])), (OPTIONS + ("tags",), options.get("tags", []))):
            for index, tag in enumerate(tags):
                if len(tag) > 100:
                    problems.append(error(path + (index,), f"tag {tag[:30]!r}... is longer than the 100 characters Airflow allows"))
        if int(options.get("max_map_length", DEFAULT_MAX_MAP_LENGTH)) < 1:
            problems.append(error(OPTIONS + ("max_map_length",), "must be at least 1"))
        if operator == "kubernetes":
            problems += kubernetes.check(ir, options.get("namespace"), OPTIONS)
        # The store, images and paths may hold '{{' or end in '.sh': every value of ours in a
        # templated field is literal() in the DAG file (templates/airflow_dag.py.j2).
        return _unique(problems)

    @staticmethod
    def ir_uri(ir: IR, options: dict) -> str:
        """Where pods read the IR: in the store, named by the spec's hash (deploy uploads it)."""
        return f"{options['store'].rstrip('/')}/ir/{ir.name}-{(ir.pipeline.get('spec_hash') or '')[:12]}.ir.json"

    # --- the template's view of the plan ----------------------------------------------------

    def context(self, plan: Plan, options: dict, dag_id: str, problems: list[Problem]) -> dict:
        """The template's values; `problems`: the warnings `check` found (listed in the file)."""
        ir = plan.ir
        operator = options.get("operator", "python")
        tasks = [self.task(plan, task, operator) for task in plan.tasks]
        assets = self.assets(plan)
        schedule, sdk_imports = self.schedule(plan, assets)
        default_args = {"owner": options.get("owner") or ir.pipeline.get("owner") or "dagsmith"}
        for key in ("pool", "queue"):
            if options.get(key):
                default_args[key] = options[key]
        tags = list(dict.fromkeys(["dagsmith", *ir.pipeline.get("tags", []), *options.get("tags", [])]))
        return {
            "title": f"Airflow DAG of the dagsmith pipeline {ir.name}.",
            "pipeline": ir.name,
            "spec_hash": ir.pipeline.get("spec_hash") or "",
            "ir_file": plan.ir_file,
            "operator": operator,
            "warnings": [f"{format_path(p.path)}: {p.message}" for p in problems],
            "dag_id": dag_id,
            "description": ir.pipeline.get("description"),
            "schedule": schedule,
            # literal(): a value Airflow passes on as it is, never rendered as a template
            "sdk_imports": sorted({"DAG", "literal", *sdk_imports} | ({"Param"} if plan.params else set())),
            "python_imports": python_imports(plan, operator),
            "sensor": plan.admission is not None,
            "assets": assets,
            "has_watchers": any(a["queue"] for a in assets),
            "bash": operator == "bash",
            "kubernetes": operator == "kubernetes",
            "pod_secrets": any(kubernetes.secret_refs(step) for step in ir.steps),
            # bash tasks and pods run `dagsmith` themselves; the Airflow side needs it only to
            # list fan-out items or to admit runs.
            "uses_tasks_module": operator == "python" or any(t.synthetic for t in plan.tasks),
            "needs_store": operator != "kubernetes" or any(t.synthetic for t in plan.tasks),
            "store": plan.store,
            "namespace": options.get("namespace") or "default",
            "ir_uri": plan.ir_uri,
            "root": plan.root,
            "env_store": E.STORE,
            "env_root": E.ROOT,
            # Airflow renders these per run (the only templated values in the file).
            "run_env": E.run_environment("{{ run_id }}", "{{ (logical_date or dag_run.run_after) | ds }}", "{{ params | tojson }}"),
            "tags": tags,
            "default_args": default_args,
            "params": [
                {"name": p.name, "type": _PARAM_TYPES[p.type], "has_default": not p.required, "default": p.default,
                 "description": p.description, "enum": list(p.enum) if p.enum else None}
                for p in plan.params
            ],
            "tasks": tasks,
            "edges": [(naming.airflow_id(up), naming.airflow_id(down)) for up, down in plan.edges],
        }

    def task(self, plan: Plan, task: Task, operator: str) -> dict:
        out = {"task_id": naming.airflow_id(task.id), "kind": task.kind, "step_id": task.step.id if task.step else None}
        if task.kind == "admit":
            intervals = [s for s in plan.admission.intervals.values() if s]
            out.update(
                comment=f"min_interval: new data within {min(intervals)}s of the last run's start is held, then runs once",
                poke_interval=max(1, min(300, min(intervals) // 10)),
                # Held at most the longest interval; a sensor past its timeout is skipped, not failed.
                timeout=max(intervals) + 3600,
            )
            return out
        if task.kind == "ranges":
            # bash and kubernetes: the mapped step's command line, each range appends --item
            mapped = plan.task(task.step.id).command
            out.update(comment=f"lists the item ranges of {task.step.id} (at most {plan.max_ranges})", max_ranges=plan.max_ranges,
                       argv=_argv_expr(mapped.prefix(_IR), operator))
            return out
        step = task.step
        task_options = [("retries", str(step.retries)), ("retry_delay", _duration(step.retry_delay))]
        if step.timeout:
            task_options.append(("execution_timeout", _duration(step.timeout)))
        comment = f"{step.kind} step {step.id}"
        if step.fanout:
            fan = step.fanout
            size = (f"{fan.size} items" if fan.size is not None else
                    f"one item per {fan.rows_per_item} input rows, found at run time" if fan.method == "rows" else
                    f"{fan.trials} trials per partition found at run time")
            comment = f"{step.kind} fan-out: {size}, one mapped task"
            if fan.max_parallel:
                task_options.append(("max_active_tis_per_dagrun", str(int(fan.max_parallel))))
        gate = task.decides
        out.update(
            pod_name=naming.k8s_name(step.id),
            image=step.image,
            env=kubernetes.pod_env(step, code=plan.code) if operator == "kubernetes" else {},  # the other modes: the runtime sets it
            resources=kubernetes.pod_resources(step),
            secrets=[{"name": ref.env, "secret": ref.secret, "key": ref.key} for ref in kubernetes.secret_refs(step)],
            comment=comment + (": a failed gate skips what follows" if gate else ""),
            mapped=task.maps_over is not None,
            maps_over=naming.airflow_id(task.maps_over) if task.maps_over else None,
            gate=gate,
            skip_exit_code=task.command.skip_exit_code,
            argv=None if task.maps_over else _argv_expr(task.command.argv(_IR), operator),
            options=task_options,
        )
        return out

    @staticmethod
    def assets(plan: Plan) -> list[dict]:
        return [
            {
                "name": f"{plan.name}.{trigger['source']}",
                "uri": trigger["uri"] or f"dagsmith://{plan.name}/{trigger['source']}",
                "queue": trigger.get("queue"),
                "watcher": f"{plan.name}.{trigger['source']}.sqs",
                "message_filter": sqs_message_filter(trigger.get("uri")),
            }
            for trigger in plan.on_new_data
        ]

    @staticmethod
    def schedule(plan: Plan, assets: list[dict]) -> tuple[str, set[str]]:
        cron = plan.schedule_written
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


def sqs_message_filter(uri: str | None) -> str:
    """The SqsSensorTrigger's `message_filtering_config` (with message_filtering="jsonpath-ext"):
    a message is new data of the source only when a record of it is an object created in the
    source's bucket under its key (plan.new_object: the rule of every backend). Without it, every
    message on the queue started a run: S3's s3:TestEvent, other buckets, `t.csv.bak` for `t.csv`.
    The provider keeps a message when the expression finds anything and no match values are
    given (providers/amazon/aws/utils/sqs.py:83-98, apache-airflow-providers-amazon 9.39.0); the
    `=~` operator is Python's re.search (jsonpath-ng 1.17.0 jsonpath_ng/ext/filter.py:44), so `\\Z`, not `$`, ends
    the text. A quote or backslash inside a JSONPath string is escaped with a backslash
    (jsonpath_ng/lexer.py, t_doublequote_escape)."""
    new = new_object(uri)
    tests = ['@.eventName =~ "^ObjectCreated:"']
    if new.bucket is not None:
        tests.append(f"@.s3.bucket.name == {_jsonpath_text(new.bucket)}")
    if new.key:
        end = r"\Z" if new.exact else ""
        tests.append(f"@.s3.object.key =~ {_jsonpath_text('^' + re.escape(new.key) + end)}")
    return f"Records[?({' && '.join(tests)})]"


def _jsonpath_text(text: str) -> str:
    return '"' + re.sub(r'(["\\])', r"\\\1", text) + '"'


_IR = "\x00IR"  # stands for the IR's location in a command line: a variable of the DAG file


def _argv_expr(argv: list[str], operator: str) -> str:
    """A command line as a Python list expression of the DAG file: the IR is its variable (IR, a
    path beside the DAG file; IR_URI for pods, whose command is `dagsmith`, so left out)."""
    if operator == "kubernetes":
        argv = argv[1:]
    ir_var = "IR_URI" if operator == "kubernetes" else "IR"
    return "[" + ", ".join(ir_var if arg == _IR else _py(arg) for arg in argv) + "]"


def _change(path: Path, text: str) -> str:
    """create | update | keep (unchanged) for writing `text` to `path`."""
    if not path.exists():
        return "create"
    return "keep" if path.read_bytes() == text.encode("utf-8") else "update"


def _unique(problems: list[Problem]) -> list[Problem]:
    return list(dict.fromkeys(problems))


def dagbag_import_errors(folder: Path) -> dict:
    """Parse every DAG file of a folder with Airflow's own DagBag: {file: error}.

    Airflow logs as it imports and parses ("Filling up the DagBag from ...", on stdout, whatever
    the caller's logging setup: its structlog writers hold the process's streams). None of that
    is dagsmith's output, so both streams are diverted while Airflow runs here; what it printed
    is shown only when it fails outright (the import errors themselves come back in the dict).
    """
    with _DivertedOutput():
        try:
            from airflow.dag_processing.dagbag import DagBag
        except ImportError:
            raise UsageError("deploying to Airflow needs Airflow: pip install 'dagsmith[airflow]'") from None
        return dict(DagBag(dag_folder=str(folder)).import_errors)


class _DivertedOutput:
    """File descriptors 1 and 2 into a temporary file for the duration (not just sys.stdout and
    sys.stderr: Airflow's log writers may hold the original stream objects). Dropped on
    success; written to stderr after all when the block raises (other than a UsageError)."""

    def __enter__(self):
        import os
        import tempfile

        self._flush()
        self.sink = tempfile.TemporaryFile()
        self.saved = []
        try:
            for fd in (1, 2):
                copy = os.dup(fd)
                self.saved.append((fd, copy))
                os.dup2(self.sink.fileno(), fd)
        except OSError:  # no such descriptor (an embedding host): nothing more to divert
            pass
        return self

    def __exit__(self, exc_type, exc, tb) -> None:
        import os
        import sys

        self._flush()
        for fd, copy in self.saved:
            os.dup2(copy, fd)
            os.close(copy)
        with self.sink:
            if exc_type is not None and not issubclass(exc_type, UsageError):
                self.sink.seek(0)
                text = self.sink.read().decode("utf-8", "replace")
                if text:
                    print(text, end="" if text.endswith("\n") else "\n", file=sys.stderr, flush=True)

    @staticmethod
    def _flush() -> None:
        import sys

        for stream in (sys.stdout, sys.stderr):
            try:
                stream.flush()
            except (AttributeError, OSError, ValueError):
                pass


def python_imports(plan: Plan, operator: str) -> list[str]:
    """The operators from providers.standard.operators.python that the DAG file uses (no others)."""
    names = set()
    if any(task.kind == "ranges" for task in plan.tasks):
        names.add("PythonOperator")
    if operator == "python":
        names.add("PythonOperator")
        if any(task.decides and task.kind == "step" for task in plan.tasks):
            names.add("ShortCircuitOperator")
    return sorted(names)


GATED_EXIT_CODE = E.SKIP_EXIT_CODE  # bash and kubernetes modes: the exit code that skips a gate's scope
