"""The step user code runs in (`dagsmith.step`): its declared tables, read and written.

A custom step's function runs in the step's own process with the step current
(`current_step`); a command step's process (`[python, script.py]`) finds its step from the
environment contract (runtime/environment.py: DAGSMITH_IR, DAGSMITH_STEP, DAGSMITH_STORE, the
run's values, DAGSMITH_OUTPUTS). Either way user code reads only the tables its spec `inputs`
name and writes only its `outputs`: anything else is an error naming it and what is declared.
"""

from __future__ import annotations

import os
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path

from . import environment as E
from .context import StepContext, StepFailed


class UndeclaredError(StepFailed):
    """User code read or wrote something its step does not declare."""


@dataclass
class UserStep:
    ctx: StepContext
    outputs_dir: Path | None  # where write_table puts tables/<name>.parquet (committed after the step)

    # --- what the step declares ----------------------------------------------------------

    def declared_inputs(self) -> list[str]:
        """The spec's words for the step's inputs: table names, `model: trained`, `model: production`."""
        out = []
        for artifact in self.ctx.step.inputs:
            kind, _, name = artifact.partition(":")
            out.append(name if kind == "table" else f"model: {'trained' if kind == 'model' else name}")
        return out

    def declared_outputs(self) -> list[str]:
        return [artifact.partition(":")[2] for artifact in self.ctx.step.outputs if artifact.startswith("table:")]

    def _refuse(self, what: str, where: str, declared: list[str]) -> UndeclaredError:
        step = self.ctx.step.id
        return UndeclaredError(f"step {step!r} {what}, which it does not declare: add it to steps.{step}.{where} "
                               f"(declared {where}: {', '.join(declared) or 'none'})")

    # --- tables ---------------------------------------------------------------------------

    def read_table(self, name: str):
        """Table `name` of this run as a pandas DataFrame (a declared input)."""
        if not isinstance(name, str) or f"table:{name}" not in self.ctx.step.inputs:
            raise self._refuse(f"reads table {name!r}", "inputs", self.declared_inputs())
        from .data import table_to_pandas

        return table_to_pandas(self.ctx.read_table(name))

    def write_table(self, name: str, frame) -> None:
        """Write output table `name` (a pandas DataFrame or a pyarrow Table); the step's runner
        commits it with the step, as `tables/<name>.parquet`."""
        if not isinstance(name, str) or f"table:{name}" not in self.ctx.step.outputs:
            raise self._refuse(f"writes table {name!r}", "outputs", self.declared_outputs())
        if self.outputs_dir is None:
            raise StepFailed(f"step {self.ctx.step.id!r}: no output folder ({E.OUTPUTS} is not set): "
                             "tables are written while the step runs under dagsmith")
        import pyarrow as pa
        import pyarrow.parquet as pq

        if not isinstance(frame, pa.Table):
            try:
                import pandas as pd
            except ImportError:  # pragma: no cover - pandas comes with the run extra
                pd = None
            if pd is None or not isinstance(frame, pd.DataFrame):
                raise StepFailed(f"write_table({name!r}, ...) takes a pandas DataFrame or a pyarrow Table, "
                                 f"not {type(frame).__name__}")
            frame = pa.Table.from_pandas(frame, preserve_index=False)
        path = self.outputs_dir / output_file(name)
        path.parent.mkdir(parents=True, exist_ok=True)
        pq.write_table(frame, path)

    # --- models ---------------------------------------------------------------------------

    def model_input(self, ref) -> str:
        """The declared artifact for a model reference: "trained" -> `model:<train|select>`, an
        alias or version -> `registry:<ref>`; an undeclared one is refused."""
        if ref == "trained":
            found = [a for a in self.ctx.step.inputs if a.startswith("model:")]
        elif ref in ("production", "canary") or (isinstance(ref, int) and not isinstance(ref, bool)):
            found = [a for a in self.ctx.step.inputs if a == f"registry:{ref}"]
        else:
            raise StepFailed(f"load_model({ref!r}): a model is 'trained', 'production', 'canary' or a registry version number")
        if not found:
            raise self._refuse(f"loads model {ref!r}", "inputs", self.declared_inputs())
        return found[0]

    def model_name(self) -> str:
        """The registry's model name (deployment.model_name: the deploy step's)."""
        for step in self.ctx.ir.steps:
            if step.kind == "deploy":
                return step.config["model_name"]
        raise StepFailed("the pipeline has no deployment: no registry model to load")  # the spec check refuses this


def output_file(name: str) -> str:
    """A custom step's output table in its manifest (context.table_file_name reads it there)."""
    return f"tables/{name}.parquet"


_current: UserStep | None = None  # the step whose function runs in this process right now
_from_environment: dict = {}  # the step a command's process found in its environment


@contextmanager
def current_step(step: UserStep):
    """`step` is the one dagsmith.step talks to while a custom step's function runs."""
    global _current
    saved, _current = _current, step
    try:
        yield step
    finally:
        _current = saved


def current() -> UserStep:
    """The running step: the one set by `current_step`, else the one the environment describes
    (a command step's own process), built once per process."""
    if _current is not None:
        return _current
    environ = os.environ
    needed = (E.IR, E.STEP)
    missing = [name for name in needed if not environ.get(name)]
    if missing:
        raise StepFailed("dagsmith.step works inside a pipeline's custom step (dagsmith run, or a step an "
                         f"orchestrator runs): {', '.join(missing)} not set")
    key = tuple(environ.get(name) for name in (E.IR, E.STEP, E.STORE, E.RUN_ID, E.OUTPUTS))
    if key not in _from_environment:
        from . import load_ir, make_context
        from .context import default_store_uri
        from .store import Store

        ir = load_ir(environ[E.IR])
        ctx = make_context(ir, environ[E.STEP], Store.open(default_store_uri(environ)), None, environ, ir_path=environ[E.IR])
        outputs = environ.get(E.OUTPUTS)
        _from_environment.clear()
        _from_environment[key] = UserStep(ctx, Path(outputs) if outputs else None)
    return _from_environment[key]
