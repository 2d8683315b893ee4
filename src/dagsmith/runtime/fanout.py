"""Fan-out items: how many there are, and what item N means (partition, trial, parameters).

Item i of a fan-out is partition ``i // trials`` and trial ``i % trials`` (see ``ir.FanOut``).
A trial's parameters are decoded from the IR alone, so a backend maps over ``range(count)``
and every task finds its own work:

- grid: mixed radix over the parameter lists in key order (``FanOut.parameters`` is
  key-sorted); the last key varies fastest. Every combination appears exactly once.
- random: for each key in order, a draw from ``random.Random(f"{seed}:{trial}")``: a list ->
  ``choice``; ``{low, high}`` -> uniform, ``log: true`` -> log-uniform, ``type: int`` -> rounded
  to an int. The same trial has the same parameters in every partition and on every machine.
- single: no parameters (one trial per partition).

Partitions come from the IR when static (``FanOut.partitions``) or from the plan step's
``items.json`` ({"partitions": [...], "trials": n, "count": n * len}) when found at run time.

- rows (a predict step's ``rows_per_task``): item i is rows [i * N, (i + 1) * N) of the step's
  input table; the count, ceil(rows / N) and at least 1, comes from the input's parquet metadata.
"""

from __future__ import annotations

import dataclasses
import json
import math
import random
from collections.abc import Callable
from typing import Any

from ..ir import FanOut, Step
from .context import StepContext, StepFailed

ITEMS_FILE = "items.json"


def _resolve(ctx_or_ir, step=None, store=None, run_id=None) -> tuple[Step, Callable[[str], dict]]:
    """The fan-out step, and a reader of a plan step's items.json in this run. Through a
    StepContext the read is checked against that step's declared inputs; (ir, step, store,
    run_id) is for callers outside any step (the runner, an orchestrator)."""
    ctx = ctx_or_ir if isinstance(ctx_or_ir, StepContext) else None
    if ctx is not None:
        ir, target, store, run_id = ctx.ir, ctx.step if step is None else step, ctx.store, ctx.values.run_id
    else:
        ir, target = ctx_or_ir, step
        if step is None or store is None or run_id is None:
            raise TypeError("item_count/partitions_of take a StepContext, or (ir, step, store, run_id)")

    def read_items(plan_step_id: str) -> dict:
        if ctx is not None:
            manifest = ctx.manifest_of(plan_step_id, missing_ok=True)
        else:
            manifest = store.manifest(store.step_key(run_id, plan_step_id))
        if manifest is None:
            raise StepFailed(f"the partitions of this run are not known yet: step {plan_step_id!r} has no outputs "
                             f"in run {run_id!r} (run it first)")
        return json.loads(store.file(manifest, ITEMS_FILE).read_text(encoding="utf-8"))

    return (ir.step(target) if isinstance(target, str) else target), read_items


def _partitions(step: Step, read_items: Callable[[str], dict]) -> list | None:
    fanout = step.fanout
    if fanout is None or fanout.partition_by is None:
        return None
    if fanout.partitions is not None:
        return list(fanout.partitions)
    return list(read_items(fanout.items_from)["partitions"])


def partitions_of(ctx_or_ir, step=None, store=None, run_id=None) -> list | None:
    """The partition values of a fan-out step (static, or from its plan step); None if unpartitioned."""
    return _partitions(*_resolve(ctx_or_ir, step, store, run_id))


def item_count(ctx_or_ir, step=None, store=None, run_id=None) -> int:
    """Number of items of a fan-out step: `fanout.size`, or partitions found by plan x trials.

    Call as ``item_count(ctx)`` or ``item_count(ir, step_or_id, store, run_id)``. A step without
    a fan-out has 0 items. For a run-time partitioned fan-out, the plan step must have run.
    """
    step, read_items = _resolve(ctx_or_ir, step, store, run_id)
    fanout = step.fanout
    if fanout is None:
        return 0
    if fanout.size is not None:
        return fanout.size
    if fanout.method == "rows":
        return rows_items(input_rows(_context_of(ctx_or_ir, step, store, run_id)), fanout.rows_per_item)
    return len(_partitions(step, read_items) or [None]) * fanout.trials


