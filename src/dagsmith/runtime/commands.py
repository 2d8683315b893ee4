"""The orchestrator-neutral step commands: what any container can run.

    dagsmith step IR STEP [--item R]  one step, or a range of a fan-out's items
    dagsmith ranges IR STEP --max N   a fan-out's items as at most N [start, stop) ranges, a
                                      JSON list of {"start", "stop"} (each one a valid --item):
                                      what Argo's withParam / a Step Functions Map iterate over
    dagsmith admit IR                 min_interval admission of this run (runtime/admission.py)

Both, like `dagsmith step`, print their result as JSON on stdout and, with `--outcome PATH`,
write it to PATH (what Argo output parameters and Step Functions task results read). `step` and
`admit` also write, with `--status PATH`, their outcome as ONE word (step: succeeded | skip;
admit: admit | covered), for orchestrators whose conditions compare strings (Argo's `when`).
An in-process caller (Airflow's python mode) calls `item_ranges` / `admit_run` directly.
"""

from __future__ import annotations

import json
import math
import os
import sys
import time
from pathlib import Path

from . import admission
from . import environment as E
from .context import RunValues, StepFailed, default_store_uri
from .store import Store, atomic_write_bytes

HOLD_EXIT_CODE = E.HOLD_EXIT_CODE  # EX_TEMPFAIL: `dagsmith admit` without --wait when min_interval holds the run


def split_ranges(total: int, max_ranges: int) -> list[tuple[int, int]]:
    """[0, total) in at most `max_ranges` contiguous ranges of equal size (the last shorter):
    one item per range whenever the fan-out fits."""
    if max_ranges < 1:
        raise StepFailed(f"--max must be at least 1, got {max_ranges}")
    size = max(1, math.ceil(total / max_ranges))
    return [(start, min(start + size, total)) for start in range(0, total, size)]


def item_ranges(ctx, max_ranges: int) -> list[dict]:
    """The ranges of the fan-out step of `ctx` (partitions found at run time are read from its
    plan step's output, so that must have run)."""
    from .fanout import item_count

    if ctx.step.fanout is None:
        raise StepFailed(f"step {ctx.step.id!r} is not a fan-out: it has no item ranges")
    return [{"start": a, "stop": b} for a, b in split_ranges(item_count(ctx), max_ranges)]


def write_status(path: str | None, word: str) -> None:
    if path:
        atomic_write_bytes(Path(path), word.encode("ascii"))


def write_outcome(path: str | None, data) -> None:
    """The result as JSON at `path` (atomically: a reader never sees half of it)."""
    if path:
        atomic_write_bytes(Path(path), (json.dumps(data, sort_keys=True, default=str) + "\n").encode("utf-8"))


def main_ranges(ir_file: str, step_id: str, max_ranges: int, store_uri: str | None, outcome: str | None) -> int:
    from . import load_ir, make_context

    ir = load_ir(ir_file)
    ctx = make_context(ir, step_id, Store.open(store_uri or default_store_uri()), None, os.environ)
    ranges = item_ranges(ctx, max_ranges)
    write_outcome(outcome, ranges)
    print(json.dumps(ranges, separators=(",", ":")))
    return 0


def intervals_of(ir) -> dict[str, float]:
    return {t["source"]: float(t.get("min_interval") or 0) for t in ir.triggers.get("on_new_data") or []}


def admit_run(ir, store: Store, environ=os.environ, now: float | None = None) -> admission.Decision:
    """min_interval admission of the run described by `environ` (DAGSMITH_RUN_ID, DAGSMITH_TRIGGER)."""
    values = RunValues.from_env(ir, environ)
    trigger = admission.parse_trigger(environ.get(E.TRIGGER))
    return admission.admit(store, ir.name, intervals_of(ir), trigger, values.run_id, time.time() if now is None else now)


def main_admit(ir_file: str, store_uri: str | None, outcome: str | None, skip_exit_code: int | None, wait: bool,
               sleep=time.sleep, status: str | None = None) -> int:
    """Exit 0 when admitted; `skip_exit_code` (or 0) when covered; with --wait a hold sleeps and
    decides again, without it a hold exits HOLD_EXIT_CODE (for orchestrators that retry)."""
    from . import load_ir

    ir = load_ir(ir_file)
    store = Store.open(store_uri or default_store_uri())
    while True:
        decision = admit_run(ir, store)
        if decision.action == "hold" and wait:
            print(f"admit: {decision.reason}: waiting {decision.wait_seconds:.0f}s", file=sys.stderr, flush=True)
            sleep(decision.wait_seconds)
            continue
        break
    write_outcome(outcome, decision.to_json())
    if decision.action != "hold":
        write_status(status, decision.action)
    print(json.dumps(decision.to_json(), sort_keys=True))
    print(f"admit: {decision.action}: {decision.reason}", file=sys.stderr)
    if decision.action == "hold":
        return HOLD_EXIT_CODE
    if decision.action == "covered":
        return skip_exit_code or 0
    return 0


def main_step(ir_file: str, step_id: str, item: str | None, store_uri: str | None, skip_exit_code: int | None = None,
              outcome: str | None = None, status: str | None = None) -> int:
    """Run a step (or a range of a fan-out's items). Each item's result is printed as a JSON line;
    `outcome` gets {"step", "status": succeeded | skip | failed, "results": [...], "error"?} as one
    JSON file, for orchestrators that read a task's result from a file (Argo output parameters,
    Step Functions task results). "skip": a gate did not pass; `skip_exit_code` is then the exit
    code, for orchestrators that skip on one."""
    from . import load_ir, make_context, parse_items, run_step

    results: list = []
    try:
        ir = load_ir(ir_file)
        store = Store.open(store_uri or default_store_uri())
        for index in parse_items(item):
            result = run_step(make_context(ir, step_id, store, index, os.environ, ir_path=ir_file))
            results.append(result)
            print(json.dumps(result, sort_keys=True, default=str), file=sys.stdout)
            if result.get("passed") is False:
                write_outcome(outcome, {"step": step_id, "status": "skip", "passed": False, "results": results})
                write_status(status, "skip")
                if skip_exit_code is not None:
                    print(f"step {step_id!r}: gates did not pass: exiting {skip_exit_code} so what follows is skipped", file=sys.stderr)
                    return skip_exit_code
                return 0
    except Exception as exc:
        from ..errors import hide_connections  # the outcome goes to the orchestrator (Step Functions' history)

        write_outcome(outcome, {"step": step_id, "status": "failed", "error": hide_connections(str(exc)), "results": results})
        raise
    write_outcome(outcome, {"step": step_id, "status": "succeeded", "passed": results[-1].get("passed") if results else None, "results": results})
    write_status(status, "succeeded")
    return 0
