"""What a step sees while it runs: its IR step, the store, the run's values, its inputs.

Everything comes from the IR, the store and the run environment (runtime/environment.py, the
one definition of it), so a step runs the same way whoever starts it: the runtime never knows
which orchestrator that is.
"""

from __future__ import annotations

import datetime as _dt
import json
import os
import re
from dataclasses import dataclass, field
from pathlib import Path

from ..errors import DagsmithError
from ..ir import IR, Step
from . import environment as E
from .store import Staging, Store

REFERENCE = re.compile(r"\$\{\s*([^}]*?)\s*\}")


class StepFailed(DagsmithError):
    """The step ran and failed (bad data, failed validation, user code error)."""

    exit_code = 1


@dataclass(frozen=True)
class RunValues:
    run_id: str
    run_date: str
    params: dict

    @classmethod
    def from_env(cls, ir: IR, environ=os.environ) -> "RunValues":
        try:
            given = json.loads(environ.get(E.PARAMS) or "{}")
        except ValueError:
            raise StepFailed(f"{E.PARAMS} is not JSON: {environ.get(E.PARAMS)[:80]!r}") from None
        if not isinstance(given, dict):
            raise StepFailed(f"{E.PARAMS} must be a JSON object of parameter values")
        unknown = sorted(set(given) - set(ir.params))
        if unknown:
            raise StepFailed(f"unknown parameters {unknown} (known: {sorted(ir.params)})")
        params = {}
        for name, param in ir.params.items():
            if name in given:
                params[name] = given[name]
            elif param["required"]:
                raise StepFailed(f"parameter {name!r} has no default: set it for the run")
            else:
                params[name] = param["default"]
        run_date = environ.get(E.RUN_DATE) or _dt.datetime.now(_dt.timezone.utc).date().isoformat()
        return cls(run_id=environ.get(E.RUN_ID) or E.DEFAULT_RUN_ID, run_date=run_date, params=params)

    def lookup(self, ref: str):
        if ref == "run.id":
            return self.run_id
        if ref == "run.date":
            return self.run_date
        if ref.startswith("params.") and ref[7:] in self.params:
            return self.params[ref[7:]]
        raise StepFailed(f"unknown reference ${{{ref}}}")

    def resolve(self, text: str) -> str:
        """Substitute ${...} as text: for paths, URIs and argv items (never SQL, never a shell)."""
        return REFERENCE.sub(lambda m: str(self.lookup(m.group(1))), text)

    def bind_sql(self, sql: str) -> tuple[str, dict]:
        """${params.x} -> $p_x, a bound DuckDB parameter: values are never pasted into SQL."""
        bound: dict = {}

        def placeholder(match: re.Match) -> str:
            ref = match.group(1)
            name = "p_" + re.sub(r"\W", "_", ref.replace("params.", "", 1)) if ref.startswith("params.") else ref.replace(".", "_")
            bound[name] = self.lookup(ref)
            return f"${name}"

        return REFERENCE.sub(placeholder, sql), bound


@dataclass
class StepContext:
    ir: IR
    step: Step
    store: Store
    values: RunValues
    root: Path
    item: int | None = None
    notes: list = field(default_factory=list)  # lines for the run summary

    @property
    def key(self) -> str:
        return self.store.step_key(self.values.run_id, self.step.id, self.item)

    def key_of(self, step_id: str, item: int | None = None) -> str:
        return self.store.step_key(self.values.run_id, step_id, item)

    def input_steps(self, kind: str | None = None) -> list[str]:
        """The steps whose outputs this step reads, as its IR inputs declare them ("<kind>:<step
        id>"), in their order; only those of one artifact kind when `kind` is given."""
        return [ref.partition(":")[2] for ref in self.step.inputs if kind is None or ref.partition(":")[0] == kind]

    def manifest_of(self, step_id: str, item: int | None = None, *, missing_ok: bool = False) -> dict | None:
        """Outputs of a step of this run (its manifest); with `missing_ok`, None when it has none.
        Every read of another step's outputs comes through here, and only declared inputs are
        readable, so the IR's inputs say exactly what each step reads, on every backend."""
        if step_id != self.step.id and step_id not in self.input_steps():
            declared = self.ir.step(step_id).outputs if self.ir.has_step(step_id) else ()
            artifact = ", ".join(declared) or f"the outputs of step {step_id!r}"
            raise StepFailed(f"step {self.step.id!r} reads {artifact}, which is not declared in its inputs "
                             f"(a dagsmith bug); its inputs: {', '.join(self.step.inputs) or 'none'}")
        key = self.key_of(step_id, item)
        return self.store.manifest(key) if missing_ok else self.store.require(key)

    def input_file(self, step_id: str, name: str, item: int | None = None) -> Path:
        return self.store.file(self.manifest_of(step_id, item), name)

    def read_table(self, step_id: str):
        """The table a source or feature step produced in this run (pyarrow.Table)."""
        import pyarrow.parquet as pq

        return pq.read_table(self.input_file(step_id, "table.parquet"))

    def read_json(self, step_id: str, name: str, item: int | None = None):
        return json.loads(self.input_file(step_id, name, item).read_text(encoding="utf-8"))

    def stage(self) -> Staging:
        return self.store.stage(self.key)

    def path(self, uri: str) -> str:
        """A spec path, resolved: ${...} substituted, relative paths under the spec's folder."""
        text = self.values.resolve(uri)
        if "://" in text or os.path.isabs(text):
            return text
        return str(self.root / text)

    def write_result(self, data: dict) -> None:
        """A small report next to the outputs (metrics, gate outcomes, validation results).
        Written even when the step fails, so the run summary can say why."""
        self.store.write_json(f"{self.key}/result.json", data)


def default_root(ir: IR, environ=os.environ) -> Path:
    """$DAGSMITH_ROOT, else the spec's folder as compiled (a run from the same working directory).
    A backend whose tasks run elsewhere sets DAGSMITH_ROOT (the Airflow DAG file: its folder)."""
    if environ.get(E.ROOT):
        return Path(environ[E.ROOT])
    return Path(ir.pipeline.get("spec_dir") or ".")


def default_store_uri(environ=os.environ) -> str:
    """$DAGSMITH_STORE, else .dagsmith in the working directory. A backend resolves its store at
    compile time (backends.<name>.store, its execution plan) and passes it as --store or
    DAGSMITH_STORE: the runtime never looks up an orchestrator's options."""
    return environ.get(E.STORE) or E.DEFAULT_STORE
