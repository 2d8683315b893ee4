"""A run folder made without running anything, in the formats the local runner and the steps
write (run.json, the IR, items/<train>/<n>/trial.json behind a manifest, select's selection.json,
gate's decision.json, evaluate's metrics.json, timeline.json): for reports of big or hostile
runs in tests and benchmarks/report.py. Real runs of the examples are in test_browser.py."""

from __future__ import annotations

import datetime as dt
import itertools
import json
from pathlib import Path

from dagsmith.compiler import compile_spec
from dagsmith.spec import load_spec

HOSTILE = '</script><script>window.__pwned=1</script><img src=x onerror="window.__pwned=2">&amp;"\'<!--'


def sweep_spec(trials_per_partition: dict, partitions: list | None, *, description: str = "fake", model_name: str = "fake") -> str:
    grid = "\n".join(f"      {name}: {json.dumps(values)}" for name, values in trials_per_partition.items())
    partition = f"  partition_by: region\n  partitions: {json.dumps(partitions)}\n" if partitions else ""
    return f"""dagsmith: 1
pipeline: {{name: fake-sweep, description: {json.dumps(description)}}}
sources:
  rows: {{type: csv, uri: rows.csv}}
validation:
  - name: rows_ok
    on: rows
    expectations:
      - expect_column_values_to_not_be_null: {{column: y}}
    on_failure: warn
training:
  inputs: [rows]
  target: y
{partition}  model: {{estimator: sklearn.linear_model.LogisticRegression}}
  sweep:
    method: grid
    parameters:
{grid}
    max_parallel: 4
    select: {{metric: roc_auc, goal: max}}
evaluation:
  metrics: [roc_auc, accuracy]
  gates:
    - {{metric: roc_auc, op: ">=", value: 0.7}}
    - {{metric: roc_auc, compare_to: production, op: ">=", delta: 0.0}}
deployment: {{model_name: {model_name}, strategy: canary, canary: {{traffic_percent: 10}}}}
"""


def _iso(t: float) -> str:
    return dt.datetime.fromtimestamp(t, dt.timezone.utc).isoformat(timespec="milliseconds")


def _write(path: Path, data) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(json.dumps(data, indent=1, sort_keys=True), encoding="utf-8")


def _output(workdir: Path, key: str, files: dict) -> None:
    """Files under `key` and their manifest (as Store.commit writes them)."""
    manifest = {"files": {}, "fingerprint": "f" * 64}
    for name, data in files.items():
        _write(workdir / key / name, data)
        manifest["files"][name] = {"key": f"{key}/{name}", "sha256": "0" * 64, "size": 1}
    _write(workdir / key / "manifest.json", manifest)