def rows_items(rows: int, rows_per_item: int) -> int:
    """Items of a row fan-out over `rows` input rows: an empty input is one (empty) item."""
    return max(1, -(-rows // rows_per_item))  # integer ceiling: exact for any row count


def row_range(ctx: StepContext) -> tuple[int, int, int]:
    """(start, stop, count): the input rows item `ctx.item` of a row fan-out scores, and the
    fan-out's item count."""
    fanout = ctx.step.fanout
    rows = input_rows(ctx)
    count = rows_items(rows, fanout.rows_per_item)
    index = ctx.item
    if not isinstance(index, int) or index < 0 or index >= count:
        raise StepFailed(f"item {index} is out of range: step {ctx.step.id!r} has {count} items (0..{count - 1}) "
                         f"for the {rows} rows of its input")
    start = index * fanout.rows_per_item
    return start, min(start + fanout.rows_per_item, rows), count


def input_rows(ctx: StepContext) -> int:
    """The row count of a row fan-out's input table, from its parquet metadata (every part's)."""
    import pyarrow.parquet as pq

    return sum(pq.ParquetFile(path).metadata.num_rows for path in ctx.table_files(ctx.step.config["input"]))


def _context_of(ctx_or_ir, step: Step, store, run_id) -> StepContext:
    """A StepContext for reading the step's declared inputs, from a caller outside any step."""
    if isinstance(ctx_or_ir, StepContext):
        return ctx_or_ir if ctx_or_ir.step.id == step.id else dataclasses.replace(ctx_or_ir, step=step, item=None)
    from pathlib import Path

    from .context import RunValues

    return StepContext(ir=ctx_or_ir, step=step, store=store, values=RunValues(run_id, "", {}), root=Path("."))


def decode(fanout: FanOut, index: int, partitions: list | tuple | None = None) -> tuple[Any, int, dict]:
    """Item index -> (partition value or None, trial index, the trial's parameters)."""
    if partitions is None:
        partitions = fanout.partitions
    if fanout.partition_by is not None and partitions is None:
        raise StepFailed("this fan-out's partitions are found at run time: pass the plan's partitions to decode")
    count = fanout.trials * (len(partitions) if fanout.partition_by is not None else 1)
    if not isinstance(index, int) or index < 0 or index >= count:
        raise StepFailed(f"item {index} is out of range: this fan-out has {count} items (0..{count - 1})")
    partition = partitions[index // fanout.trials] if fanout.partition_by is not None else None
    trial = index % fanout.trials
    return partition, trial, trial_params(fanout, trial)


def trial_params(fanout: FanOut, trial: int) -> dict:
    """The parameters of one trial (the same in every partition)."""
    if fanout.method == "single" or not fanout.parameters:
        return {}
    if fanout.method == "grid":
        return _grid(fanout.parameters, trial)
    if fanout.method == "random":
        return _random(fanout.parameters, fanout.seed, trial)
    raise StepFailed(f"unknown fan-out method {fanout.method!r}")


def grid_size(parameters: dict) -> int:
    return math.prod(len(values) for values in parameters.values())


def _grid(parameters: dict, trial: int) -> dict:
    names = sorted(parameters)  # already sorted in the IR; sorted again for hand-made FanOuts
    out: dict = {}
    rest = trial
    for name in reversed(names):  # the last key varies fastest
        values = parameters[name]
        rest, digit = divmod(rest, len(values))
        out[name] = values[digit]
    return {name: out[name] for name in names}


def _random(parameters: dict, seed: int, trial: int) -> dict:
    rng = random.Random(f"{seed}:{trial}")
    out = {}
    for name in sorted(parameters):
        space = parameters[name]
        if isinstance(space, list):
            out[name] = rng.choice(space)
            continue
        low, high = float(space["low"]), float(space["high"])
        if space.get("log"):
            if low <= 0 or high <= 0:
                raise StepFailed(f"sweep parameter {name!r}: a log range needs low > 0 and high > 0, got {low}..{high}")
            value = math.exp(rng.uniform(math.log(low), math.log(high)))
        else:
            value = rng.uniform(low, high)
        out[name] = int(round(value)) if space.get("type") == "int" else value
    return out
