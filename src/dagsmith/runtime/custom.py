"""Custom steps: `python: module:function` (called with no arguments) or `command: [argv...]`
run WITHOUT a shell, so `$(...)`, backticks, `;` and globs in arguments are plain text.

Each argv item and env value has its references filled in (${run.id}, ${params.X}) and `$${`
written as `${`: `[bash, -c, "echo $${HOME}"]` runs `echo ${HOME}`, for the shell to expand.

User code reads its declared inputs and writes its declared outputs through `dagsmith.step`
(runtime/userstep.py): the function with this step current, a command's process from the
environment contract this module sets (runtime/environment.py). The tables it writes go to a
staging folder and are committed with the step's manifest (`tables/<name>.parquet`); a declared
output that was not written fails the step, naming it.
"""

from __future__ import annotations

import os
import shutil
import subprocess
import tempfile
from pathlib import Path

from . import environment as E
from .context import StepContext, StepFailed
from .userscode import import_function
from .userstep import UserStep, current_step, output_file


def step_environment(ctx: StepContext, outputs: Path | None = None, ir_file: str | None = None) -> dict:
    """The step's env: plain variables from the spec, the run's values and where the run is
    (the store, the IR, the spec's folder); secrets stay as they are in the environment (names
    only ever appear in the spec). The same whoever started the step (the local runner, an
    Airflow task's process, a pod's `dagsmith step`), so user code reads one contract."""
    env = dict(os.environ)
    env.update(ctx.variables())  # already set by run_step; also when this is called on its own
    # The run's values as the run environment states them, whoever started this process (an
    # Airflow task's process has no DAGSMITH_PARAMS of its own), plus the step's id.
    env.update(E.run_environment(ctx.values.run_id, ctx.values.run_date, ctx.values.params,
                                 store=ctx.store.uri, root=str(Path(ctx.root).resolve())))
    env[E.STEP] = ctx.step.id
    if ir_file:
        env[E.IR] = ir_file
    if outputs is not None:
        env[E.OUTPUTS] = str(outputs)
    missing = [name for name in ctx.step.secrets if name not in env]
    if missing:
        raise StepFailed(f"step {ctx.step.id!r} needs secrets that are not set: {', '.join(missing)}")
    return env


def _local_ir(ctx: StepContext, scratch: Path) -> str:
    """A local path of the run's IR for user code: the file it was read from, or (read from S3,
    or not from a file) a copy in `scratch`, which goes away with the step."""
    given = ctx.ir_path
    if given and "://" not in given and Path(given).is_file():
        return str(Path(given).resolve())
    from ..ir import ir_filename

    path = scratch / ir_filename(ctx.ir.name)
    path.write_text(ctx.ir.dumps(), encoding="utf-8")
    return str(path)


def run(ctx: StepContext) -> dict:
    config = ctx.step.config
    staging = ctx.stage()
    scratch = Path(tempfile.mkdtemp(prefix="dagsmith-step-"))
    try:
        env = step_environment(ctx, staging.dir, _local_ir(ctx, scratch))
        result = _python(ctx, config, env, staging.dir) if "python" in config else _command(ctx, config, env)
        rows = _check_outputs(ctx, staging.dir)
        ctx.store.commit(staging, {"tables": rows} if rows else None)  # the mark, visible to any orchestrator, that the step finished
    except BaseException:
        staging.discard()
        raise
    finally:
        shutil.rmtree(scratch, ignore_errors=True)
    if rows:
        result["tables"] = rows  # each output table's row count
    return result


def _python(ctx: StepContext, config: dict, env: dict, outputs: Path) -> dict:
    saved = dict(os.environ)
    os.environ.update(env)
    try:
        with current_step(UserStep(ctx, outputs)):  # also for what the module does when imported
            function = import_function(config["python"], ctx.root)
            value = function()
    finally:
        os.environ.clear()
        os.environ.update(saved)
    return {"returned": value if isinstance(value, (str, int, float, bool, type(None))) else repr(value)}


def _command(ctx: StepContext, config: dict, env: dict) -> dict:
    argv = [ctx.values.resolve(arg) for arg in config["command"]]
    try:
        completed = subprocess.run(argv, cwd=ctx.root, env=env, shell=False, timeout=ctx.step.timeout)
    except FileNotFoundError:
        raise StepFailed(f"step {ctx.step.id!r}: command not found: {argv[0]!r}") from None
    except subprocess.TimeoutExpired:
        raise StepFailed(f"step {ctx.step.id!r}: command timed out after {ctx.step.timeout}s") from None
    if completed.returncode != 0:
        raise StepFailed(f"step {ctx.step.id!r}: command exited with {completed.returncode}")
    return {"exit_code": 0}


def _check_outputs(ctx: StepContext, outputs: Path) -> dict:
    """Each declared output was written (its row count); nothing else was."""
    declared = [a.partition(":")[2] for a in ctx.step.outputs if a.startswith("table:")]
    missing = [name for name in declared if not (outputs / output_file(name)).is_file()]
    if missing:
        raise StepFailed(f"step {ctx.step.id!r} declares the output table(s) {', '.join(repr(m) for m in missing)} "
                         "but did not write them: call dagsmith.step.write_table(name, frame) for each")
    wanted = {output_file(name) for name in declared}
    extra = sorted(p.relative_to(outputs).as_posix() for p in outputs.rglob("*") if p.is_file()
                   and p.relative_to(outputs).as_posix() not in wanted)
    if extra:
        raise StepFailed(f"step {ctx.step.id!r} wrote {', '.join(extra[:5])} into its outputs folder ({E.OUTPUTS}): "
                         "only its declared output tables go there, through dagsmith.step.write_table")
    if not declared:
        return {}
    import pyarrow.parquet as pq

    return {name: pq.read_metadata(outputs / output_file(name)).num_rows for name in declared}
