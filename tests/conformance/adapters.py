"""The adapter interface of the conformance suite: one adapter per backend, nothing else.

A backend joins the suite with ONE new module `tests/conformance/backend_<name>.py` that defines
`ADAPTER = <an Adapter subclass instance>` (found by `discover()`; no other file changes):

    name                      the backend in test ids: test_conformance[<scenario>-<name>]
    slow                      mark its tests @pytest.mark.slow (True unless a run takes < ~5 s)
    unavailable() -> str|None why it cannot run here (its tests are skipped), else None
    start(workspace)          once per session before its first run (e.g. a metadata database);
    stop()                    at the end of the session (undo what start() did to the process)
    map_limit_options(n)      {option: value} for the spec's `backends.<name>` that make it run a
                              fan-out as at most n task instances; None when it has no such limit
    prepare(spec, env=, workdir=) -> handle
                              compile/deploy SPEC once (`--env ENV`), in WORKDIR; raise on failure
    run(handle, params=, run_date=, workdir=) -> Outcome
                              execute it once: these run-time parameter values (the backend's
                              own run-time mechanism, not a recompile, when it has one), logical
                              date RUN_DATE (YYYY-MM-DD; None: the backend's default), a fresh
                              artifact store in WORKDIR, the spec's folder as the steps' root
                              (relative paths, custom steps' cwd), retries off

Outcome is the normalized result. Step states, per IR step id: succeeded | skipped (a gate did
not pass) | failed | not_run (never started because something upstream failed: Airflow's
upstream_failed, the local runner's "skipped: upstream failed") | never_started (the orchestrator
stopped scheduling after a failure and never considered the step, e.g. Argo's fail-fast: it is
reported as such, so the comparison shows it instead of calling it not_run); a fan-out step is
succeeded when all its task instances are. Task ids the backend adds (ids starting `dagsmith-`) are not steps.
`StoreView` reads what every backend leaves in the dagsmith artifact store (results, fan-out
items, the model registry), so an adapter only has to map its orchestrator's own states.
"""

from __future__ import annotations

import importlib
import json
import pkgutil
import re
from dataclasses import dataclass, field
from pathlib import Path

STATES = ("succeeded", "skipped", "failed", "not_run", "never_started")


@dataclass
class Outcome:
    backend: str
    status: str  # succeeded | gated | failed
    steps: dict  # IR step id -> one of STATES
    metrics: dict  # evaluate's metrics ({} when it did not run)
    gates: list  # the gate step's checks ([] when no gate ran)
    validation: dict  # validate step id -> its result (expectations, success)
    rows: dict  # step id -> rows of the table it wrote (sources, features)
    items: dict  # fan-out step id -> items completed
    deployed: dict | None  # model name -> model_fingerprint this run registered (None: nothing)
    tables: dict  # "<step id>/<file>" -> rows of each table a predict or custom step wrote
    run_id: str
    run_date: str  # YYYY-MM-DD, as the backend itself reports the run's logical date
    root: Path  # the folder the steps ran in (custom steps' cwd): what they wrote is there
    instances: dict | None = None  # step id -> orchestrator task instances, when it has them
    native: dict = field(default_factory=dict)  # raw backend states, for failure messages

    @property
    def gate(self) -> str | None:
        """The gate outcome: None (no gate ran), passed, failed, or partial (some partitions)."""
        if not self.gates:
            return None
        passed = [bool(check.get("passed")) for check in self.gates]
        return "passed" if all(passed) else "failed" if not any(passed) else "partial"

    COMPARED = ("status", "steps", "metrics", "gate", "gates", "validation", "rows", "items", "deployed", "tables")

    def compared(self) -> dict:
        """What must be equal on every backend, field by field."""
        return {name: getattr(self, name) for name in self.COMPARED}


class Adapter:
    name = ""
    slow = True

    def unavailable(self) -> str | None:
        return None

    def start(self, workspace: Path) -> None:
        pass

    def stop(self) -> None:
        pass

    def map_limit_options(self, limit: int) -> dict | None:
        return None

    def prepare(self, spec: Path, *, env: str | None, workdir: Path):
        raise NotImplementedError

    def run(self, handle, *, params: dict, run_date: str | None, workdir: Path) -> Outcome:
        raise NotImplementedError


def discover() -> list[Adapter]:
    """Every backend_*.py of this package's ADAPTER, the local runner (the reference) first."""
    package = importlib.import_module(__package__)
    found = []
    for module in sorted(m.name for m in pkgutil.iter_modules(package.__path__) if m.name.startswith("backend_")):
        adapter = importlib.import_module(f"{__package__}.{module}").ADAPTER
        assert isinstance(adapter, Adapter) and adapter.name, f"{module}.ADAPTER must be a named Adapter"
        found.append(adapter)
    return sorted(found, key=lambda a: (a.name != "local", a.name))


