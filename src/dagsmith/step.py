"""The public API for user code in a custom step (docs/user-code.md), the same on every backend.

    from dagsmith import step

    def main():                                   # steps.score.run: {python: "scoring:main"}
        rows = step.read_table("customer_activity")           # a declared input, pandas
        model = step.load_model("production")                  # a declared {model: production}
        rows["score"] = model.predict(rows)
        step.write_table("scores", rows)                       # a declared output
        print(step.run_id, step.run_date, step.params["lookback_days"])

Inside a `python:` step it talks to the running step; inside a `command:` step's process
(`[python, score.py]`) it finds the step from the environment dagsmith sets (DAGSMITH_IR,
DAGSMITH_STEP, DAGSMITH_STORE, ...). Reading or writing anything the step does not declare in
its `inputs`/`outputs` raises an error naming it and what the step declares.

`run_id`, `run_date`, `step_id`, `store_uri` and `params` are module attributes, read when used.
"""

from __future__ import annotations

__all__ = ["read_table", "write_table", "load_model", "params", "run_id", "run_date", "step_id", "store_uri"]


def _step():
    from .runtime.userstep import current

    return current()


def read_table(name: str):
    """Table `name` of this run (a source, feature or step output the step lists in `inputs`),
    as a pandas DataFrame."""
    return _step().read_table(name)


def write_table(name: str, frame) -> None:
    """Write output table `name` (one of the step's `outputs`): a pandas DataFrame or a pyarrow
    Table. It is committed with the step when the step ends; later features, validations,
    training and steps read it by name."""
    _step().write_table(name, frame)


def load_model(ref="trained"):
    """A model the step lists in `inputs`: "trained" ({model: trained}: this run's model), or the
    registry's deployment.model_name by alias ("production", "canary") or version number. It has
    `predict(rows)` and `predict_proba(rows)` on raw rows (dagsmith.load_model's object)."""
    current = _step()
    artifact = current.model_input(ref)  # refuses what the step does not declare
    if artifact.startswith("model:"):
        from .model import load_trained

        return load_trained(current.ctx)
    from .model import load_model as registry_model

    return registry_model(current.ctx.store.uri, current.model_name(), ref)


def __getattr__(name: str):
    # The run's values, read from the running step when asked (a module attribute cannot be a
    # property, and the step is only known while it runs).
    if name == "params":
        return dict(_step().ctx.values.params)
    if name == "run_id":
        return _step().ctx.values.run_id
    if name == "run_date":
        return _step().ctx.values.run_date
    if name == "step_id":
        return _step().ctx.step.id
    if name == "store_uri":
        return _step().ctx.store.uri
    raise AttributeError(f"module 'dagsmith.step' has no attribute {name!r}")
