"""What the Python callables of a generated Airflow DAG run: the step commands, in-process.

The DAG file imports this module when Airflow parses it, so it imports nothing heavy at module
level. Every callable gets only step ids, the IR file's path, the store and the root from the
DAG file (no spec text passes through Airflow's templating); the rest comes from the IR at run
time. They call the same functions as `dagsmith step`, `dagsmith ranges` and `dagsmith admit`
(runtime/commands.py), with the run environment of runtime/environment.py built from Airflow's
context: DAGSMITH_RUN_ID is the run_id, DAGSMITH_RUN_DATE the logical date (or, for runs without
one, the time the run was due), DAGSMITH_PARAMS the run's params.
"""

from __future__ import annotations

import json
import os
import shlex
from functools import lru_cache


@lru_cache(maxsize=8)
def _load(ir_path: str):
    from ...runtime import load_ir

    return load_ir(ir_path)


def run_date(context) -> str:
    run = context.get("dag_run")
    when = context.get("logical_date") or getattr(run, "logical_date", None) or getattr(run, "run_after", None)
    return when.date().isoformat() if when is not None else ""


def _environ(ir, context, store: str, root: str) -> dict:
    """The run environment; DAGSMITH_ROOT set in the worker wins over the DAG file's folder."""
    from ...runtime.environment import ROOT, run_environment

    params = context.get("params") or {}
    chosen = {name: params[name] for name in ir.params if name in params}
    return {**os.environ, **run_environment(str(context["run_id"]), run_date(context), chosen, store=store, root=os.environ.get(ROOT) or root)}


def _context(ir_path: str, step_id: str, store: str, root: str, item, context):
    from ...runtime import make_context
    from ...runtime.store import Store

    ir = _load(ir_path)
    return make_context(ir, step_id, Store.open(store), item, _environ(ir, context, store, root), ir_path=ir_path)


def _names_from_airflow(step) -> dict:
    """Connections and secrets are names in the spec; Airflow holds their values: a connection
    id (DAGSMITH_CONN_<NAME> gets its URI) and a Variable per secret (an env var of that name).
    Values already in the environment win, so a worker can also be given them directly."""
    from ...runtime.sources import connection_env

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


def _run(ir_path: str, step_id: str, store: str, root: str, item, context) -> dict:
    from ...runtime import run_step

    ctx = _context(ir_path, step_id, store, root, item, context)
    added = _names_from_airflow(ctx.step)
    os.environ.update(added)
    try:
        return run_step(ctx)
    finally:  # dag.test() runs every task in one process: leave nothing behind
        for name in added:
            os.environ.pop(name, None)


def run_step(ir_path: str, step_id: str, store: str, root: str, **context) -> None:
    """One step. A failure raises, so the task fails and what follows is upstream_failed."""
    _run(ir_path, step_id, store, root, None, context)


def run_gate(ir_path: str, step_id: str, store: str, root: str, **context) -> bool:
    """A gate, for a ShortCircuitOperator: False skips deployment and everything after it."""
    return bool(_run(ir_path, step_id, store, root, None, context).get("passed", True))


def run_items(item: dict, ir_path: str, step_id: str, store: str, root: str, **context) -> None:
    """One range {"start", "stop"} of a fan-out's items (a mapped task instance)."""
    for index in range(item["start"], item["stop"]):
        _run(ir_path, step_id, store, root, index, context)


def fanout_ranges(ir_path: str, step_id: str, max_ranges: int, store: str, root: str, render: str = "python",
                  argv: list | None = None, **context) -> list:
    """`dagsmith ranges`, in-process: the mapped task's inputs, one per range. render="python"
    gives [range] (op_args of run_items); "bash" the command line `argv --item RANGE`, quoted;
    "kubernetes" the pod's arguments `argv --item RANGE` (argv: the step's command, from the plan)."""
    from ...runtime.commands import item_ranges

    ranges = item_ranges(_context(ir_path, step_id, store, root, None, context), max_ranges)
    if render == "bash":
        return [shlex.join([*argv, "--item", json.dumps(r)]) for r in ranges]
    if render == "kubernetes":
        return [[*argv, "--item", json.dumps(r)] for r in ranges]
    return [[r] for r in ranges]


def trigger_of(ir, context) -> str:
    """DAGSMITH_TRIGGER for an asset-triggered run: the sources whose assets fired and when the
    newest event came; empty for scheduled and manual runs."""
    run = context.get("dag_run")
    if "asset" not in str(getattr(run, "run_type", "") or "").lower():
        return ""
    prefix = f"{ir.name}."
    sources, times = [], []
    for asset, events in dict(context.get("triggering_asset_events") or {}).items():
        name = getattr(asset, "name", None) or str(asset)
        if name.startswith(prefix):
            sources.append(name[len(prefix):])
        times.extend(getattr(event, "timestamp", None) for event in events or ())
    times = [t for t in times if t is not None]
    when = max(times) if times else getattr(run, "queued_at", None) or getattr(run, "run_after", None)
    known = {t["source"] for t in ir.triggers.get("on_new_data") or []}
    return json.dumps({"sources": sorted(set(sources) & known) or sorted(known), "at": when.isoformat() if when else None})


def admit(ir_path: str, store: str, **context) -> bool:
    """`dagsmith admit`, in-process, as a PythonSensor's poke (mode reschedule): True admits the
    run; False while min_interval holds it (the sensor pokes again later, holding no worker
    slot); a run whose data an earlier run already read is skipped whole."""
    from ...runtime.commands import admit_run
    from ...runtime.environment import TRIGGER
    from ...runtime.store import Store

    ir = _load(ir_path)
    environ = {**_environ(ir, context, store, ""), TRIGGER: trigger_of(ir, context)}
    decision = admit_run(ir, Store.open(store), environ)
    print(f"min_interval admission: {decision.action}: {decision.reason}")
    if decision.action == "covered":
        from airflow.sdk.exceptions import AirflowSkipException

        raise AirflowSkipException(decision.reason)
    return decision.action == "admit"
