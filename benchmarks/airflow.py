"""Airflow parse-time benchmark: how long Airflow's DagBag takes to load dagsmith's DAG files.

    python benchmarks/airflow.py [--static-tasks N] [--repeat R] [--keep]

Writes each case's DAG into its own temporary dags folder, then parses that folder R times
(default 3), each time in a FRESH Python process, so no module cache helps:

  minimal          examples/minimal/pipeline.yaml, `dagsmith compile --target airflow`
  20,000 trials    a generated spec: 200 static partitions x a 100-value alpha grid, compiled
                   for airflow; it becomes ONE mapped task
  static N tasks   a plain, hand-written Airflow 3 DAG with one PythonOperator per trial
                   between a start and an end task (the baseline the issue cites)

In each child, AIRFLOW_HOME (a temporary folder), AIRFLOW__CORE__LOAD_EXAMPLES=False and
AIRFLOW__CORE__DAGS_FOLDER are set before `import airflow`; the timed part is only the
`DagBag(dag_folder=...)` call, after `import airflow` and the DagBag import. The child's total
wall (interpreter start, imports, parse) is reported separately. No database is needed.

Prints a Markdown table and the targets with PASS/FAIL; exits 1 when a target fails.
See benchmarks/README.md.
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

# This file is named airflow.py: drop its folder from sys.path (Python puts it first when the
# script runs), or `import airflow` here and in the DAG files would import this script.
_HERE = Path(__file__).resolve().parent
sys.path[:] = [p for p in sys.path if Path(p or os.curdir).resolve() != _HERE]

REPO = Path(__file__).resolve().parent.parent
EXAMPLE_MINIMAL = REPO / "examples" / "minimal" / "pipeline.yaml"
PARTITIONS = 200
ALPHAS = 100  # 200 x 100 = 20,000 trials
MARKER = "DAGSMITH_BENCH_RESULT "

# Targets (see README.md).
PARSE_VS_MINIMAL = 2.0  # the 20,000-trial DAG parses within 2x of the minimal one
SIZE_BUDGET_KB = 100  # the 20,000-trial DAG file is under 100 KB
MAX_TASKS = 10  # the 20,000-trial DAG has fewer than 10 tasks

# Not measured here: the figures for dag-factory (YAML -> DAG at parse time).
DAG_FACTORY = [
    ("dag-factory, YAML for the same 20,000-item mapped task", "828", "4.75"),
    ("dag-factory, minimal DAG", "", "0.04"),
]


# --- inputs -------------------------------------------------------------------------------


def sweep_spec() -> str:
    """One CSV source, partition_by region over 200 static values, a 100-value alpha grid."""
    partitions = ", ".join(f"r{i:03d}" for i in range(PARTITIONS))
    alphas = ", ".join(repr(round(0.001 * (i + 1), 3)) for i in range(ALPHAS))
    return f"""\
dagsmith: 1
pipeline:
  name: sweep-20k
sources:
  sales: {{type: csv, uri: data/sales.csv}}
training:
  inputs: [sales]
  target: units_sold
  partition_by: region
  partitions: [{partitions}]
  model:
    estimator: sklearn.linear_model.Ridge
  sweep:
    method: grid
    parameters:
      alpha: [{alphas}]
    select: {{metric: r2, goal: max}}
evaluation:
  metrics: [r2]
