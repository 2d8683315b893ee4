"""The local runner, `dagsmith run --format json`: the reference every backend is compared with.

Status, step states, metrics, gates, validation and fan-out items come from the run record the
runner prints (runner/record.py); table sizes and the registry from its workdir (the store).
"""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

from .adapters import Adapter, Outcome, StoreView, read_ir

DAGSMITH = str(Path(sys.executable).parent / "dagsmith")


def normalize(entry: dict) -> str:
    state = entry["state"]
    if state in ("succeeded", "cached"):
        return "succeeded"
    if state == "skipped":  # a gate that did not pass, or a failure upstream: only the reason tells
        return "skipped" if (entry.get("error") or "").startswith("gated") else "not_run"
    if state == "pending":
        return "not_run"
    return state  # failed (or anything unexpected, which then equals no other backend's)


class LocalAdapter(Adapter):
    name = "local"
    slow = False  # each scenario's own timing decides (Scenario.slow)

    def prepare(self, spec: Path, *, env: str | None, workdir: Path):
        return {"spec": Path(spec), "env": env}  # `dagsmith run` compiles the spec itself

    def run(self, handle, *, params: dict, run_date: str | None, workdir: Path) -> Outcome:
        spec = handle["spec"]
        store = Path(workdir) / "store"
        argv = [DAGSMITH, "run", spec.name, "--workdir", str(store), "--format", "json"]
        if handle["env"]:
            argv += ["--env", handle["env"]]
        for name, value in params.items():
            argv += ["--param", f"{name}={value}"]
        if run_date:
            argv += ["--run-date", run_date]
        result = subprocess.run(argv, capture_output=True, text=True, cwd=spec.parent, timeout=600)
        assert result.stdout, f"dagsmith run printed no record (exit {result.returncode}):\n{result.stderr[-3000:]}"
        record = json.loads(result.stdout)
        assert result.returncode == (1 if record["status"] == "failed" else 0), result.stderr[-3000:]
        run_id = record["run_id"]
        (ir_file,) = (store / "runs" / run_id).glob("*.ir.json")
        ir = read_ir(ir_file)
        view = StoreView(str(store), run_id, ir)
        fanouts = [s["id"] for s in ir["steps"] if s.get("fanout")]
        return Outcome(
            backend=self.name,
            status=record["status"],
            steps={sid: normalize(entry) for sid, entry in record["steps"].items()},
            metrics=record["metrics"],
            gates=record["gates"],
            validation=record["validation"],
            rows=view.rows(),
            items={sid: record["steps"][sid].get("items", {}).get("done", 0) for sid in fanouts},
            deployed=view.deployed(),
            tables=view.tables(),
            run_id=run_id,
            run_date=record["run_date"],
            root=spec.parent,
            native={sid: (entry["state"], entry.get("error")) for sid, entry in record["steps"].items()},
        )


ADAPTER = LocalAdapter()
