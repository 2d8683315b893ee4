"""Validation steps: Great Expectations 1.x (an ephemeral context) on one table.

Each expectation's outcome is saved (validation.json). `on_failure: fail` fails the step after
saving, so the run stops downstream and still says which expectations failed and how often;
`warn` records and goes on.

One context per process: the first validation a process runs makes an ephemeral context, and the
next ones reuse it (a worker of the local runner runs many). Each validation adds its own pandas
data source, batch and suite, and deletes the data source when done: the context never keeps a
step's table alive after the step. `engine_info` says how often this process made a context and
used it (the step result's "gx").
"""

from __future__ import annotations

import os
import sys

from .context import StepContext, StepFailed

_engine: dict | None = None  # {"gx", "context"}: this process's context, made on first use
_stats = {"contexts": 0, "validations": 0}  # contexts made and validations run by this process


def _gx():
    os.environ.setdefault("GX_ANALYTICS_ENABLED", "false")
    try:
        import great_expectations as gx
    except ImportError:
        raise StepFailed("validation needs Great Expectations: pip install 'dagsmith[validation]'") from None
    return gx


def _context():
    """Great Expectations and this process's ephemeral context, made on first use."""
    global _engine
    if _engine is not None:
        return _engine["gx"], _engine["context"]
    gx = _gx()
    context = gx.get_context(mode="ephemeral")
    try:
        context.variables.progress_bars = {"globally": False}
    except Exception:  # noqa: BLE001 - progress bars are cosmetic; older configs lack the field
        pass
    _engine = {"gx": gx, "context": context}
    _stats["contexts"] += 1
    return gx, context


def engine_info() -> dict:
    """This process's Great Expectations use: its pid, how many contexts it made (1 once it has
    validated anything) and how many validations it ran."""
    return {"pid": os.getpid(), **_stats}


def check_table(frame, expectations: list[dict]) -> list[dict]:
    """Run expectations on a pandas DataFrame; one record per expectation."""
    global _engine
    gx, context = _context()
    from great_expectations.expectations.registry import get_expectation_impl

    source = None
    try:
        source = context.data_sources.add_pandas("dagsmith")
        batch = source.add_dataframe_asset("table").add_batch_definition_whole_dataframe("all").get_batch(
            batch_parameters={"dataframe": frame})
        suite = gx.ExpectationSuite(name="dagsmith")
        for expectation in expectations:
            suite.add_expectation(get_expectation_impl(expectation["type"])(**expectation["kwargs"]))
        outcome = batch.validate(suite)
    except BaseException:
        _engine = None  # whatever state the context was left in, the next validation starts afresh
        raise
    finally:
        if source is not None and _engine is not None:
            try:
                context.data_sources.delete("dagsmith")  # with it, the engine that holds the frame
            except Exception:  # noqa: BLE001 - the outcome stands; the next validation gets a new context
                _engine = None
    _stats["validations"] += 1
    records = []
    for expectation, result in zip(expectations, outcome.results):
        raised = bool(result.exception_info and result.exception_info.get("raised_exception"))
        details = result.result or {}
        record = {
            "type": expectation["type"],
            "kwargs": expectation["kwargs"],
            "success": bool(result.success) and not raised,
            "unexpected_count": details.get("unexpected_count"),
            "element_count": details.get("element_count"),
            "observed_value": _plain(details.get("observed_value")),
        }
        if details.get("partial_unexpected_list"):  # the failing values GX reports (at most 20)
            record["partial_unexpected_list"] = [_short(v) for v in _plain(details["partial_unexpected_list"])[:20]]
        if raised:
            record["error"] = str(result.exception_info.get("exception_message"))
        records.append(record)
    return records


def _short(value, limit: int = 200):
    """A reported value kept small: run records and reports show it, whatever the data holds."""
    return value[:limit] + "..." if isinstance(value, str) and len(value) > limit else value


def _plain(value):
    """GX returns numpy scalars; the record is JSON."""
    if hasattr(value, "item"):
        return value.item()
    if isinstance(value, (list, tuple)):
        return [_plain(v) for v in value]
    return value


def run(ctx: StepContext) -> dict:
    config = ctx.step.config
    preloaded = "great_expectations" in sys.modules  # imported before this step (the runner preloads it)
    frame = ctx.read_table(config["table"]).to_pandas()
    records = check_table(frame, config["expectations"])
    failed = [r for r in records if not r["success"]]
    summary = {
        "name": ctx.step.id,
        "table": config["table"],
        "on_failure": config["on_failure"],
        "success": not failed,
        "rows": len(frame),
        "expectations": records,
    }
    result = {"validation": summary, "gx": {**engine_info(), "preloaded": preloaded}}
    if failed and config["on_failure"] == "fail":
        ctx.write_result(result)
        described = "; ".join(
            f"{r['type']}({', '.join(f'{k}={v!r}' for k, v in r['kwargs'].items())}): "
            + (r["error"] if "error" in r else f"{r['unexpected_count']} unexpected of {r['element_count']}" if r["unexpected_count"] is not None else f"observed {r['observed_value']!r}")
            for r in failed
        )
        raise StepFailed(f"validation {ctx.step.id!r} failed on table {config['table']!r}: {described}")
    staging = ctx.stage()
    staging.write_json("validation.json", summary)
    ctx.store.commit(staging)
    return result
