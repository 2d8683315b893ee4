"""`dagsmith run` of the churn example against the cost of importing its libraries, as a table.

    python benchmarks/local_run.py [--repeat 3] [--steps 500] [--baseline-src DIR] [--now-env NAME=VALUE]
                                   [--before-env NAME=VALUE] [--save FILE] [--compare FILE]

Rows (each timed value is the median of --repeat runs; the floor and the churn runs alternate,
so both see the same machine load):
  - import floor: a fresh `python -c "import great_expectations, sklearn, duckdb, pandas, pyarrow"`,
    wall time. No run of the example can be faster than one process importing what it needs.
  - churn cold: `dagsmith run examples/churn/pipeline.yaml --no-cache` in a fresh workdir (real
    CLI, start-up included), wall time, and its ratio to the floor. Target <= 1.3x.
  - validation step: for each of the example's two validation steps, the step's time inside its
    worker (result.json "seconds": reading the table, Great Expectations' import when the worker
    has not got it yet, its set-up, the checks, saving) minus the expectations' own work. The own
    work is measured here, in this process, with Great Expectations already imported and set up:
    the same expectations on the same table (the run's churn_features), `batch.validate(suite)`
    alone, the median of 5. Target: overhead <= 1 s.
  - runner per-step overhead: benchmarks/runner.py's method, N no-op custom steps, wall / N.
    Target < 20 ms.

--baseline-src DIR measures another copy of dagsmith's source too (e.g. the last commit:
`mkdir /tmp/base && git archive HEAD src | tar -x -C /tmp/base`, then `--baseline-src
/tmp/base/src`), run with PYTHONPATH=DIR, each of its runs right after the same run of this copy:
on a shared machine both then see the same load. --now-env / --before-env NAME=VALUE (repeatable)
set variables for that copy's dagsmith runs; --before-env alone measures this copy twice, e.g. a
runtime switch off and on: `--before-env DAGSMITH_SPECULATE_ON_BRIDGE=0 --now-env
DAGSMITH_SPECULATE_ON_BRIDGE=1`. --save FILE writes the figures as JSON; --compare FILE shows a
saved "now" as the "before" column. The 1-minute load average is printed.

On a busy machine the ratio says less than it seems: the floor is one process on one core, while
a run keeps several busy (the fork server importing, a bridge, workers); with every core taken by
others, a run's wall time follows the CPU time all of them need, not its critical path. So a
figure measured at a load average above the CPU count is an upper bound of the idle one.
"""

from __future__ import annotations

import argparse
import importlib.util
import json
import os
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

REPO = Path(__file__).resolve().parent.parent
DAGSMITH = str(Path(sys.executable).parent / "dagsmith")
FLOOR_IMPORTS = "import great_expectations, sklearn, duckdb, pandas, pyarrow"
SOURCE_EXAMPLE = REPO / "examples" / "churn"
EXAMPLE = SOURCE_EXAMPLE / "pipeline.yaml"  # measure() points it at a private copy with its own data


def import_floor() -> float:
    started = time.perf_counter()
    subprocess.run([sys.executable, "-c", FLOOR_IMPORTS], check=True, capture_output=True,
                   env={**os.environ, "GX_ANALYTICS_ENABLED": "false"})
    return time.perf_counter() - started


def churn_cold(workdir: Path, env: dict | None = None) -> tuple[float, dict]:
    started = time.perf_counter()
    result = subprocess.run([DAGSMITH, "run", str(EXAMPLE), "--no-cache", "--workdir", str(workdir), "--format", "json"],
                            capture_output=True, text=True, cwd=REPO, env={**os.environ, **(env or {})})
    wall = time.perf_counter() - started
    if result.returncode != 0:
        raise SystemExit(f"the churn run failed:\n{result.stderr[-3000:]}")
    return wall, json.loads(result.stdout)


def validation_steps(workdir: Path, record: dict) -> list[dict]:
    """(step id, seconds inside the worker, table path, expectations) of the run's validation steps."""
    folder = workdir / "runs" / record["run_id"]
    ir = json.loads(next(folder.glob("*.ir.json")).read_text())
    out = []
    for step in ir["steps"]:
        if step["kind"] != "validate":
            continue
        result = json.loads((folder / "steps" / step["id"] / "result.json").read_text())
        table = folder / "steps" / step["config"]["table"] / "table.parquet"
        out.append({"step": step["id"], "seconds": result["seconds"], "table": table, "expectations": step["config"]["expectations"]})
    return out