def make_run(workdir: Path, spec_text: str, *, run_id: str = "20260101-000000-aaaaaa", gate_passes: bool = True,
             hostile: bool = False) -> str:
    """Write a finished run of `spec_text` into `workdir`; returns the run id."""
    workdir = Path(workdir)
    spec_path = workdir / "spec" / "pipeline.yaml"
    spec_path.parent.mkdir(parents=True, exist_ok=True)
    spec_path.write_text(spec_text, encoding="utf-8")
    ir = compile_spec(load_spec(str(spec_path)))
    folder = workdir / "runs" / run_id
    folder.mkdir(parents=True, exist_ok=True)
    (folder / f"{ir.name}.ir.json").write_text(ir.dumps(), encoding="utf-8")
    train = next(s for s in ir.steps if s.kind == "train")
    fan = train.fanout
    names = list(fan.parameters)
    combos = list(itertools.product(*(fan.parameters[n] for n in names)))
    partitions = list(fan.partitions) if fan.partitions else [None]
    if hostile:
        partitions = [HOSTILE if i == 0 else p for i, p in enumerate(partitions)]
    t0 = 1767225600.0
    clock = t0
    steps, item_rows, trials = {}, [], []
    for step in ir.steps:
        if step.kind == "train":
            lanes = [clock] * (fan.max_parallel or 4)
            for index in range(len(partitions) * len(combos)):
                lane = min(range(len(lanes)), key=lambda i: lanes[i])
                start, seconds = lanes[lane], 0.05 + (index % 7) * 0.01
                lanes[lane] = start + seconds
                item_rows.append([index, _iso(start), _iso(start + seconds), True])
                partition, combo = partitions[index // len(combos)], combos[index % len(combos)]
                params = dict(zip(names, combo))
                score = 0.7 + 0.2 * ((sum(hash(json.dumps(v)) % 97 for v in combo) + index // len(combos)) % 50) / 50
                trials.append({"index": index, "partition": partition, "trial": index % len(combos), "params": params,
                               "metrics": {"roc_auc": round(score, 6), "accuracy": round(score - 0.05, 6)}})
                _output(workdir, f"runs/{run_id}/items/{train.id}/{index}", {"trial.json": trials[-1]})
            end = max(lanes)
            steps[step.id] = {"state": "succeeded", "started": _iso(clock), "ended": _iso(end), "attempts": 1,
                              "items": {"total": len(trials), "done": len(trials), "failed": 0}}
            clock = end
            continue
        steps[step.id] = {"state": "succeeded", "started": _iso(clock), "ended": _iso(clock + 0.2), "attempts": 1}
        clock += 0.2
    best = {}
    for t in trials:
        key = json.dumps(t["partition"])
        if key not in best or t["metrics"]["roc_auc"] > best[key]["metrics"]["roc_auc"]:
            best[key] = t
    select = next(s for s in ir.steps if s.kind == "select")
    _output(workdir, f"runs/{run_id}/steps/{select.id}", {"selection.json": list(best.values())})
    partitioned = partitions != [None]
    metrics = ({(p if isinstance(p, str) else json.dumps(p)): dict(best[json.dumps(p)]["metrics"]) for p in partitions}
               if partitioned else dict(next(iter(best.values()))["metrics"]))
    _output(workdir, f"runs/{run_id}/steps/evaluate", {"metrics.json": metrics})
    threshold = 0.7 if gate_passes else 0.99
    gates = []
    for p in partitions:
        observed = best[json.dumps(p)]["metrics"]["roc_auc"]
        for check in ({"metric": "roc_auc", "op": ">=", "threshold": threshold},
                      {"metric": "roc_auc", "op": ">=", "compare_to": "production", "delta": 0.0, "production_value": 0.71,
                       "production_version": 3, "threshold": 0.71}):
            gates.append({**check, **({"partition": p} if partitioned else {}), "observed": observed, "passed": observed >= check["threshold"]})
    passed = all(g["passed"] for g in gates)
    _output(workdir, f"runs/{run_id}/steps/gate", {"decision.json": {"gates": gates, "passed": passed,
                                                                       "partitions_passed": None, "partitions_failed": None}})
    error = HOSTILE if hostile else "boom"
    validation = {"rows_ok": {"name": "rows_ok", "table": "rows", "on_failure": "warn", "success": False, "rows": 10, "expectations": [
        {"type": "expect_column_values_to_not_be_null", "kwargs": {"column": HOSTILE if hostile else "y"}, "success": False,
         "unexpected_count": 3, "element_count": 10, "observed_value": None, "partial_unexpected_list": [HOSTILE if hostile else None]}]}}
    if not passed:
        steps["deploy"].update(state="skipped", started=None, error="gated: a gate did not pass")
        deployment = None
    else:
        deployment = {"deployed": True, "model": "fake", "version": 4, "production": 3, "previous_production": 3, "strategy": "canary",
                      "canary": {"version": 4, "traffic_percent": 10}, "target": "local", "notes": [error]}
    record = {"run_id": run_id, "pipeline": ir.name, "status": "succeeded" if passed else "gated", "started": _iso(t0), "ended": _iso(clock),
              "spec_hash": ir.pipeline["spec_hash"], "params": {"label": HOSTILE} if hostile else {}, "run_date": "2026-01-01",
              "steps": steps, "metrics": metrics, "gates": gates, "validation": validation}
    if deployment:
        record["deployment"] = deployment
    _write(folder / "run.json", record)
    (folder / "timeline.json").write_text(json.dumps({"items": {train.id: item_rows}}), encoding="utf-8")
    return run_id
