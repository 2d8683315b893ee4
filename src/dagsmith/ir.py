"""The intermediate representation: what every backend and the local runner read.

An IR is a DAG of Steps (frozen dataclasses) held in a networkx.DiGraph, plus pipeline-level
params and triggers. Its JSON form (`dagsmith compile --target ir`) is versioned, sorted and
deterministic, and `IR.from_json(ir.to_json()) == ir` holds exactly.

Step kinds:
  source    reads a table (csv, parquet, s3 prefix, or a sql query on a named connection)
  feature   derives a table (DuckDB SQL or a Python transform)
  validate  runs Great Expectations on a table; on_failure=fail fails the step
  plan      finds the partition values at run time and writes the fan-out's item list
  train     trains a model; with `fanout`, ONE step that stands for every trial
  select    picks the best trial per partition of the train fan-out
  evaluate  computes metrics on the held-out split
  gate      checks the gates; when any fails, every step downstream is skipped and the run
            ends "gated" (not failed)
  deploy    registers/deploys the model(s) that passed
  custom    a user step: a Python function or an argv (run without a shell); it reads its declared
            inputs (tables, `model:<train|select>`, `registry:<alias|version>`) and writes its
            declared `table:<name>` outputs (tables/<name>.parquet in its manifest)
  predict   batch scoring: a table scored by this run's model (input `model:<train or select
            step>`) or a registry version (`registry:<production|canary|N>`), written as the
            table of its id (the input rows + prediction, probability, model_version)
"""

from __future__ import annotations

import json
from dataclasses import dataclass, field, fields
from functools import cached_property
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    import networkx as nx

# 2: steps declare every artifact they read, carry their spec `origin`, and no `argv` (the
# execution plan builds each task's command: backends/plan.py).
IR_VERSION = 2


def ir_filename(pipeline_name: str) -> str:
    """The IR file's name wherever it is written (build folder, run folder, beside a DAG)."""
    return f"{pipeline_name}.ir.json"
STEP_KINDS = ("source", "feature", "validate", "plan", "train", "select", "evaluate", "gate", "deploy", "custom", "predict")


@dataclass(frozen=True)
class FanOut:
    """One step that runs as many items: trials of a sweep, partitions, or partitions x trials;
    or (method "rows") row ranges of a predict step's input table.

    Items are numbered 0..size-1; item i is partition i // trials and trial i % trials, and the
    runtime decodes the trial's parameters from `parameters` (grid: mixed-radix over the lists in
    key order; random: draw i of a generator seeded with `seed`). So a 20,000-trial sweep is a few
    lines of IR, and a backend can map over index ranges instead of pushing 20,000 values.

    Method "rows" (a predict step with `rows_per_task`): item i scores rows
    [i * rows_per_item, (i + 1) * rows_per_item) of the input table; `size` is None, the count is
    ceil(input rows / rows_per_item) (at least 1: an empty input is one empty item), found at run
    time from the input table's parquet metadata (runtime/fanout.item_count). Each item commits its
    part of the output table; a reader reads the parts in item order as one table.
    """

    method: str  # "grid" | "random" | "single" (partitions only, one trial each) | "rows"
    parameters: dict  # grid: name -> [values]; random: name -> [values] or {low, high, log, type}
    trials: int  # trials per partition
    seed: int = 0
    samples: int | None = None
    partition_by: str | None = None
    partitions: tuple | None = None  # static values; None with partition_by = found at run time
    items_from: str | None = None  # the plan step that writes the items when not static
    size: int | None = None  # total items when known at compile time
    max_parallel: int | None = None
    rows_per_item: int | None = None  # method "rows": input rows per item (written in the JSON only when set)


@dataclass(frozen=True)
class Step:
    id: str
    kind: str
    depends_on: tuple[str, ...] = ()
    inputs: tuple[str, ...] = ()  # artifacts read, "<kind>:<name>" (IR.producer: the step writing it)
    outputs: tuple[str, ...] = ()  # artifacts written
    image: str | None = None
    resources: dict = field(default_factory=dict)
    retries: int = 0
    retry_delay: int = 60  # seconds
    timeout: int | None = None  # seconds
    secrets: tuple[str, ...] = ()  # names only
    connections: tuple[str, ...] = ()  # names only
    env: dict = field(default_factory=dict)
    config: dict = field(default_factory=dict)  # what the step does, by kind
    fanout: FanOut | None = None
    origin: tuple = ()  # where it is defined in the spec, e.g. ("features", "activity"), for messages