def own_work(table: Path, expectations: list[dict], repeat: int = 5) -> float:
    """The expectations' own work: batch.validate(suite) on the table, GX imported and set up."""
    os.environ.setdefault("GX_ANALYTICS_ENABLED", "false")
    import great_expectations as gx
    import pyarrow.parquet as pq
    from great_expectations.expectations.registry import get_expectation_impl

    frame = pq.read_table(table).to_pandas()
    context = gx.get_context(mode="ephemeral")
    context.variables.progress_bars = {"globally": False}
    batch = (context.data_sources.add_pandas("bench").add_dataframe_asset("table")
             .add_batch_definition_whole_dataframe("all").get_batch(batch_parameters={"dataframe": frame}))
    suite = gx.ExpectationSuite(name="bench")
    for expectation in expectations:
        suite.add_expectation(get_expectation_impl(expectation["type"])(**expectation["kwargs"]))
    batch.validate(suite)  # warm: first-call caches
    times = []
    for _ in range(repeat):
        started = time.perf_counter()
        batch.validate(suite)
        times.append(time.perf_counter() - started)
    return statistics.median(times)


def runner_overhead(tmp: Path, steps: int, env: dict | None = None) -> float:
    spec = importlib.util.spec_from_file_location("bench_runner", REPO / "benchmarks" / "runner.py")
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    saved = dict(os.environ)
    os.environ.update(env or {})  # runner.py's runs inherit this process's environment
    try:
        return module.noop_steps(tmp, steps)["per_unit_ms"]
    finally:
        os.environ.clear()
        os.environ.update(saved)


def measure(repeat: int, steps: int, variants: dict) -> dict:
    """{variant: figures}; `variants`: name -> extra environment of its dagsmith runs. In each
    round: an import floor run, then one churn run of each variant."""
    global EXAMPLE
    # A private copy of the example, with its data made there: nothing else working in this
    # checkout (a test regenerating examples/*/data) can take it away between runs.
    private = Path(tempfile.mkdtemp(prefix="dagsmith-bench-example-"))
    for name in ("pipeline.yaml", "make_data.py"):
        shutil.copy(SOURCE_EXAMPLE / name, private / name)
    subprocess.run([sys.executable, str(private / "make_data.py")], check=True, capture_output=True)
    EXAMPLE = private / "pipeline.yaml"
    try:
        return _measure(repeat, steps, variants)
    finally:
        shutil.rmtree(private, ignore_errors=True)


def _measure(repeat: int, steps: int, variants: dict) -> dict:
    import_floor()  # a throwaway: bytecode caches written, files in the page cache
    with tempfile.TemporaryDirectory(prefix="dagsmith-bench-") as folder:
        for name, env in variants.items():
            churn_cold(Path(folder) / name, env)  # the same throwaway for each copy of the source
    floors, loads = [], []
    walls = {name: [] for name in variants}
    steps_seen = {name: {} for name in variants}
    noop = {name: [] for name in variants}
    with tempfile.TemporaryDirectory(prefix="dagsmith-bench-") as folder:
        tmp = Path(folder)
        for i in range(repeat):
            loads.append(os.getloadavg()[0])
            floors.append(import_floor())
            for name, env in variants.items():
                workdir = tmp / f"churn-{name}-{i}"
                wall, record = churn_cold(workdir, env)
                walls[name].append(wall)
                for step in validation_steps(workdir, record):
                    work = own_work(step["table"], step["expectations"])
                    steps_seen[name].setdefault(step["step"], []).append({"seconds": step["seconds"], "work": work})
        for i in range(repeat):
            for name, env in variants.items():
                (tmp / f"noop-{name}-{i}").mkdir()
                noop[name].append(runner_overhead(tmp / f"noop-{name}-{i}", steps, env))
    floor = statistics.median(floors)
    out = {}
    for name in variants:
        validation = {
            step: {"seconds": statistics.median(r["seconds"] for r in runs), "work": statistics.median(r["work"] for r in runs),
                   "overhead": statistics.median(r["seconds"] - r["work"] for r in runs)}
            for step, runs in steps_seen[name].items()
        }
        wall = statistics.median(walls[name])
        out[name] = {"floor": floor, "floors": floors, "churn": wall, "churns": walls[name], "ratio": wall / floor,
                     "validation": validation, "runner_ms": statistics.median(noop[name]), "steps": steps, "load": loads,
                     "cpus": os.cpu_count()}
    return out


