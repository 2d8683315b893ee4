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
from pathlib import Path

from ..ir import IR
from .context import RunValues, StepContext, StepFailed, default_root
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
}


# Packages a step may need that a compile-only install lacks, and the extra that brings them.
_EXTRAS = {
    "duckdb": "run", "pyarrow": "run", "pandas": "run", "sklearn": "run", "joblib": "run",
    "sqlalchemy": "run", "boto3": "aws", "great_expectations": "validation",
}


def load_ir(path: str | os.PathLike) -> IR:
    try:
        text = Path(path).read_text(encoding="utf-8")
    except OSError as exc:
        raise StepFailed(f"cannot read IR file {path}: {exc.strerror}") from None
    try:
        return IR.loads(text)
    except (ValueError, KeyError, TypeError) as exc:
        raise StepFailed(f"{path} is not a dagsmith IR file ({type(exc).__name__}: {exc})") from None


def make_context(ir: IR, step_id: str, store: Store, item: int | None = None, environ=os.environ) -> StepContext:
    if not ir.has_step(step_id):
        from ..errors import did_you_mean

        hint = did_you_mean(step_id, [s.id for s in ir.steps])
        raise StepFailed(f"no step {step_id!r} in pipeline {ir.name!r}" + (f"; {hint}" if hint else ""))
    step = ir.step(step_id)
    if item is not None and step.fanout is None:
        raise StepFailed(f"step {step_id!r} is not a fan-out: it takes no --item")
    return StepContext(ir=ir, step=step, store=store, values=RunValues.from_env(ir, environ), root=default_root(ir, environ), item=item)


def run_step(ctx: StepContext) -> dict:
    """Run one step (or one item of a fan-out) and return its result."""
    import importlib

    module_name, function_name = _KINDS[ctx.step.kind]
    function = getattr(importlib.import_module(module_name), function_name)
    started = time.time()
    try:
        result = function(ctx) or {}
    except ModuleNotFoundError as exc:
        extra = _EXTRAS.get((exc.name or "").split(".")[0])
        if extra is None:
            raise
        raise StepFailed(f"step {ctx.step.id!r} needs {exc.name}: pip install 'dagsmith[{extra}]'") from None
    result.setdefault("seconds", round(time.time() - started, 3))
    ctx.write_result(result)
    return result


def parse_item(text: str | None) -> int | None:
    """--item takes JSON: an index (17) or {"index": 17}."""
    if text is None:
        return None
    try:
        value = json.loads(text)
    except json.JSONDecodeError:
        raise StepFailed(f"--item takes JSON (an index like 17 or {{\"index\": 17}}), got {text!r}") from None
    if isinstance(value, dict):
        value = value.get("index")
    if not isinstance(value, int) or isinstance(value, bool) or value < 0:
        raise StepFailed(f"--item must be a non-negative item index, got {text!r}")
    return value


def main_step(ir_file: str, step_id: str, item: str | None, store_uri: str | None) -> int:
    ir = load_ir(ir_file)
    store = Store.open(store_uri or os.environ.get("DAGSMITH_STORE") or ".dagsmith")
    ctx = make_context(ir, step_id, store, parse_item(item))
    result = run_step(ctx)
    print(json.dumps(result, sort_keys=True, default=str), file=sys.stdout)
    return 0