# --- shared reading --------------------------------------------------------------------------


def combine(states: list[str]) -> str:
    """One step's state from its task instances' normalized states (a fan-out has many)."""
    if not states:
        return "not_run"
    for state in ("failed", "not_run"):
        if state in states:
            return state
    if len(set(states)) == 1:
        return states[0]
    return "mixed:" + ",".join(sorted(set(states)))  # equal to nothing a reference run reports


def read_ir(path: Path) -> dict:
    return json.loads(Path(path).read_text(encoding="utf-8"))


class StoreView:
    """One run's data in a dagsmith artifact store (a folder or s3://), read through the Store
    API: the layout (runs/<id>/steps|items, registry/) is the same whichever backend wrote it."""

    def __init__(self, store_uri: str, run_id: str, ir: dict):
        from dagsmith.runtime.store import Store

        self.store = Store.open(store_uri)
        self.run_id = run_id
        self.steps = ir["steps"]

    def ids(self, *kinds: str) -> list[str]:
        return [s["id"] for s in self.steps if s["kind"] in kinds]

    def result(self, step_id: str) -> dict | None:
        return self.store.read_json(f"{self.store.step_key(self.run_id, step_id)}/result.json")

    def metrics(self) -> dict:
        out = {}
        for sid in self.ids("evaluate"):
            out.update((self.result(sid) or {}).get("metrics") or {})
        return out

    def gates(self) -> list:
        return [check for sid in self.ids("gate") for check in (self.result(sid) or {}).get("gates") or []]

    def gate_passed(self) -> bool:
        return all((self.result(sid) or {}).get("passed", True) for sid in self.ids("gate"))

    def validation(self) -> dict:
        out = {}
        for sid in self.ids("validate"):
            result = self.result(sid)
            if result and "validation" in result:
                out[sid] = result["validation"]
        return out

    def rows(self) -> dict:
        out = {}
        for s in self.steps:
            result = self.result(s["id"])
            if result and isinstance(result.get("rows"), int):
                out[s["id"]] = result["rows"]
        return out

    def items(self) -> dict:
        out = {}
        for s in self.steps:
            if s.get("fanout"):
                prefix = f"runs/{self.run_id}/items/{s['id']}/"
                out[s["id"]] = sum(1 for key in self.store.list(prefix) if key.count("/") == prefix.count("/") + 1 and key.endswith("/manifest.json"))
        return out

    def tables(self) -> dict:
        """{"<step id>/<file>": rows} of every table a predict step or a custom step committed
        (batch scores, user code's declared outputs): values as JSON gives them, so rows compare
        exactly across backends."""
        import pyarrow.parquet as pq

        from dagsmith.runtime.dataset import parts_of

        out = {}
        for s in self.steps:
            if s["kind"] not in ("predict", "custom"):
                continue
            if (s.get("fanout") or {}).get("method") == "rows":  # a predict over row ranges: its items' parts in order
                manifests = self.item_manifests(s["id"])
            else:
                manifests = [self.store.manifest(self.store.step_key(self.run_id, s["id"])) or {"files": {}}]
            # a table is one file or a folder of parts (runtime/dataset.py), read in order as one
            tables = sorted({name if not re.fullmatch(r".*/part-[0-9]+\.parquet", name) else name.rsplit("/", 1)[0] + ".parquet"
                             for manifest in manifests for name in manifest["files"] if name.endswith(".parquet")})
            for table in tables:
                rows = [row for manifest in manifests for name in parts_of(manifest, table)
                        for row in pq.read_table(self.store.file(manifest, name)).to_pylist()]
                out[f"{s['id']}/{table}"] = json.loads(json.dumps(rows, default=str))
        return out

    def item_manifests(self, step_id: str) -> list[dict]:
        """The manifests of a fan-out's items 0, 1, ... as far as they go."""
        out = []
        while (manifest := self.store.manifest(self.store.step_key(self.run_id, step_id, len(out)))) is not None:
            out.append(manifest)
        return out

    def deployed(self) -> dict | None:
        """{model: model_fingerprint} of the registry versions whose lineage names this run."""
        out = {}
        for key in self.store.list("registry/"):
            parts = key.split("/")
            if len(parts) == 4 and parts[2].isdigit() and parts[3] == "manifest.json":
                manifest = self.store.read_json(key)
                lineage = json.loads(self.store.file(manifest, "lineage.json").read_text(encoding="utf-8"))
                if lineage.get("run_id") == self.run_id:
                    out[parts[1]] = lineage.get("model_fingerprint")
        return out or None
