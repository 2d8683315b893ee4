"""The Pipeline helper the runtime tests share: a compiled spec plus a LocalStore holding its
source tables, with shortcuts to run steps and read their outputs."""

from __future__ import annotations

import json
import textwrap

import joblib

from dagsmith.runtime import make_context, run_step
from dagsmith.runtime.store import LocalStore

RUN = "r1"


class Pipeline:
    """A compiled spec + a LocalStore holding its source tables for one or more runs."""

    def __init__(self, tmp_path, spec: str, tables: dict, run: str = RUN, store=None):
        from dagsmith.compiler import compile_spec
        from dagsmith.spec import load_spec

        self.root = tmp_path
        path = tmp_path / "pipeline.yaml"
        path.write_text(textwrap.dedent(spec), encoding="utf-8")
        self.ir = compile_spec(load_spec(path))
        self.store = store or LocalStore(tmp_path / "store")
        self.tables = tables
        self.env: dict = {}  # more run environment for every step (DAGSMITH_PARAMS...)
        self.commit_tables(run)

    def commit_tables(self, run: str, tables: dict | None = None) -> None:
        import pyarrow as pa
        import pyarrow.parquet as pq

        for step_id, frame in (tables or self.tables).items():
            staging = self.store.stage(self.store.step_key(run, step_id))
            pq.write_table(pa.Table.from_pandas(frame, preserve_index=False), staging.path("table.parquet"))
            self.store.commit(staging)

    def ctx(self, step_id: str, item: int | None = None, run: str = RUN):
        env = {"DAGSMITH_RUN_ID": run, "DAGSMITH_RUN_DATE": "2024-06-03", "DAGSMITH_ROOT": str(self.root), **self.env}
        return make_context(self.ir, step_id, self.store, item, environ=env)

    def run(self, step_id: str, item: int | None = None, run: str = RUN) -> dict:
        return run_step(self.ctx(step_id, item, run))

    def read(self, step_id: str, name: str, item: int | None = None, run: str = RUN):
        ctx = self.ctx(step_id, run=run)
        path = ctx.input_file(step_id, name, item)
        return json.loads(path.read_text()) if name.endswith(".json") else joblib.load(path)

    def run_through(self, last: str, run: str = RUN, tables: dict | None = None) -> dict:
        """Run every model step (train ... last) of a run in order; returns the results."""
        if run != RUN or tables:
            self.commit_tables(run, tables)
        results = {}
        for step in self.ir.steps:
            if step.kind in ("source", "feature", "validate", "custom"):
                continue
            results[step.id] = self.run(step.id, run=run)
            if step.id == last:
                break
        return results
