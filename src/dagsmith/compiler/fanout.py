"""Pass: lower training (sweep, partitions) into ONE fan-out step, never one step per trial.

training            -> train
training + sweep    -> train (fan-out over trials) -> select
partition_by static -> train (fan-out over partitions x trials) -> select
partition_by found at run time -> plan -> train (fan-out, items from plan) -> select

Batch scoring with `rows_per_task` is one predict step with a fan-out over row ranges of its
input table (method "rows"): the item count comes from the table's row count at run time.
"""

from __future__ import annotations

import math

from ..ir import FanOut, Step
from ..spec.model import Evaluation, Training
from .make import make_step, table


def trial_count(training: Training) -> int:
    sweep = training.sweep
    if sweep is None:
        return 1
    if sweep.method == "random":
        return sweep.samples
    return math.prod(len(values) for values in sweep.parameters.values())


def fanout_of(training: Training) -> FanOut | None:
    sweep = training.sweep
    if sweep is None and training.partition_by is None:
        return None
    trials = trial_count(training)
    partitions = training.partitions
    dynamic = training.partition_by is not None and partitions is None
    return FanOut(
        method=sweep.method if sweep else "single",
        parameters={name: sweep.parameters[name] for name in sorted(sweep.parameters)} if sweep else {},
        trials=trials,
        seed=sweep.seed if sweep else 0,
        samples=sweep.samples if sweep else None,
        partition_by=training.partition_by,
        partitions=partitions,
        items_from="plan" if dynamic else None,
        size=None if dynamic else trials * (len(partitions) if partitions else 1),
        max_parallel=sweep.max_parallel if sweep else None,
    )


def lower_training(training: Training, evaluation: Evaluation | None, key_columns: tuple[str, ...] = ()) -> list[Step]:
    inputs = tuple(table(name) for name in training.inputs)
    fanout = fanout_of(training)
    config = {
        "inputs": list(training.inputs),
        "target": training.target,
        "split": dict(training.split),
        "partition_by": training.partition_by,
        # Row identifiers of the input features: never used as model inputs.
        "exclude": sorted(set(key_columns) - {training.target}),
        "model": {"estimator": training.estimator, "entrypoint": training.entrypoint, "params": training.model_params},
        "distributed": (
            {"framework": training.distributed.framework, "workers": training.distributed.workers,
             "gpus_per_worker": training.distributed.gpus_per_worker}
            if training.distributed else None
        ),
    }
    steps: list[Step] = []
    train_deps = training.inputs
    items = ()  # the plan's item list, read by train and select when partitions are found at run time
    if fanout and fanout.items_from:
        steps.append(make_step(
            "plan", "plan", training.options, depends_on=training.inputs, inputs=inputs,
            outputs=("items:plan",),
            config={"inputs": list(training.inputs), "partition_by": training.partition_by, "trials": fanout.trials},
        ))
        train_deps = ("plan",)
        items = ("items:plan",)
    steps.append(make_step(
        "train", "train", training.options, depends_on=train_deps, inputs=inputs + items,
        outputs=("trials:train",) if fanout else ("model:train",), config=config, fanout=fanout,
    ))
    if fanout:
        sweep = training.sweep
        # Without a sweep, each partition has a single trial: select just gathers the models.
        metric = sweep.select_metric if sweep else (evaluation.metrics[0] if evaluation else None)
        steps.append(make_step(
            "select", "select", training.options, depends_on=("train",), inputs=("trials:train",) + items,
            outputs=("model:select",),
            config={"metric": metric, "goal": sweep.select_goal if sweep else None, "per_partition": training.partition_by is not None},
        ))
    return steps


def rows_fanout(rows_per_task: int | None) -> FanOut | None:
    """A predict step's fan-out over row ranges (None: one task). No plan step: the ranges task
    and every item read the row count from the input table's parquet metadata."""
    if rows_per_task is None:
        return None
    return FanOut(method="rows", parameters={}, trials=1, size=None, rows_per_item=rows_per_task)
