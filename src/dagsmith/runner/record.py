"""The run record, <workdir>/runs/<run_id>/run.json, rewritten atomically on every change.

    {"run_id", "pipeline", "status": "running|succeeded|gated|failed", "started", "ended",
     "spec_hash", "params", "run_date", "steps": {id: {"state", "started", "ended", "attempts",
     "error"?, "items"?: {"total", "done", "failed"}}}, "metrics", "gates", "validation",
     "deployment"?, "warnings"?: [{"step", "message"}], "model_inputs"?: [n, ...]}

"metrics", "gates" and "deployment" are the evaluate, gate and deploy steps' results
(runtime/evaluate.py, runtime/deploy.py: {"deployed", "model", "version", "strategy",
"production", "canary": {"version", "traffic_percent"} | null, "previous_production",
"partitions"?, ...}). "warnings" and "model_inputs" come from the train step's result (or its
items'): the guard rails of runtime/guards.py and the distinct numbers of model input columns. Past 50 partitions the record keeps a digest (the first 50 partitions'
metrics, only the failed gate checks); the steps' files in the run folder have everything
(runner/progress.py reads them for the summary).

Step states: pending, running, succeeded, failed, skipped, cached. A finished step is in the
file before anything that depends on it starts, so a runner killed at any moment loses none.
"""

from __future__ import annotations

import datetime as _dt
import json
import secrets
from pathlib import Path

from ..errors import hide_connections
from ..runtime.store import atomic_write_bytes

FINISHED = ("succeeded", "cached")
TERMINAL = ("succeeded", "cached", "failed", "skipped")


def now() -> str:
    return _dt.datetime.now(_dt.timezone.utc).isoformat(timespec="milliseconds")


def new_run_id() -> str:
    stamp = _dt.datetime.now(_dt.timezone.utc).strftime("%Y%m%d-%H%M%S")
    return f"{stamp}-{secrets.token_hex(3)}"


class RunRecord:
    def __init__(self, path: Path, data: dict):
        self.path = path
        self.data = data
        self.dirty = False

    @classmethod
    def create(cls, path: Path, run_id: str, pipeline: str, spec_hash: str, params: dict, step_ids: list[str]) -> "RunRecord":
        data = {
            "run_id": run_id,
            "pipeline": pipeline,
            "status": "running",
            "started": now(),
            "ended": None,
            "spec_hash": spec_hash,
            "params": params,
            "steps": {sid: {"state": "pending", "started": None, "ended": None, "attempts": 0} for sid in step_ids},
            "metrics": {},
            "gates": [],
            "validation": {},
        }
        record = cls(path, data)
        record.save()
        return record

    @classmethod
    def load(cls, path: Path) -> "RunRecord":
        return cls(path, json.loads(path.read_text(encoding="utf-8")))

    @property
    def steps(self) -> dict:
        return self.data["steps"]

    def state(self, step_id: str) -> str:
        return self.steps[step_id]["state"]

    def update(self, step_id: str, **fields) -> None:
        entry = self.steps[step_id]
        if fields.get("state") == "running" and entry["started"] is None:
            entry["started"] = now()
        if fields.get("state") in TERMINAL:
            entry["ended"] = now()
        if isinstance(fields.get("error"), str):  # a step's error may quote a connection: never any part of it
            fields["error"] = hide_connections(fields["error"])
        entry.update(fields)
        if entry.get("error") is None:
            entry.pop("error", None)
        self.dirty = True

    def save(self) -> None:
        # Compact: json's C encoder only runs without indent, and this file is rewritten on every
        # state change (`dagsmith runs show` pretty-prints it).
        text = json.dumps(self.data, sort_keys=True, separators=(",", ":"), default=str)
        atomic_write_bytes(self.path, (text + "\n").encode("utf-8"))
        self.dirty = False

    def flush(self) -> None:
        if self.dirty:
            self.save()
