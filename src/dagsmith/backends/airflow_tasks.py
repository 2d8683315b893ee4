"""What the tasks of a generated Airflow DAG call (operator: python).

The DAG file imports this module when Airflow parses it, so it imports nothing heavy at module
level. Every callable gets only step ids and the IR file's name from the DAG file (safe names:
no spec text passes through Airflow's templating); the rest comes from the IR at run time.

Run values: DAGSMITH_RUN_ID is Airflow's run_id, DAGSMITH_RUN_DATE the run's logical date (or,
for runs without one, the time it was triggered), DAGSMITH_PARAMS the DAG run's params.
Store: `backends.airflow.store` from the spec, else $DAGSMITH_STORE, else $AIRFLOW_HOME/dagsmith.
Relative data paths resolve against $DAGSMITH_ROOT, else the folder of the DAG file (see
runtime/context.py: the same rules hold for `dagsmith step` in the bash operator mode).
"""

from __future__ import annotations

import json
import math
import os
import shlex
from functools import lru_cache


@lru_cache(maxsize=8)
def _load(ir_path: str):
    from ..runtime import load_ir

    return load_ir(ir_path)


def _store(ir):
    from ..runtime.context import default_store_uri
    from ..runtime.store import Store

    return Store.open(default_store_uri(ir, {**os.environ, "DAGSMITH_BACKEND": "airflow"}))


def _environ(ir, context) -> dict:
    run = context.get("dag_run")
    when = context.get("logical_date") or getattr(run, "logical_date", None) or getattr(run, "run_after", None)
    params = context.get("params") or {}
    return {
        **os.environ,
        "DAGSMITH_BACKEND": "airflow",
        "DAGSMITH_RUN_ID": str(context["run_id"]),
        "DAGSMITH_RUN_DATE": when.date().isoformat() if when is not None else "",
        "DAGSMITH_PARAMS": json.dumps({name: params[name] for name in ir.params if name in params}, default=str),
    }


def _context(ir_path: str, step_id: str, item, context):
    from ..runtime import make_context

    ir = _load(ir_path)
    return make_context(ir, step_id, _store(ir), item, _environ(ir, context), ir_path)


def _names_from_airflow(step) -> dict:
    """Connections and secrets are names in the spec; Airflow holds their values: a connection
    id (DAGSMITH_CONN_<NAME> gets its URI) and a Variable per secret (an env var of that name).
    Values already in the environment win, so a worker can also be given them directly."""
    from ..runtime.sources import connection_env

    found = {}
    for name in step.connections:
        variable = connection_env(name)
        if variable not in os.environ:
            from airflow.sdk import Connection

            uri = Connection.get(name).get_uri()
            # Airflow writes postgres://, SQLAlchemy 2 reads postgresql://
            found[variable] = "postgresql://" + uri[len("postgres://"):] if uri.startswith("postgres://") else uri
    for name in step.secrets:
        if name not in os.environ:
            from airflow.sdk import Variable

            found[name] = Variable.get(name)
    return found


def _run(ir_path: str, step_id: str, item, context) -> dict:
    from ..runtime import run_step

    ctx = _context(ir_path, step_id, item, context)
    added = _names_from_airflow(ctx.step)
    os.environ.update(added)
    try:
        return run_step(ctx)
    finally:  # dag.test() runs every task in one process: leave nothing behind
        for name in added:
            os.environ.pop(name, None)


def run_step(ir_path: str, step_id: str, **context) -> None:
    """One step. A failure raises, so the task fails and what follows is upstream_failed."""
    _run(ir_path, step_id, None, context)


def run_gate(ir_path: str, step_id: str, **context) -> bool:
    """A gate, for a ShortCircuitOperator: False skips deployment and everything after it."""
    return bool(_run(ir_path, step_id, None, context).get("passed", True))


def fanout_batches(ir_path: str, step_id: str, max_map_length: int, render: str = "python", pod_ir: str | None = None, **context) -> list:
    """The fan-out's items as at most `max_map_length` [start, stop) ranges: one mapped task
    instance per range, one item per instance whenever the fan-out fits. render="bash" gives
    each range as the `dagsmith step` command that runs it; render="kubernetes" as the pod's
    arguments (reading the IR at `pod_ir`)."""
    from ..runtime.fanout import item_count

    total = item_count(_context(ir_path, step_id, None, context))
    size = max(1, math.ceil(total / max_map_length))
    ranges = [[start, min(start + size, total)] for start in range(0, total, size)]
    if render == "bash":
        return [bash_command(ir_path, step_id, json.dumps({"start": a, "stop": b})) for a, b in ranges]
    if render == "kubernetes":
        return [["step", pod_ir, step_id, "--item", json.dumps({"start": a, "stop": b})] for a, b in ranges]
    return ranges


def bash_command(ir_path: str, step_id: str, item: str | None = None, skip_exit_code: int | None = None) -> str:
    """`dagsmith step` as one shell-quoted command line (operator: bash). It holds no spec text:
    the IR path, a step id, digits; the run's values come in the task's environment."""
    argv = ["dagsmith", "step", ir_path, step_id]
    if item is not None:
        argv += ["--item", item]
    if skip_exit_code is not None:
        argv += ["--skip-exit-code", str(skip_exit_code)]
    return shlex.join(argv)


def run_items(start: int, stop: int, ir_path: str, step_id: str, **context) -> None:
    for item in range(start, stop):
        _run(ir_path, step_id, item, context)


def min_interval_guard(ir_path: str, seconds: int, **context) -> bool:
    """At most one data-triggered run per `seconds`, however many asset events arrive: a run
    started by new data within the interval after the last admitted one is skipped whole.
    The time of admitted runs lives in the artifact store, so it holds across schedulers."""
    import datetime as dt

    run = context.get("dag_run")
    run_type = str(getattr(run, "run_type", "") or "")
    if "asset" not in run_type.lower():
        return True  # a scheduled or manual run is never held back
    ir = _load(ir_path)
    store = _store(ir)
    key = f"triggers/{ir.name}/last_admitted.json"
    now = dt.datetime.now(dt.timezone.utc)
    last = store.read_json(key)
    if last is not None:
        elapsed = (now - dt.datetime.fromisoformat(last["at"])).total_seconds()
        if elapsed < seconds:
            print(f"new data within min_interval ({elapsed:.0f}s < {seconds}s after run {last['run_id']}): skipping this run")
            return False
    store.write_json(key, {"at": now.isoformat(), "run_id": str(context["run_id"])})
    return True
