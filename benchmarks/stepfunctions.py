"""Step Functions backend: compile time, definition bytes and history events per execution.

    python benchmarks/stepfunctions.py            # minimal, churn, the 20,000-trial sweep

History events are counted in moto (tests/conformance/backend_stepfunctions.py: moto's
interpreter, tasks run as local processes) for minimal and churn; the 20,000-trial spec is not
executed here (10,000 task processes): its row shows the compile-time upper bound of the parent
execution's events (backends/stepfunctions/asl.py, history_bound), which the compile refuses above 25,000.
"""

from __future__ import annotations

import shutil
import subprocess
import sys
import tempfile
import time
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO / "tests"))


def big_spec_ir(folder: Path):
    """The IR of benchmarks/compile.py's 20,000-trial spec (200 partitions x a 10 x 10 grid)."""
    from dagsmith_testing import benchmark_module  # tests/: on sys.path above

    sweep_spec = benchmark_module("compile").sweep_spec

    from dagsmith.compiler import compile_spec
    from dagsmith.spec import load_spec

    path = Path(folder) / "sweep.yaml"
    path.write_text(sweep_spec(), encoding="utf-8")
    try:
        return compile_spec(load_spec(str(path)))
    except TypeError:
        from dagsmith_testing import compile_path

        return compile_path(str(path))


def timed_emit(ir, repeat: int = 5) -> tuple[float, dict]:
    from dagsmith.backends import get

    backend = get("stepfunctions")
    best = float("inf")
    for _ in range(repeat):
        start = time.perf_counter()
        files = backend.emit(ir, ir.backends.get("stepfunctions", {}))
        best = min(best, time.perf_counter() - start)
    return best, files


def main() -> int:
    from conformance.backend_stepfunctions import MotoStepFunctions, compile_spec as compile_cli
    from dagsmith.backends import get
    from dagsmith.backends.stepfunctions import asl
    from dagsmith_testing import compile_path

    work = Path(tempfile.mkdtemp(prefix="bench-sfn-"))
    rows = []
    moto = MotoStepFunctions()
    moto.start(work / "moto")
    try:
        for example in ("minimal", "churn"):
            folder = work / example
            shutil.copytree(REPO / "examples" / example, folder, ignore=shutil.ignore_patterns("data", "build", ".dagsmith"))
            subprocess.run([sys.executable, str(folder / "make_data.py")], check=True, capture_output=True)
            ir = compile_path(str(folder / "pipeline.yaml"))
            seconds, files = timed_emit(ir)
            definition = next(v for k, v in files.items() if k.endswith(".asl.json"))
            ir_file = compile_cli(folder / "pipeline.yaml", folder / "build", None)
            deployed = moto.call("deploy", ir_file=str(ir_file), stack=f"bench-{example}", prefix=f"bench-{example}", root=str(folder),
                                 options={"state_machine_name": f"bench-{example}"})
            got = moto.call("run", machine=deployed["machine"], execution_input={"params": {}, "run_date": "2024-02-29"}, name=f"bench-{example}")
            rows.append((example, seconds, len(definition.encode()), f"{got['events']} ({got['status'].lower()})"))
        ir = big_spec_ir(work)
        seconds, files = timed_emit(ir, repeat=3)
        definition = next(v for k, v in files.items() if k.endswith(".asl.json"))
        backend = get("stepfunctions")
        plan = backend.plan(ir, {})
        bound = asl.history_bound(plan, backend.settings(plan, {}))
        rows.append(("20,000 trials", seconds, len(definition.encode()), f"<= {bound} (bound; Distributed Map)"))
    finally:
        moto.stop()
    print("| spec | compile (emit) | definition bytes | history events per execution |")
    print("| --- | ---: | ---: | --- |")
    for name, seconds, size, events in rows:
        print(f"| {name} | {seconds * 1000:.1f} ms | {size:,} | {events} |")
    ok = rows[-1][2] < 100_000
    print(f"\n20,000-trial definition under 100 KB: {'yes' if ok else 'NO'}")
    return 0 if ok else 1


if __name__ == "__main__":
    sys.exit(main())