"""


def static_dag(n: int) -> str:
    """A plain Airflow 3 DAG, written the way a person would: one task per trial in a loop."""
    return f'''\
"""Hand-written static DAG: one PythonOperator per trial, {n:,} of them, start >> each >> end."""

import datetime

from airflow.providers.standard.operators.empty import EmptyOperator
from airflow.providers.standard.operators.python import PythonOperator
from airflow.sdk import DAG

N_TRIALS = {n}
REGIONS = [f"r{{i:03d}}" for i in range({PARTITIONS})]
ALPHAS = [round(0.001 * (i + 1), 3) for i in range({ALPHAS})]


def train(region, alpha):
    print("train", region, alpha)


with DAG(
    dag_id="static_trials",
    schedule=None,
    start_date=datetime.datetime(2024, 1, 1, tzinfo=datetime.timezone.utc),
    catchup=False,
    max_active_runs=1,
    tags=["benchmark"],
) as dag:
    start = EmptyOperator(task_id="start")
    end = EmptyOperator(task_id="end")
    for i in range(N_TRIALS):
        region, alpha = REGIONS[(i // {ALPHAS}) % {PARTITIONS}], ALPHAS[i % {ALPHAS}]
        trial = PythonOperator(
            task_id=f"train_{{region}}_{{i % {ALPHAS}:03d}}_{{i:05d}}",
            python_callable=train,
            op_kwargs={{"region": region, "alpha": alpha}},
        )
        start >> trial >> end
'''


def dagsmith_cli() -> list[str]:
    script = Path(sys.executable).parent / "dagsmith"
    return [str(script)] if script.exists() else [sys.executable, "-m", "dagsmith.cli"]


def compile_airflow(spec: Path, out: Path) -> None:
    cmd = dagsmith_cli() + ["compile", str(spec), "--target", "airflow", "-o", str(out)]
    proc = subprocess.run(cmd, cwd=spec.parent, capture_output=True, text=True)
    if proc.returncode != 0:
        raise SystemExit(f"compile failed ({proc.returncode}): {' '.join(cmd)}\n{proc.stdout}{proc.stderr}")


def dag_file(folder: Path) -> Path:
    files = sorted(folder.glob("*.py"))
    if len(files) != 1:
        raise SystemExit(f"expected exactly one DAG file in {folder}, found {[f.name for f in files]}")
    return files[0]


# --- child: one parse of one dags folder, in a fresh interpreter ------------------------------


def child(folder: str, home: str) -> None:
    # Before airflow is imported (the parent sets these too).
    os.environ["AIRFLOW_HOME"] = home
    os.environ["AIRFLOW__CORE__LOAD_EXAMPLES"] = "False"
    os.environ["AIRFLOW__CORE__DAGS_FOLDER"] = folder

    t0 = time.perf_counter()
    import airflow  # noqa: F401
    from airflow.dag_processing.dagbag import DagBag

    import_s = time.perf_counter() - t0
    t1 = time.perf_counter()
    bag = DagBag(dag_folder=str(folder))
    parse_s = time.perf_counter() - t1

    result = {
        "import_s": import_s,
        "parse_s": parse_s,
        "import_errors": {str(k): str(v) for k, v in bag.import_errors.items()},
        "dags": {
            dag_id: {
                "tasks": len(dag.tasks),
                "mapped": sum(1 for t in dag.tasks if type(t).__name__ == "MappedOperator"),
            }
            for dag_id, dag in bag.dags.items()
        },
    }
    sys.stdout.flush()
    print(MARKER + json.dumps(result))


# --- parent -------------------------------------------------------------------------------


def parse_once(folder: Path, home: Path) -> dict:
    shutil.rmtree(folder / "__pycache__", ignore_errors=True)  # never let a .pyc help
    env = dict(os.environ)
    env.update(
        AIRFLOW_HOME=str(home),
        AIRFLOW__CORE__LOAD_EXAMPLES="False",
        AIRFLOW__CORE__DAGS_FOLDER=str(folder),
    )
    cmd = [sys.executable, str(Path(__file__).resolve()), "--child", str(folder), "--home", str(home)]
    t = time.perf_counter()
    proc = subprocess.run(cmd, cwd=folder.parent, env=env, capture_output=True, text=True)
    wall_s = time.perf_counter() - t
    lines = [line for line in proc.stdout.splitlines() if line.startswith(MARKER)]
    if proc.returncode != 0 or not lines:
        raise SystemExit(f"parse child failed for {folder} ({proc.returncode}):\n{proc.stdout[-3000:]}{proc.stderr[-3000:]}")
    result = json.loads(lines[-1][len(MARKER):])
    result["wall_s"] = wall_s
    return result


def measure(label: str, folder: Path, home: Path, repeat: int) -> dict:
    runs = [parse_once(folder, home) for _ in range(repeat)]
    last = runs[-1]
    if any(r["import_errors"] for r in runs):
        raise SystemExit(f"{label}: DagBag import errors:\n{json.dumps(last['import_errors'], indent=2)}")
    if len(last["dags"]) != 1:
        raise SystemExit(f"{label}: expected one DAG in {folder}, got {sorted(last['dags'])}")
    (dag_id, info), = last["dags"].items()
    path = dag_file(folder)
    irs = sorted(folder.glob("*.ir.json"))
    return {
        "label": label,
        "dag_id": dag_id,
        "file": path.name,
        "dag_kb": path.stat().st_size / 1024,
        "ir_kb": sum(p.stat().st_size for p in irs) / 1024 if irs else None,
        "tasks": info["tasks"],
        "mapped": info["mapped"],
        "parse_s": statistics.median(r["parse_s"] for r in runs),
        "parse_all": [r["parse_s"] for r in runs],
        "import_s": statistics.median(r["import_s"] for r in runs),
        "wall_s": statistics.median(r["wall_s"] for r in runs),
    }


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--static-tasks", type=int, default=PARTITIONS * ALPHAS, metavar="N",
                        help="tasks in the hand-written static DAG (default 20000; fewer for a quick run)")
    parser.add_argument("--repeat", type=int, default=3, help="fresh-process parses per case (median reported; default 3)")
    parser.add_argument("--keep", action="store_true", help="keep the temporary folder (its path is printed)")
    parser.add_argument("--child", metavar="FOLDER", help=argparse.SUPPRESS)
    parser.add_argument("--home", help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.child:
        child(args.child, args.home)
        return 0

    started = time.perf_counter()
    root = Path(tempfile.mkdtemp(prefix="dagsmith-airflow-bench-"))
    try:
        home = root / "airflow_home"
        home.mkdir()
        specs = root / "specs"
        specs.mkdir()
        minimal_dir, sweep_dir, static_dir = root / "dags_minimal", root / "dags_sweep", root / "dags_static"
        for d in (minimal_dir, sweep_dir, static_dir):
            d.mkdir()

        compile_airflow(EXAMPLE_MINIMAL, minimal_dir)
        sweep = specs / "sweep_20k.yaml"
        sweep.write_text(sweep_spec(), encoding="utf-8")
        compile_airflow(sweep, sweep_dir)
        (static_dir / "static_trials.py").write_text(static_dag(args.static_tasks), encoding="utf-8")

        # Warm-up: one throwaway parse writes the bytecode caches of airflow and dagsmith and
        # anything airflow creates in a new AIRFLOW_HOME, so no measured row pays for that.
        parse_once(minimal_dir, home)

        rows = [
            measure("minimal (examples/minimal)", minimal_dir, home, args.repeat),
            measure("20,000-trial sweep (dagsmith, mapped)", sweep_dir, home, args.repeat),
            measure(f"static DAG, {args.static_tasks:,} tasks (hand-written)", static_dir, home, args.repeat),
        ]
        ok = report(rows, args, time.perf_counter() - started)
        return 0 if ok else 1
    finally:
        if args.keep:
            print(f"\n(files kept in {root})", file=sys.stderr)
        else:
            shutil.rmtree(root, ignore_errors=True)


def report(rows: list[dict], args, elapsed_s: float) -> bool:
    from importlib.metadata import version

    minimal, sweep, static = rows
    print(f"dagsmith Airflow parse benchmark: Airflow {version('apache-airflow')}, Python {sys.version.split()[0]} "
          f"on {sys.platform}; parse = `DagBag(dag_folder=...)` only, median of {args.repeat}, "
          f"each in a fresh process.\n")
    print("| case | DAG file (KB) | IR file (KB) | tasks | mapped | parse median (s) | child import (s) | child wall (s) |")
    print("|---|--:|--:|--:|--:|--:|--:|--:|")
    for r in rows:
        ir = f"{r['ir_kb']:,.1f}" if r["ir_kb"] is not None else "-"
        print(f"| {r['label']} | {r['dag_kb']:,.1f} | {ir} | {r['tasks']:,} | {r['mapped']} "
              f"| {r['parse_s']:.3f} | {r['import_s']:.2f} | {r['wall_s']:.2f} |")
    for label, kb, parse in DAG_FACTORY:
        print(f"| {label} (issue, not measured) | {kb or '-'} | - | - | - | {parse} | - | - |")
    print("\nchild import = `import airflow` + the DagBag import; child wall = the whole child process "
          "(interpreter start, imports, parse), timed by the parent.\n")

    checks: list[tuple[bool | None, str]] = []
    ratio = sweep["parse_s"] / minimal["parse_s"]
    checks.append((ratio <= PARSE_VS_MINIMAL,
                   f"the 20,000-trial DAG parses within {PARSE_VS_MINIMAL:g}x of the minimal one: {ratio:.2f}x "
                   f"({sweep['parse_s']:.3f} vs {minimal['parse_s']:.3f} s)"))
    checks.append((sweep["dag_kb"] < SIZE_BUDGET_KB,
                   f"the 20,000-trial DAG file is under {SIZE_BUDGET_KB} KB: {sweep['dag_kb']:.1f} KB "
                   f"({(sweep['dag_kb'] + (sweep['ir_kb'] or 0)):.1f} KB with the IR file it reads at run time)"))
    checks.append((sweep["tasks"] < MAX_TASKS and sweep["mapped"] == 1,
                   f"the 20,000-trial DAG has < {MAX_TASKS} tasks, one of them mapped: "
                   f"{sweep['tasks']} tasks, {sweep['mapped']} mapped"))
    checks.append((static["tasks"] == args.static_tasks + 2,
                   f"the static DAG has {args.static_tasks:,} + 2 tasks: {static['tasks']:,}"))
    checks.append((None, f"static {args.static_tasks:,}-task DAG vs the dagsmith 20,000-trial DAG: "
                         f"{static['parse_s'] / sweep['parse_s']:,.0f}x the parse time "
                         f"({static['parse_s']:.2f} vs {sweep['parse_s']:.3f} s)"))
    for ok, text in checks:
        print(f"- {'INFO' if ok is None else 'PASS' if ok else 'FAIL'}: {text}")
    print(f"\nwhole benchmark: {elapsed_s:.1f} s")
    return all(ok is not False for ok, _ in checks)


if __name__ == "__main__":
    sys.exit(main())
