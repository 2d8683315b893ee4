"""Local runner overhead and the examples' end-to-end times, printed as a Markdown table.

    python benchmarks/runner.py [--skip-examples]

Overhead is what the runner adds beyond the steps' own work:
  - 1,000 no-op custom steps (a Python function that returns at once): wall time / steps;
  - a 1,000-item fan-out (a tiny LogisticRegression sweep): (wall of the fan-out step - the items'
    own work / workers) / items, the items' work measured inside the workers.
Target: < 20 ms per step and per item on a 2-core machine. Each run uses a fresh workdir (no
cache) and the real CLI (`dagsmith run --format json`), so start-up is included.
"""

from __future__ import annotations

import argparse
import datetime as dt
import json
import os
import subprocess
import sys
import tempfile
import time
from pathlib import Path

REPO = Path(__file__).resolve().parent.parent
DAGSMITH = str(Path(sys.executable).parent / "dagsmith")


def run(spec: Path, workdir: Path, cwd: Path, *extra: str) -> tuple[dict, float]:
    started = time.perf_counter()
    result = subprocess.run(
        [DAGSMITH, "run", str(spec), "--workdir", str(workdir), "--format", "json", *extra],
        capture_output=True, text=True, cwd=cwd,
    )
    wall = time.perf_counter() - started
    if result.returncode not in (0,):
        raise SystemExit(f"run of {spec} failed:\n{result.stderr[-3000:]}")
    return json.loads(result.stdout), wall


def seconds(entry: dict) -> float:
    return (dt.datetime.fromisoformat(entry["ended"]) - dt.datetime.fromisoformat(entry["started"])).total_seconds()


def noop_steps(tmp: Path, count: int) -> dict:
    (tmp / "helpers.py").write_text("def noop():\n    pass\n")
    lines = ["dagsmith: 1", "pipeline: {name: noop}", "steps:"]
    lines += [f"  s{i:04d}: {{run: {{python: 'helpers:noop'}}}}" for i in range(count)]
    spec = tmp / "noop.yaml"
    spec.write_text("\n".join(lines) + "\n")
    record, wall = run(spec, tmp / "work-noop", tmp)
    assert record["status"] == "succeeded"
    return {"case": f"{count:,} no-op custom steps", "units": count, "wall": wall, "work": 0.0, "per_unit_ms": wall / count * 1000}


def fanout(tmp: Path, count: int, workers: int) -> dict:
    rows = ["x1,x2,y"] + [f"{i % 7},{(i * 3) % 11},{int(i % 7 > 3)}" for i in range(60)]
    (tmp / "tiny.csv").write_text("\n".join(rows) + "\n")
    values = ", ".join(f"{0.01 + i / 100:.2f}" for i in range(count))
    spec = tmp / "fanout.yaml"
    spec.write_text(f"""dagsmith: 1
pipeline: {{name: fanout}}
sources: {{tiny: {{type: csv, uri: tiny.csv}}}}
training:
  inputs: [tiny]
  target: y
  split: {{test_size: 0.25, seed: 1}}
  model: {{estimator: sklearn.linear_model.LogisticRegression}}
  sweep:
    method: grid
    parameters: {{C: [{values}]}}
    select: {{metric: accuracy, goal: max}}
""")
    record, wall = run(spec, tmp / "work-fanout", tmp)
    assert record["status"] == "succeeded"
    train = record["steps"]["train"]
    step_wall = seconds(train)
    work = sum(
        json.loads((tmp / "work-fanout" / "runs" / record["run_id"] / "items" / "train" / str(i) / "result.json").read_text())["seconds"]
        for i in range(count)
    )
    overhead = (step_wall - work / workers) / count
    return {"case": f"{count:,}-item fan-out (train)", "units": count, "wall": step_wall, "work": work, "per_unit_ms": overhead * 1000}


def examples(tmp: Path) -> list[dict]:
    out = []
    for name, env in (("minimal", None), ("churn", None), ("forecast", "dev")):
        subprocess.run([sys.executable, str(REPO / "examples" / name / "make_data.py")], check=True, capture_output=True)
        extra = ("--env", env) if env else ()
        record, wall = run(REPO / "examples" / name / "pipeline.yaml", tmp / f"work-{name}", REPO, *extra)
        items = sum((e.get("items") or {}).get("total", 0) for e in record["steps"].values())
        out.append({"example": name + (f" (--env {env})" if env else ""), "status": record["status"], "steps": len(record["steps"]), "items": items, "wall": wall})
    return out


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--steps", type=int, default=1000)
    parser.add_argument("--skip-examples", action="store_true")
    args = parser.parse_args()
    workers = os.cpu_count() or 1
    with tempfile.TemporaryDirectory(prefix="dagsmith-bench-") as folder:
        tmp = Path(folder)
        rows = [noop_steps(tmp, args.steps), fanout(tmp, args.steps, workers)]
        print(f"Runner overhead ({workers} workers, target < 20 ms per step / item)\n")
        print("| case | wall (s) | steps' own work (s) | overhead per step/item (ms) | target |")
        print("|---|--:|--:|--:|---|")
        for row in rows:
            verdict = "PASS" if row["per_unit_ms"] < 20 else "FAIL"
            print(f"| {row['case']} | {row['wall']:.2f} | {row['work']:.2f} | {row['per_unit_ms']:.2f} | {verdict} |")
        if not args.skip_examples:
            print("\nExamples end to end (`dagsmith run`, fresh workdir, CLI start-up included)\n")
            print("| example | status | steps | fan-out items | wall (s) |")
            print("|---|---|--:|--:|--:|")
            for row in examples(tmp):
                print(f"| {row['example']} | {row['status']} | {row['steps']} | {row['items']:,} | {row['wall']:.1f} |")
    return 0


if __name__ == "__main__":
    sys.exit(main())
