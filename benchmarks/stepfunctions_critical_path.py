"""Step Functions: how long the emitted state machine makes a run wait, against the graph itself.

    python benchmarks/stepfunctions_critical_path.py                  # examples run locally first
    python benchmarks/stepfunctions_critical_path.py --runs DIR       # DIR/<example>.json: run records
    python benchmarks/stepfunctions_critical_path.py --model          # the duration model everywhere

For each spec: the critical path of the emitted machine (the longest chain of task durations
through its nesting of sequences and Parallels, read from the emitted ASL: a Parallel lasts as
long as its longest branch, states in sequence add up, a Choice follows its Default, the step's
run path) against the DAG's own critical path (the longest chain along its edges), and the same
for the one-Parallel-per-depth layout this backend emitted before ("layers"). Target: machine /
DAG at most 1.1.

Durations: for the examples, each step's duration in a local run's record (`dagsmith run
--format json`: the steps' started / ended; with `--env dev` where the spec has that laptop
overlay, which changes sizes, not steps); with --model, and for the held-out-like shapes
(diamond, N, wide fan-in, chains of different lengths, random DAGs), the DURATION MODEL: each
step draws a whole number of seconds uniformly from 1 to 60, per seed; a shape's row gives the
median and the worst ratio over SEEDS draws.
"""

from __future__ import annotations

import argparse
import datetime as dt
import json
import random
import shutil
import statistics
import subprocess
import sys
import tempfile
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO / "tests"))
SEEDS = 25
TARGET = 1.1


# --- the emitted machine ------------------------------------------------------------------


def machine_path(definition: dict, duration_of_state) -> float:
    """The critical path of a state machine (or a branch): from StartAt along Next / a Choice's
    Default to the end, a Parallel being its longest branch."""

    def walk(states: dict, name: str | None) -> float:
        total = 0.0
        while name is not None:
            state = states[name]
            if state["Type"] == "Parallel":
                total += max(walk(b["States"], b["StartAt"]) for b in state["Branches"])
            else:
                total += duration_of_state(name)
            if state.get("End") or state["Type"] in ("Succeed", "Fail"):
                return total
            if state["Type"] == "Choice":  # the run path: admitted, upstreams succeeded, the gate passed
                admit = [c["Next"] for c in state["Choices"] if c.get("StringEquals") == "admit"]
                name = admit[0] if admit else state["Default"]
            else:
                name = state["Next"]
        return total

    return walk(definition["States"], definition["StartAt"])


def emitted(ir) -> tuple[dict, object]:
    from dagsmith.backends import get

    backend = get("stepfunctions")
    options = dict(ir.backends.get("stepfunctions") or {})
    files = backend.emit(ir, options)
    (text,) = [t for n, t in files.items() if n.endswith(".asl.json")]
    return json.loads(text), backend.plan(ir, options)


def row(ir, durations: dict, machine_of=None) -> tuple[float, float, float]:
    """(machine, DAG, layers) critical paths, in the durations' unit."""
    from dagsmith.backends.stepfunctions import asl
    from dagsmith.backends.stepfunctions.shape import critical_path

    definition, plan = machine_of or emitted(ir)
    # a step's time is on the state running it (Run_ or, for a fan-out, Map_: its listing is in it)
    by_state = {}
    for step in ir.steps:
        by_state[asl.state_name("Map" if plan.task(step.id).maps_over else "Run", step.id)] = durations[step.id]
    machine = machine_path(definition, lambda name: by_state.get(name, 0.0))
    nodes = [s.id for s in ir.steps]
    ups = {s.id: s.depends_on for s in ir.steps}
    depth: dict = {}
    for s in ir.steps:
        depth[s.id] = 1 + max((depth[u] for u in s.depends_on), default=-1)
    layers = sum(max(durations[n] for n in nodes if depth[n] == k) for k in range(max(depth.values()) + 1))
    return machine, critical_path(nodes, ups, durations), layers


# --- durations ----------------------------------------------------------------------------


def model(ir, seed: int) -> dict:
    rng = random.Random(seed)
    return {s.id: float(rng.randint(1, 60)) for s in ir.steps}


def from_record(record: dict) -> dict:
    out = {}
    for sid, entry in record["steps"].items():
        if entry.get("started") and entry.get("ended"):
            out[sid] = (dt.datetime.fromisoformat(entry["ended"]) - dt.datetime.fromisoformat(entry["started"])).total_seconds()
        else:
            out[sid] = 0.0  # not run (gated, skipped): takes no time on either side
    return out


