"""Everything the report shows, read from one run's folder: the run record, the IR that ran, the
steps' outputs (sweep trials, selection, gate decision, metrics, the train step's results:
warnings and model input counts), the fan-out items' times
(timeline.json) and the deployed version's lineage in the local registry.

Only reads; a file that is missing (a step that never ran, an older run) leaves its part empty.
"""

from __future__ import annotations

import json
from dataclasses import dataclass, field
from pathlib import Path

from ..ir import IR
from ..runner import list_runs, load_record, run_dir
from ..runtime import guards


@dataclass
class RunData:
    record: dict
    ir: IR | None
    trials: list = field(default_factory=list)  # [{index, partition, trial, params, metrics}] of the train fan-out
    selection: list = field(default_factory=list)  # the selected trials (one per partition)
    select: dict = field(default_factory=dict)  # {"metric", "goal"} of the sweep
    swept: list = field(default_factory=list)  # swept parameter names, in the IR's order
    decision: dict | None = None  # the gate step's decision.json (every check)
    metrics: dict = field(default_factory=dict)
    item_times: dict = field(default_factory=dict)  # step id -> [[item, started, ended, ok], ...]
    lineage: dict | None = None  # registry/<model>/<version>/lineage.json of what was deployed
    aliases: dict | None = None  # registry/<model>/aliases.json now
    warnings: list = field(default_factory=list)  # [(step id, line)]: the train step's guard rails (runtime/guards.py)
    model_inputs: list = field(default_factory=list)  # the distinct numbers of model input columns

    def state_of(self, step_id: str) -> str:
        """The step's state as the report shows it: the record's, except that a gate that did
        not pass is "gated"."""
        entry = (self.record.get("steps") or {}).get(step_id)
        state = entry.get("state") if isinstance(entry, dict) else None
        state = state if state in ("succeeded", "cached", "failed", "skipped", "running", "pending") else "pending"
        if state in ("succeeded", "cached") and self.ir is not None and self.ir.has_step(step_id) \
                and self.ir.step(step_id).kind == "gate" and not self.gates_passed():
            return "gated"
        return state

    def gates_passed(self) -> bool:
        if isinstance(self.decision, dict) and "passed" in self.decision:
            return bool(self.decision["passed"])
        return all(g.get("passed") for g in self.record.get("gates") or [] if isinstance(g, dict))


def latest_run(workdir: Path) -> str | None:
    runs = list_runs(Path(workdir))
    return runs[-1] if runs else None


def _read(path: Path):
    try:
        return json.loads(path.read_bytes())
    except (OSError, ValueError):
        return None


class _Folder:
    """One run's outputs in a local store at `workdir` (a cached step's files live in the run it
    was cached from: its manifest says where)."""

    def __init__(self, workdir: Path, run_id: str):
        self.workdir = Path(workdir)
        self.run_id = run_id

    def key(self, step_id: str, item: int | None = None) -> str:
        return f"runs/{self.run_id}/steps/{step_id}" if item is None else f"runs/{self.run_id}/items/{step_id}/{item}"

    def output(self, step_id: str, name: str, item: int | None = None):
        key = self.key(step_id, item)
        manifest = _read(self.workdir / key / "manifest.json")
        entry = (manifest or {}).get("files", {}).get(name) if isinstance(manifest, dict) else None
        where = entry.get("key") if isinstance(entry, dict) else None
        if isinstance(where, str) and not Path(where).is_absolute() and ".." not in Path(where).parts:  # inside the workdir
            found = _read(self.workdir / where)
            if found is not None:
                return found
        return _read(self.workdir / key / name)


def collect(workdir: Path, run_id: str) -> RunData:
    workdir = Path(workdir)
    record = load_record(workdir, run_id)
    folder = run_dir(workdir, run_id)
    ir_files = sorted(folder.glob("*.ir.json"))
    ir = IR.loads(ir_files[0].read_text(encoding="utf-8")) if ir_files else None
    data = RunData(record=record, ir=ir)
    out = _Folder(workdir, run_id)
    timeline = _read(folder / "timeline.json")
    if isinstance(timeline, dict) and isinstance(timeline.get("items"), dict):
        data.item_times = timeline["items"]
    if ir is not None:
        _sweep(data, ir, out)
        gate = next((s for s in ir.steps if s.kind == "gate"), None)
        if gate is not None:
            decision = out.output(gate.id, "decision.json")
            data.decision = decision if isinstance(decision, dict) else None
        evaluate = next((s for s in ir.steps if s.kind == "evaluate"), None)
        if evaluate is not None:
            metrics = out.output(evaluate.id, "metrics.json")
            data.metrics = metrics if isinstance(metrics, dict) else {}
        _guard_rails(data, ir, out)
    if not data.warnings and isinstance(record.get("warnings"), list):  # a record without the step files
        data.warnings = [(w.get("step"), w["message"]) for w in record["warnings"]
                         if isinstance(w, dict) and isinstance(w.get("message"), str)]
    if not data.model_inputs and isinstance(record.get("model_inputs"), list):
        data.model_inputs = [n for n in record["model_inputs"] if isinstance(n, int)]
    if not data.metrics and isinstance(record.get("metrics"), dict):
        data.metrics = record["metrics"]
    _deployment(data, workdir)
    return data


def _guard_rails(data: RunData, ir: IR, out: _Folder) -> None:
    """The train step's warnings and model input counts, from its result.json (or each item's,
    for a fan-out): what any backend's task wrote to the store."""
    train = next((s for s in ir.steps if s.kind == "train"), None)
    if train is None:
        return
    if train.fanout is None:
        results = [out.output(train.id, "result.json")]
    else:
        items = (data.record.get("steps", {}).get(train.id) or {}).get("items") or {}
        total = items.get("total") if isinstance(items.get("total"), int) else (train.fanout.size or 0)
        results = [out.output(train.id, "result.json", index) for index in range(total)]
    warnings, data.model_inputs = guards.summarize(results)
    data.warnings = [(train.id, line) for line in warnings]


def _sweep(data: RunData, ir: IR, out: _Folder) -> None:
    train = next((s for s in ir.steps if s.kind == "train" and s.fanout is not None), None)
    if train is None:
        return
    data.swept = list(train.fanout.parameters)
    select = next((s for s in ir.steps if s.kind == "select"), None)
    if select is not None:
        data.select = {"metric": select.config.get("metric"), "goal": select.config.get("goal", "max")}
        selection = out.output(select.id, "selection.json")
        if not isinstance(selection, list):
            result = out.output(select.id, "result.json")
            selection = (result or {}).get("selected") if isinstance(result, dict) else None
        data.selection = [s for s in (selection or []) if isinstance(s, dict)]
    items = (data.record.get("steps", {}).get(train.id) or {}).get("items") or {}
    total = items.get("total") if isinstance(items.get("total"), int) else (train.fanout.size or 0)
    for index in range(total):
        trial = out.output(train.id, "trial.json", index)
        if isinstance(trial, dict):
            data.trials.append(trial)


def _deployment(data: RunData, workdir: Path) -> None:
    deployment = data.record.get("deployment")
    if not isinstance(deployment, dict) or not deployment.get("deployed"):
        return
    model, version = deployment.get("model"), deployment.get("version")
    if not isinstance(model, str) or "/" in model or model in (".", "..") or not isinstance(version, int):
        return
    base = workdir / "registry" / model
    lineage = _read(base / str(version) / "lineage.json")
    data.lineage = lineage if isinstance(lineage, dict) else None
    aliases = _read(base / "aliases.json")
    data.aliases = aliases if isinstance(aliases, dict) else None
