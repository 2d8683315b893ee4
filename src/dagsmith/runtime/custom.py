"""Custom steps: `python: module:function` (called with no arguments) or `command: [argv...]`
run WITHOUT a shell, so `$(...)`, backticks, `;` and globs in arguments are plain text.

Each argv item and env value has its references filled in (${run.id}, ${params.X}) and `$${`
written as `${`: `[bash, -c, "echo $${HOME}"]` runs `echo ${HOME}`, for the shell to expand."""

from __future__ import annotations

import os
import subprocess

from . import environment as E
from .context import StepContext, StepFailed
from .userscode import import_function


def step_environment(ctx: StepContext) -> dict:
    """The step's env: plain variables from the spec, the run's values; secrets stay as they
    are in the environment (names only ever appear in the spec)."""
    env = dict(os.environ)
    env.update(ctx.variables())  # already set by run_step; also when this is called on its own
    # The run's values as the run environment states them, whoever started this process (an
    # Airflow task's process has no DAGSMITH_PARAMS of its own), plus the step's id.
    env.update(E.run_environment(ctx.values.run_id, ctx.values.run_date, ctx.values.params))
    env[E.STEP] = ctx.step.id
    missing = [name for name in ctx.step.secrets if name not in env]
    if missing:
        raise StepFailed(f"step {ctx.step.id!r} needs secrets that are not set: {', '.join(missing)}")
    return env


def run(ctx: StepContext) -> dict:
    config = ctx.step.config
    env = step_environment(ctx)
    if "python" in config:
        function = import_function(config["python"], ctx.root)
        saved = dict(os.environ)
        os.environ.update(env)
        try:
            value = function()
        finally:
            os.environ.clear()
            os.environ.update(saved)
        _done(ctx)
        return {"returned": value if isinstance(value, (str, int, float, bool, type(None))) else repr(value)}
    argv = [ctx.values.resolve(arg) for arg in config["command"]]
    try:
        completed = subprocess.run(argv, cwd=ctx.root, env=env, shell=False, timeout=ctx.step.timeout)
    except FileNotFoundError:
        raise StepFailed(f"step {ctx.step.id!r}: command not found: {argv[0]!r}") from None
    except subprocess.TimeoutExpired:
        raise StepFailed(f"step {ctx.step.id!r}: command timed out after {ctx.step.timeout}s") from None
    if completed.returncode != 0:
        raise StepFailed(f"step {ctx.step.id!r}: command exited with {completed.returncode}")
    _done(ctx)
    return {"exit_code": 0}


def _done(ctx: StepContext) -> None:
    """An empty manifest: the mark, visible to any orchestrator, that the step finished."""
    ctx.store.commit(ctx.stage())