@dataclass(frozen=True)
class IR:
    pipeline: dict  # name, description, owner, tags, spec_hash (never where the spec or the compile was)
    params: dict  # name -> {type, default, required, description, enum}
    triggers: dict  # {"schedule": str|None, "on_new_data": [{source, uri, type, min_interval, queue}]}
    steps: tuple[Step, ...]  # in a deterministic topological order
    backends: dict = field(default_factory=dict)
    ir_version: int = IR_VERSION

    @cached_property
    def graph(self) -> "nx.DiGraph":
        """The steps as a networkx.DiGraph (node attribute `step`), built on first use."""
        import networkx as nx

        graph = nx.DiGraph()
        for step in self.steps:
            graph.add_node(step.id, step=step)
        for step in self.steps:
            for upstream in step.depends_on:
                graph.add_edge(upstream, step.id)
        return graph

    @cached_property
    def _by_id(self) -> dict[str, Step]:
        return {step.id: step for step in self.steps}

    @property
    def name(self) -> str:
        return self.pipeline["name"]

    @cached_property
    def _producers(self) -> dict[str, str]:
        return {artifact: step.id for step in self.steps for artifact in step.outputs}

    def producer(self, artifact: str) -> str:
        """The id of the step that writes `artifact` ("table:scores" -> the custom step that
        declares it in its outputs); else the part after ':' (a source's or feature's table, a
        registry alias, which no step of the run writes)."""
        return self._producers.get(artifact) or artifact.partition(":")[2]

    def step(self, step_id: str) -> Step:
        return self._by_id[step_id]

    def has_step(self, step_id: str) -> bool:
        return step_id in self._by_id

    def downstream(self, step_id: str) -> set[str]:
        import networkx as nx

        return nx.descendants(self.graph, step_id)

    # --- JSON form ---------------------------------------------------------------------------

    def to_json(self) -> dict:
        return {
            "ir_version": self.ir_version,
            "pipeline": self.pipeline,
            "params": self.params,
            "triggers": self.triggers,
            "backends": self.backends,
            "steps": [_step_json(step) for step in self.steps],
        }

    def dumps(self) -> str:
        return json.dumps(self.to_json(), indent=2, sort_keys=True, ensure_ascii=False) + "\n"

    @classmethod
    def from_json(cls, data: dict) -> "IR":
        version = data.get("ir_version")
        if version != IR_VERSION:
            from .errors import DagsmithError

            raise DagsmithError(f"IR version {version!r} is not supported (this dagsmith reads version {IR_VERSION}): compile the spec again")
        return cls(
            pipeline=data["pipeline"],
            params=data["params"],
            triggers=data["triggers"],
            steps=tuple(_step_from_json(s) for s in data["steps"]),
            backends=data.get("backends", {}),
            ir_version=version,
        )

    @classmethod
    def loads(cls, text: str) -> "IR":
        return cls.from_json(json.loads(text))


_STEP_FIELDS = tuple(f.name for f in fields(Step))
_FANOUT_FIELDS = tuple(f.name for f in fields(FanOut))
_TUPLE_FIELDS = {f.name for f in fields(Step) if f.type.startswith("tuple")}


def _step_json(step: Step) -> dict:
    # By hand rather than dataclasses.asdict, which deep-copies every value (slow on big IRs);
    # the values are already JSON-ready and are only serialized.
    out = {name: getattr(step, name) for name in _STEP_FIELDS}
    for name in _TUPLE_FIELDS:
        out[name] = list(out[name])
    if step.fanout is not None:
        fan = {name: getattr(step.fanout, name) for name in _FANOUT_FIELDS}
        if fan["partitions"] is not None:
            fan["partitions"] = list(fan["partitions"])
        if fan["rows_per_item"] is None:  # only a row fan-out has it: every other IR stays as it was
            del fan["rows_per_item"]
        out["fanout"] = fan
    return out


def _step_from_json(data: dict) -> Step:
    values: dict[str, Any] = dict(data)
    for name in _TUPLE_FIELDS:
        values[name] = tuple(values.get(name, ()))
    if values.get("fanout") is not None:
        fan = dict(values["fanout"])
        if fan.get("partitions") is not None:
            fan["partitions"] = tuple(fan["partitions"])
        values["fanout"] = FanOut(**fan)
    return Step(**values)