def table(now: dict, before: dict | None) -> str:
    rows = [("import floor (s)", "floor", "{:.2f}", None),
            ("churn cold --no-cache (s)", "churn", "{:.2f}", None),
            ("churn / import floor", "ratio", "{:.2f}x", ("<= 1.3x", lambda v: v <= 1.3))]
    for step in now["validation"]:
        rows += [(f"validation {step}: time in worker (s)", ("validation", step, "seconds"), "{:.3f}", None),
                 (f"validation {step}: expectations' own work (s)", ("validation", step, "work"), "{:.3f}", None),
                 (f"validation {step}: overhead (s)", ("validation", step, "overhead"), "{:.3f}", ("<= 1 s", lambda v: v <= 1.0))]
    rows.append((f"runner per-step overhead ({now['steps']} no-op steps, ms)", "runner_ms", "{:.2f}", ("< 20 ms", lambda v: v < 20)))

    def get(data, key):
        if isinstance(key, tuple):
            for part in key:
                data = (data or {}).get(part)
            return data
        return data.get(key)

    lines = ["| measure | " + ("before | " if before else "") + "now | target | verdict (now) |",
             "|---|" + ("--:|" if before else "") + "--:|---|---|"]
    for label, key, fmt, target in rows:
        value = get(now, key)
        cells = [label]
        if before:
            old = get(before, key)
            cells.append(fmt.format(old) if old is not None else "-")
        cells += [fmt.format(value), target[0] if target else "", ("PASS" if target[1](value) else "FAIL") if target else ""]
        lines.append("| " + " | ".join(cells) + " |")
    return "\n".join(lines)


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--repeat", type=int, default=3, help="runs per timed figure (median reported)")
    parser.add_argument("--steps", type=int, default=500, help="no-op steps for the runner overhead")
    parser.add_argument("--baseline-src", metavar="DIR", help="another copy of dagsmith's src/, measured as 'before'")
    parser.add_argument("--now-env", action="append", default=[], metavar="NAME=VALUE", help="a variable for this copy's runs")
    parser.add_argument("--before-env", action="append", default=[], metavar="NAME=VALUE",
                        help="a variable for the 'before' runs (without --baseline-src: this copy again)")
    parser.add_argument("--save", metavar="FILE", help="write the figures as JSON")
    parser.add_argument("--compare", metavar="FILE", help="a --save file (without --baseline-src) shown as 'before'")
    args = parser.parse_args()
    def variables(pairs: list[str]) -> dict:
        bad = [pair for pair in pairs if "=" not in pair]
        if bad:
            parser.error(f"expected NAME=VALUE: {', '.join(bad)}")
        return dict(pair.split("=", 1) for pair in pairs)

    variants = {"now": variables(args.now_env)}
    if args.baseline_src or args.before_env:
        variants["before"] = {**({"PYTHONPATH": str(Path(args.baseline_src).resolve())} if args.baseline_src else {}),
                              **variables(args.before_env)}
    figures = measure(args.repeat, args.steps, variants)
    now = figures["now"]
    before = figures.get("before") or (json.loads(Path(args.compare).read_text()) if args.compare else None)
    for name, env in variants.items():
        if env:
            print(f"{name}: {' '.join(f'{k}={v}' for k, v in env.items())}")
    print(f"`dagsmith run` of examples/churn vs importing its libraries ({now['cpus']} CPUs, median of {args.repeat}; "
          f"1-min load average during the rounds: {', '.join(f'{v:.2f}' for v in now['load'])})\n")
    print(table(now, before))
    print(f"\nimport floor runs (s): {', '.join(f'{v:.2f}' for v in now['floors'])}; "
          f"churn runs now (s): {', '.join(f'{v:.2f}' for v in now['churns'])}"
          + (f"; before (s): {', '.join(f'{v:.2f}' for v in before['churns'])}" if before else ""))
    if args.save:
        Path(args.save).write_text(json.dumps(figures if "before" in figures else now, indent=2) + "\n")
    return 0


if __name__ == "__main__":
    sys.exit(main())
