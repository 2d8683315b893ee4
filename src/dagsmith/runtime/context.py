"""What a step sees while it runs: its IR step, the store, the run's values, its inputs.

Everything comes from the IR, the store and the environment, so the same step runs the same
way under the local runner, Airflow, Argo or Step Functions:

    DAGSMITH_RUN_ID      the run (default "adhoc")
    DAGSMITH_RUN_DATE    the run's logical date, YYYY-MM-DD (default: today, UTC)
    DAGSMITH_PARAMS      JSON object of parameter values (over the IR's defaults)
    DAGSMITH_ROOT        folder that relative paths in the spec resolve against
                         (default: the IR's spec_dir, relative to the working directory)
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
        given = json.loads(environ.get("DAGSMITH_PARAMS") or "{}")
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
        run_date = environ.get("DAGSMITH_RUN_DATE") or _dt.datetime.now(_dt.timezone.utc).date().isoformat()
        return cls(run_id=environ.get("DAGSMITH_RUN_ID") or "adhoc", run_date=run_date, params=params)

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

    def manifest_of(self, step_id: str, item: int | None = None) -> dict:
        return self.store.require(self.key_of(step_id, item))

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


def default_root(ir: IR, environ=os.environ, ir_file: str | None = None) -> Path:
    """$DAGSMITH_ROOT; under an orchestrator ($DAGSMITH_BACKEND set) the IR file's folder;
    else the spec's folder as compiled (a local run from the same working directory)."""
    if environ.get("DAGSMITH_ROOT"):
        return Path(environ["DAGSMITH_ROOT"])
    if environ.get("DAGSMITH_BACKEND") and ir_file:
        return Path(ir_file).resolve().parent
    return Path(ir.pipeline.get("spec_dir") or ".")


# Where an orchestrator's runs keep artifacts when its spec options name no store.
_BACKEND_STORES = {
    "airflow": lambda environ: os.path.join(environ.get("AIRFLOW_HOME") or os.path.join(os.path.expanduser("~"), "airflow"), "dagsmith"),
}


def default_store_uri(ir: IR, environ=os.environ) -> str:
    """`backends.<$DAGSMITH_BACKEND>.store` from the spec, else $DAGSMITH_STORE, else the
    backend's own default, else .dagsmith in the working directory."""
    backend = environ.get("DAGSMITH_BACKEND")
    configured = ir.backends.get(backend, {}).get("store") if backend else None
    if configured:
        return configured
    if environ.get("DAGSMITH_STORE"):
        return environ["DAGSMITH_STORE"]
    if backend in _BACKEND_STORES:
        return _BACKEND_STORES[backend](environ)
    return ".dagsmith"
