"""The typed spec: what a validated pipeline.yaml means, as frozen dataclasses.

Built only from a document that passed the schema and the semantic checks, so nothing here
re-validates. Durations are already seconds; defaults are already applied.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any


@dataclass(frozen=True)
class Param:
    name: str
    type: str
    default: Any = None
    required: bool = False
    description: str | None = None
    enum: tuple | None = None


@dataclass(frozen=True)
class StepOptions:
    """What `defaults:` sets and every step may override."""

    image: str | None = None
    retries: int = 0
    retry_delay: int = 60  # seconds
    timeout: int | None = None  # seconds
    resources: dict = field(default_factory=dict)  # {"cpu": "1", "memory": "2Gi", "gpu": 1}
    secrets: tuple[str, ...] = ()
    env: dict = field(default_factory=dict)


@dataclass(frozen=True)
class Source:
    name: str
    type: str
    options: StepOptions
    uri: str | None = None
    format: str | None = None
    connection: str | None = None
    query: str | None = None
    description: str | None = None
    read: dict = field(default_factory=dict)  # the reader's options as written (delimiter, columns...)


# A file source's reader options (docs/spec.md, "How a CSV is read"): which apply to which format.
READ_OPTIONS = {
    "csv": ("delimiter", "header", "quote", "escape", "encoding", "null_values", "skip_rows", "columns", "on_bad_value"),
    "xlsx": ("sheet", "header", "null_values", "skip_rows", "columns", "on_bad_value"),
    "json": ("columns", "on_bad_value"),
    "jsonl": ("columns", "on_bad_value"),
    "parquet": (),
    "sql": (),
}
ALL_READ_OPTIONS = tuple(dict.fromkeys(o for options in READ_OPTIONS.values() for o in options))


@dataclass(frozen=True)
class Feature:
    name: str
    inputs: tuple[str, ...]
    options: StepOptions
    sql: str | None = None
    transform: str | None = None
    key: tuple[str, ...] = ()
    description: str | None = None


@dataclass(frozen=True)
class Expectation:
    type: str
    kwargs: dict


@dataclass(frozen=True)
class Validation:
    name: str
    on: str
    expectations: tuple[Expectation, ...]
    on_failure: str
    options: StepOptions
    description: str | None = None


@dataclass(frozen=True)
class Sweep:
    method: str
    parameters: dict  # name -> list of values, or (random) {"low", "high", "log", "type"}
    samples: int | None
    seed: int
    max_parallel: int | None
    select_metric: str | None
    select_goal: str | None


@dataclass(frozen=True)
class Distributed:
    framework: str
    workers: int
    gpus_per_worker: int


@dataclass(frozen=True)
class Training:
    inputs: tuple[str, ...]
    target: str
    split: dict
    estimator: str | None
    entrypoint: str | None
    model_params: dict
    options: StepOptions
    partition_by: str | None = None
    partitions: tuple | None = None
    sweep: Sweep | None = None
    distributed: Distributed | None = None


@dataclass(frozen=True)
class Gate:
    metric: str
    op: str
    value: float | str | None = None  # a number, or "${params.NAME}" (filled in when the gate runs)
    compare_to: str | None = None
    delta: float | str | None = None


@dataclass(frozen=True)
class MetricFunction:
    """A user metric: `function(y_true, y_pred or y_proba, **params)` (dagsmith/metricnames.py)."""

    name: str
    function: str
    needs: str = "prediction"
    params: dict = field(default_factory=dict)


@dataclass(frozen=True)
class Evaluation:
    metrics: tuple[str, ...]  # names; a user metric's definition is in `functions`
    gates: tuple[Gate, ...]
    options: StepOptions
    functions: tuple[MetricFunction, ...] = ()


@dataclass(frozen=True)
class Deployment:
    model_name: str
    target: str
    strategy: str
    canary_percent: float | None
    options: StepOptions
    # target settings, as written: {"sagemaker": {...}, "kserve": {...}, "mlflow": {...}} (those given)
    targets: dict | None = None


@dataclass(frozen=True)
class NewDataTrigger:
    source: str
    min_interval: int | None  # seconds
    queue: str | None


@dataclass(frozen=True)
class CustomStep:
    name: str
    after: tuple[str, ...]
    python: str | None
    command: tuple[str, ...] | None
    options: StepOptions
    description: str | None = None
    inputs: tuple[str, ...] = ()  # table names it reads (dagsmith.step.read_table)
    models: tuple = ()  # models it reads: "trained", "production", "canary" or a registry version (int)
    outputs: tuple[str, ...] = ()  # table names it writes (dagsmith.step.write_table)


@dataclass(frozen=True)
class Predict:
    """A batch-scoring step: score the table `input` with `model` into the table `name`."""

    name: str
    model: str | int  # "trained" | "production" | "canary" | a registry version
    input: str
    output_columns: tuple[str, ...]  # of ("prediction", "probability")
    batch_rows: int
    options: StepOptions
    description: str | None = None
    rows_per_task: int | None = None  # fan out over row ranges of the input (None: one task)


@dataclass(frozen=True)
class Spec:
    name: str
    description: str | None
    owner: str | None
    tags: tuple[str, ...]
    params: tuple[Param, ...]
    sources: tuple[Source, ...]
    features: tuple[Feature, ...]
    validations: tuple[Validation, ...]
    training: Training | None
    evaluation: Evaluation | None
    deployment: Deployment | None
    schedule: str | None
    on_new_data: tuple[NewDataTrigger, ...]
    steps: tuple[CustomStep, ...]
    backends: dict
    spec_dir: str  # the spec file's folder, relative paths in the spec are relative to it
    spec_hash: str  # sha256 of the merged, validated spec (lineage)
    predict: tuple[Predict, ...] = ()  # batch scoring (the spec's `predict:` section)
