"""The step runtime: `dagsmith step IR_FILE STEP_ID [--item N] [--store URI]`.

Every backend's tasks and the local runner call `run_step`, so a step behaves the same
everywhere. A step reads its inputs from the store, does its work, and commits its outputs
(all at once); it returns a small result dict (metrics, gate outcome, validation results)
that is also saved as result.json beside the outputs.
"""

from __future__ import annotations

import json
import os
import sys
import time
from contextlib import contextmanager
from pathlib import Path

from ..ir import IR
from . import environment as E
from . import s3  # noqa: F401 - registers the s3:// artifact store (Store.open)
from .context import RunValues, StepContext, StepFailed, default_root, default_store_uri
from .store import Store

_KINDS = {
    "source": ("dagsmith.runtime.sources", "run"),
    "feature": ("dagsmith.runtime.features", "run"),
    "validate": ("dagsmith.runtime.validate", "run"),
    "plan": ("dagsmith.runtime.train", "run_plan"),
    "train": ("dagsmith.runtime.train", "run_train"),
    "select": ("dagsmith.runtime.train", "run_select"),
    "evaluate": ("dagsmith.runtime.evaluate", "run_evaluate"),
    "gate": ("dagsmith.runtime.evaluate", "run_gate"),
    "deploy": ("dagsmith.runtime.deploy", "run"),
    "custom": ("dagsmith.runtime.custom", "run"),
    "predict": ("dagsmith.runtime.predict", "run"),
}


# Packages a step may need that a compile-only install lacks, and the extra that brings them.
_EXTRAS = {
    "duckdb": "run", "pyarrow": "run", "pandas": "run", "sklearn": "run", "joblib": "run",
    "sqlalchemy": "run", "boto3": "aws", "great_expectations": "validation",
}


def load_ir(path: str | os.PathLike) -> IR:
    """The IR from a file, or from s3://bucket/key (pods read it from the artifact store)."""
    if str(path).startswith("s3://"):
        from .s3 import client, split_uri

        bucket, key = split_uri(str(path))
        # the IR is at `<store>/ir/...`: a store given with a trailing `/` (Argo's dagsmith-store
        # parameter at submit) joins to `p//ir/...`; a store has no empty segment (storeuri), so
        # the IR is where the store's one spelling puts it
        key = "/".join(part for part in key.split("/") if part)
        try:
            text = client().get_object(Bucket=bucket, Key=key)["Body"].read().decode("utf-8")
        except Exception as exc:  # noqa: BLE001 - any S3 failure means the same to the user
            raise StepFailed(f"cannot read IR {path}: {exc}") from None
        return IR.loads(text)
    try:
        text = Path(path).read_text(encoding="utf-8")
    except OSError as exc:
        raise StepFailed(f"cannot read IR file {path}: {exc.strerror}") from None
    try:
        return IR.loads(text)
    except (ValueError, KeyError, TypeError) as exc:
        raise StepFailed(f"{path} is not a dagsmith IR file ({type(exc).__name__}: {exc})") from None


def make_context(ir: IR, step_id: str, store: Store, item: int | None = None, environ=os.environ,
                 ir_path: str | os.PathLike | None = None) -> StepContext:
    """The context a step runs in; `ir_path` (where the IR was read from) is what user code gets
    as DAGSMITH_IR (a local copy when it is on S3 or unknown: runtime/custom.py)."""
    if not ir.has_step(step_id):
        from ..errors import did_you_mean

        hint = did_you_mean(step_id, [s.id for s in ir.steps])
        raise StepFailed(f"no step {step_id!r} in pipeline {ir.name!r}" + (f"; {hint}" if hint else ""))
    step = ir.step(step_id)
    if item is not None and step.fanout is None:
        raise StepFailed(f"step {step_id!r} is not a fan-out: it takes no --item")
    return StepContext(ir=ir, step=step, store=store, values=RunValues.from_env(ir, environ), root=default_root(ir, environ),
                       item=item, ir_path=str(ir_path) if ir_path is not None else None)


def run_step(ctx: StepContext) -> dict:
    """Run one step (or one item of a fan-out) and return its result."""
    import importlib

    code = os.environ.get(E.CODE)
    if code:  # the shipped user code, first on sys.path before anything imports user code
        from .codepack import activate

        activate(code)
    module_name, function_name = _KINDS[ctx.step.kind]
    function = getattr(importlib.import_module(module_name), function_name)
    started = time.time()
    try:
        with step_environment(ctx):
            result = function(ctx) or {}
    except ModuleNotFoundError as exc:
        extra = _EXTRAS.get((exc.name or "").split(".")[0])
        if extra is None:
            raise
        raise StepFailed(f"step {ctx.step.id!r} needs {exc.name}: pip install 'dagsmith[{extra}]'") from None
    result.setdefault("seconds", round(time.time() - started, 3))
    ctx.write_result(result)
    return result


@contextmanager
def step_environment(ctx: StepContext):
    """The step's `env` (StepContext.variables) in this process's environment while the step
    runs, whatever its kind: its code, the libraries it calls and the processes it starts see
    it; then the environment as it was (an Airflow worker runs many steps in one process)."""
    variables = ctx.variables()
    saved = {name: os.environ.get(name) for name in variables}
    os.environ.update(variables)
    try:
        yield
    finally:
        for name, value in saved.items():
            if value is None:
                os.environ.pop(name, None)
            else:
                os.environ[name] = value


def parse_items(text: str | None) -> list[int | None]:
    """--item takes JSON: an index (17), {"index": 17}, or a range {"start": 0, "stop": 20}
    (what orchestrators map over when a fan-out has more items than they can map)."""
    if text is None:
        return [None]
    try:
        value = json.loads(text)
    except json.JSONDecodeError:
        raise StepFailed(f"--item takes JSON (17, {{\"index\": 17}} or {{\"start\": 0, \"stop\": 20}}), got {text!r}") from None
    if isinstance(value, dict) and set(value) == {"start", "stop"}:
        start, stop = value["start"], value["stop"]
        if all(isinstance(v, int) and not isinstance(v, bool) and v >= 0 for v in (start, stop)) and start < stop:
            return list(range(start, stop))
        raise StepFailed(f"--item range needs 0 <= start < stop, got {text!r}")
    if isinstance(value, dict):
        value = value.get("index")
    if not isinstance(value, int) or isinstance(value, bool) or value < 0:
        raise StepFailed(f"--item must be a non-negative item index or a range, got {text!r}")
    return [value]