def local_run(example: Path, work: Path) -> dict | None:
    """A local run of the example in a copy of its folder, its data made first (`make_data.py`)."""
    folder = work / example.name
    shutil.copytree(example, folder)
    if (folder / "make_data.py").exists():
        subprocess.run([sys.executable, "make_data.py"], cwd=folder, capture_output=True, check=True)
    # the spec's laptop overlay when it has one (forecast: 2 trials per region, not 50): the same steps
    env = ["--env", "dev"] if "\n  dev:" in (folder / "pipeline.yaml").read_text(encoding="utf-8") else []
    got = subprocess.run([str(Path(sys.executable).parent / "dagsmith"), "run", "pipeline.yaml", "--workdir", str(work / "dagsmith"),
                          "--no-cache", "--format", "json", *env], cwd=folder, capture_output=True, text=True)
    try:
        return json.loads(got.stdout)
    except ValueError:
        print(f"{example.name}: local run failed ({got.returncode}): {got.stderr[-300:]}", file=sys.stderr)
        return None


# --- held-out-like shapes -----------------------------------------------------------------


def spec_ir(name: str, edges: dict, folder: Path):
    """The IR of a spec of command steps with these upstreams (step -> [upstream steps])."""
    from dagsmith_testing import compile_path

    steps = {s: {"run": {"command": ["true"]}, **({"after": list(ups)} if ups else {})} for s, ups in edges.items()}
    path = folder / f"{name}.yaml"
    path.write_text(json.dumps({"dagsmith": 1, "pipeline": {"name": name}, "steps": steps}, indent=1), encoding="utf-8")
    return compile_path(str(path))


def shapes(rng: random.Random) -> dict[str, dict]:
    out = {
        "diamond": {"a": [], "b": ["a"], "c": ["a"], "d": ["b", "c"]},
        "N": {"a": [], "b": [], "c": ["a", "b"], "d": ["b"]},
        "wide fan-in (12)": {**{f"src{i}": [] for i in range(12)}, "join": [f"src{i}" for i in range(12)]},
        "sources -> features -> join (6)": {**{f"src{i}": [] for i in range(6)}, **{f"feat{i}": [f"src{i}"] for i in range(6)},
                                            "join": [f"feat{i}" for i in range(6)]},
        "chains 2, 5, 9 -> join": {**{f"c{k}_{i}": ([f"c{k}_{i - 1}"] if i else []) for k in (2, 5, 9) for i in range(k)},
                                  "join": [f"c{k}_{k - 1}" for k in (2, 5, 9)]},
        "chain 12": {f"s{i}": ([f"s{i - 1}"] if i else []) for i in range(12)},
    }
    for n, p in ((10, 0.25), (16, 0.2), (24, 0.15), (40, 0.08)):
        for k in range(3):
            nodes = [f"n{i}" for i in range(n)]
            out[f"random {n} steps p={p} #{k}"] = {v: [u for u in nodes[:i] if rng.random() < p] for i, v in enumerate(nodes)}
    return out


# --- the table ----------------------------------------------------------------------------


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--runs", help="a folder of run records, <example>.json (dagsmith run --format json)")
    parser.add_argument("--model", action="store_true", help="the duration model for the examples too (no local run)")
    args = parser.parse_args(argv)
    from dagsmith_testing import compile_path

    print("| spec | durations | machine | DAG | machine / DAG | layers / DAG |")
    print("| --- | --- | ---: | ---: | ---: | ---: |")
    worst = 0.0
    with tempfile.TemporaryDirectory() as tmp:
        work = Path(tmp)
        for example in sorted((REPO / "examples").glob("*/pipeline.yaml")):
            ir = compile_path(str(example))
            built = emitted(ir)
            record = None
            if args.runs and (Path(args.runs) / f"{example.parent.name}.json").exists():
                record = json.loads((Path(args.runs) / f"{example.parent.name}.json").read_text(encoding="utf-8"))
            elif not args.model:
                record = local_run(example.parent, work / "runs")
            if record is not None:
                machine, dag, layers = row(ir, from_record(record), built)
                worst = max(worst, machine / dag)
                print(f"| {example.parent.name} | local run | {machine:.1f} s | {dag:.1f} s | {machine / dag:.3f} | {layers / dag:.3f} |")
            ratios = [row(ir, model(ir, seed), built) for seed in range(SEEDS)]
            worst = max([worst] + [m / d for m, d, _ in ratios])
            print(f"| {example.parent.name} | model x{SEEDS} | | | {fmt([m / d for m, d, _ in ratios])} | {fmt([l / d for _, d, l in ratios])} |")
        for name, edges in shapes(random.Random(21)).items():
            ir = spec_ir("shape", edges, work)
            built = emitted(ir)
            ratios = [row(ir, model(ir, seed), built) for seed in range(SEEDS)]
            worst = max([worst] + [m / d for m, d, _ in ratios])
            print(f"| {name} | model x{SEEDS} | | | {fmt([m / d for m, d, _ in ratios])} | {fmt([l / d for _, d, l in ratios])} |")
    print(f"\nworst machine / DAG: {worst:.3f} (target at most {TARGET})")
    return 0


def fmt(ratios: list[float]) -> str:
    return f"{statistics.median(ratios):.3f} (worst {max(ratios):.3f})"


if __name__ == "__main__":
    sys.exit(main())
