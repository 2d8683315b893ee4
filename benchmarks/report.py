"""`dagsmith report`: how long the report takes to write, how big it is, and how long headless
Chromium takes to open and render it, by fan-out size, as a table.

    python benchmarks/report.py [--repeat 3] [--sizes 6,500,2000,5000] [--real 2000]

Each row is a finished run made in the runner's formats without running anything
(tests/report/fakerun.py: run.json, the IR, every item's trial.json, selection, gate decision,
metrics, timeline.json), unpartitioned and, from 100 items up, as 100 partitions. Columns:
  write   `write_report` in this process (read the run folder, render, write), median of --repeat
  size    the HTML file; target < 2 MB at 2,000 items
  render  Chromium (tests/report/browser.py, DevTools protocol): from navigate to two animation
          frames after the load event (laid out and painted), the median of --repeat opens in one
          browser; target < 3 s at 2,000 items
--real N also makes a real `dagsmith run` of a sweep of N trials (a tiny logistic regression on
made-up data, 2 workers) and reports it the same way.
"""

from __future__ import annotations

import argparse
import itertools
import math
import os
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

REPO = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(REPO / "tests" / "report"))

from browser import Browser, find_chromium  # noqa: E402
from fakerun import make_run, sweep_spec  # noqa: E402

from dagsmith.report import write_report  # noqa: E402


def grid_for(trials: int) -> dict:
    """Two parameters whose grid has exactly `trials` combinations."""
    a = max(d for d in range(1, int(math.isqrt(trials)) + 1) if trials % d == 0)
    return {"C": [round(0.01 * 1.5 ** i, 6) for i in range(trials // a)], "tol": [round(1e-4 * 2 ** i, 8) for i in range(a)]}


def real_run(trials: int, folder: Path) -> tuple[Path, str]:
    import random

    rng = random.Random(0)
    rows = ["x1,x2,y"] + [f"{(a := rng.random()):.4f},{(b := rng.random()):.4f},{int(a + b + rng.random() * 0.5 > 1.2)}" for _ in range(300)]
    (folder / "rows.csv").write_text("\n".join(rows) + "\n")
    grid = grid_for(trials)
    spec = f"""dagsmith: 1
pipeline: {{name: report-bench}}
sources: {{rows: {{type: csv, uri: rows.csv}}}}
training:
  inputs: [rows]
  target: y
  model: {{estimator: sklearn.linear_model.LogisticRegression}}
  sweep:
    method: grid
    parameters: {{C: {grid['C']}, tol: {grid['tol']}}}
    select: {{metric: roc_auc, goal: max}}
evaluation: {{metrics: [roc_auc, accuracy], gates: [{{metric: roc_auc, op: ">=", value: 0.5}}]}}
deployment: {{model_name: bench}}
"""
    (folder / "pipeline.yaml").write_text(spec)
    started = time.perf_counter()
    result = subprocess.run([sys.executable, "-m", "dagsmith.cli", "run", "pipeline.yaml", "--workdir", "wd", "--max-parallel", "2"],
                            cwd=folder, capture_output=True, text=True)
    if result.returncode != 0:
        raise SystemExit(result.stderr[-3000:])
    print(f"(real run of {trials} trials: {time.perf_counter() - started:.1f}s)", file=sys.stderr)
    workdir = folder / "wd"
    return workdir, sorted(p.name for p in (workdir / "runs").iterdir())[-1]


def measure(label: str, workdir: Path, run_id: str, browser, repeat: int) -> list[str]:
    writes = []
    for _ in range(repeat):
        started = time.perf_counter()
        path = write_report(workdir, run_id)
        writes.append(time.perf_counter() - started)
    renders = []
    if browser is not None:
        for _ in range(repeat):
            renders.append(browser.open(path.as_uri()))
            assert browser.requests() == [path.as_uri()], browser.requests()
    size = path.stat().st_size
    render = f"{statistics.median(renders):.2f}s" if renders else "n/a"
    return [label, f"{statistics.median(writes):.3f}s", f"{size / 1024:.0f} KiB", render]


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--repeat", type=int, default=3)
    parser.add_argument("--sizes", default="6,500,2000,5000")
    parser.add_argument("--real", type=int, default=0, metavar="N")
    args = parser.parse_args()
    binary = find_chromium()
    browser = Browser(binary) if binary else None
    if browser is None:
        print("no chromium on PATH: render not measured (apt-get install chromium)", file=sys.stderr)
    table = [["run", "write", "size", "render"]]
    try:
        with tempfile.TemporaryDirectory() as tmp:
            for n, size in enumerate(int(s) for s in args.sizes.split(",")):
                workdir = Path(tmp) / f"plain{n}"
                table.append(measure(f"{size} items", workdir, make_run(workdir, sweep_spec(grid_for(size), None)), browser, args.repeat))
                if size >= 100 and size % 100 == 0:
                    workdir = Path(tmp) / f"parts{n}"
                    run_id = make_run(workdir, sweep_spec(grid_for(size // 100), [f"region-{i}" for i in range(100)]))
                    table.append(measure(f"{size} items, 100 partitions", workdir, run_id, browser, args.repeat))
            if args.real:
                folder = Path(tmp) / "real"
                folder.mkdir()
                workdir, run_id = real_run(args.real, folder)
                table.append(measure(f"{args.real} items, real run", workdir, run_id, browser, args.repeat))
    finally:
        if browser is not None:
            browser.close()
    widths = [max(len(row[i]) for row in table) for i in range(len(table[0]))]
    for index, row in enumerate(table):
        print("  ".join(cell.ljust(w) if i == 0 else cell.rjust(w) for i, (cell, w) in enumerate(zip(row, widths))))
        if index == 0:
            print("  ".join("-" * w for w in widths))
    print(f"\n(median of {args.repeat}; load average {os.getloadavg()[0]:.2f}; targets at 2,000 items: size < 2 MB, render < 3 s)")


if __name__ == "__main__":
    main()
