"""`dagsmith serve` against MLflow's scoring server (`mlflow models serve`), side by side in one run.

    python benchmarks/serve_vs_mlflow.py
    python benchmarks/serve_vs_mlflow.py --mlflow-python /path/to/venv/bin/python --requests 1000

Both serve the SAME fitted estimator: the churn example is run once (production v1, no canary),
its GradientBoostingClassifier is taken from the registry and saved with
`mlflow.sklearn.save_model` (skops, with the types skops reports as untrusted passed as
`skops_trusted_types`). Then:

    dagsmith serve churn --port 0 --workers W               (uvicorn + Starlette)
    mlflow models serve -m MODEL --env-manager local -w W   (uvicorn + FastAPI)

Each level of benchmarks/serve.py (1 client with a new connection each, 50 keep-alive, 50 and
200 with a new connection each; --requests single-row requests per level) runs against
both servers, one after the other, before the next level, so a change in the machine's load
hits both. With --rounds R (default 3) all levels run R times; the server that goes first
alternates from round to round (and from level to level), and the table shows each level's
median over the rounds (req/s, p99, CPU per request), the errors of all rounds, and the range
of the req/s ratio. "CPU ms / request" is the user + system CPU time of the server's processes
(its process group: MLflow's uvicorn is a child of `mlflow models serve`) over a level,
divided by its requests: what a request costs the server, which the load of other programs
on the machine changes far less than req/s and latency. Before timing, 200 warm-up requests
to each server.

The request bodies carry the same row: dagsmith's `{"rows": [{column: value}]}`, MLflow's
`{"dataframe_records": [{column: value}]}` with the model's input columns. dagsmith also
computes predict_proba for each request (its answer has the probabilities), MLflow predict
only. The script checks that both answer the same prediction before timing.

MLflow needs its own interpreter when installing it would change the project's environment
(mlflow 3.17 pins pyarrow<26): --mlflow-python, or $MLFLOW_PYTHON, or this interpreter when
it can import mlflow. That environment needs the same scikit-learn version.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import socket
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))
from serve import (  # noqa: E402
    LEVELS, Process, churn_registry, dagsmith_server, group_cpu_seconds, load_average, measure, production_model,
    sample_rows,
)

SAVE_MODEL = r"""
import json, sys
import joblib, mlflow, mlflow.sklearn, sklearn, skops.io
estimator = joblib.load(sys.argv[1])
trusted = skops.io.get_untrusted_types(data=skops.io.dumps(estimator))
mlflow.sklearn.save_model(estimator, sys.argv[2], serialization_format="skops", skops_trusted_types=trusted,
                          pip_requirements=[f"scikit-learn=={sklearn.__version__}"])
print(json.dumps({"mlflow": mlflow.__version__, "sklearn": sklearn.__version__, "trusted": trusted}))
"""


def mlflow_python(choice: str | None) -> str:
    candidates = [choice, os.environ.get("MLFLOW_PYTHON"), sys.executable]
    for python in filter(None, candidates):
        if subprocess.run([python, "-c", "import mlflow"], capture_output=True).returncode == 0:
            return python
    raise SystemExit("no Python with mlflow: pip install 'dagsmith[mlflow]' (or pass --mlflow-python)")


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


def post(url: str, payload) -> dict:
    import urllib.request

    request = urllib.request.Request(url, data=json.dumps(payload).encode(), headers={"Content-Type": "application/json"})
    with urllib.request.urlopen(request, timeout=60) as response:
        return json.loads(response.read())


def versions(python: str, modules: str) -> str:
    code = f"import importlib.metadata as m; print(', '.join(f'{{n}} ' + m.version(n) for n in {modules.split()!r}))"
    return subprocess.run([python, "-c", code], capture_output=True, text=True).stdout.strip()


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--requests", type=int, default=1000, help="single-row requests per level")
    parser.add_argument("--workers", type=int, default=1, help="worker processes of each server")
    parser.add_argument("--rounds", type=int, default=3, help="times every level runs (the table shows medians)")
    parser.add_argument("--mlflow-python", help="a Python with mlflow (default: $MLFLOW_PYTHON or this one)")
    args = parser.parse_args()
    python = mlflow_python(args.mlflow_python)

    with tempfile.TemporaryDirectory(prefix="dagsmith-vs-mlflow-") as tmp:
        tmp = Path(tmp)
        workdir = churn_registry(tmp, runs=1)
        model, _ = production_model(workdir, "churn")
        rows = sample_rows(workdir, "churn", 1)

        import joblib
        import pandas as pd

        from dagsmith.runtime.data import model_input

        joblib.dump(model["estimator"], tmp / "estimator.joblib")
        saved = subprocess.run([python, "-c", SAVE_MODEL, str(tmp / "estimator.joblib"), str(tmp / "mlflow-model")],
                               capture_output=True, text=True)
        if saved.returncode:
            raise SystemExit(f"mlflow.sklearn.save_model failed:\n{saved.stderr[-3000:]}")
        records = model_input(model, pd.DataFrame(rows)).to_dict("records")
        dagsmith_body = json.dumps({"rows": rows}).encode()
        mlflow_body = json.dumps({"dataframe_records": records}).encode()

        load_before = load_average()
        port = free_port()
        servers = {}
        try:
            servers["dagsmith"] = dagsmith_server(workdir, "churn", args.workers)
            servers["mlflow"] = Process(
                [python, "-m", "mlflow", "models", "serve", "-m", str(tmp / "mlflow-model"), "--env-manager", "local",
                 "-h", "127.0.0.1", "-p", str(port), "-w", str(args.workers)],
                lambda line: f"http://127.0.0.1:{port}" if "Uvicorn running on" in line or "Application startup complete" in line else None,
                # MLflow starts `uvicorn` from PATH: the one of its own environment
                env={**os.environ, "PATH": os.pathsep.join([str(Path(python).parent), os.environ.get("PATH", "")])})
            urls = {"dagsmith": servers["dagsmith"].url, "mlflow": servers["mlflow"].url}
            paths = {"dagsmith": "/predict", "mlflow": "/invocations"}
            bodies = {"dagsmith": dagsmith_body, "mlflow": mlflow_body}
            same = (post(urls["dagsmith"] + "/predict", {"rows": rows})["predictions"]
                    == post(urls["mlflow"] + "/invocations", {"dataframe_records": records})["predictions"])
            for name in servers:  # warm-up
                measure(urls[name], bodies[name], 200, 1, path=paths[name])
            loads = [load_average()]
            results = {label: {"dagsmith": [], "mlflow": []} for label, _, _ in LEVELS}
            for round_ in range(args.rounds):
                for n, (label, clients, keep_alive) in enumerate(LEVELS):
                    order = ("dagsmith", "mlflow") if (round_ + n) % 2 == 0 else ("mlflow", "dagsmith")
                    for name in order:
                        pgid = servers[name].process.pid
                        cpu = group_cpu_seconds(pgid)
                        r = measure(urls[name], bodies[name], args.requests, clients, keep_alive, path=paths[name])
                        after = group_cpu_seconds(pgid)
                        r["cpu_ms"] = None if cpu is None or after is None else (after - cpu) / r["n"] * 1000
                        results[label][name].append(r)
                        time.sleep(1)  # let the closed connections drain out of TIME_WAIT processing
                loads.append(load_average())
        finally:
            for server in servers.values():
                server.stop()

    print(f"churn GradientBoostingClassifier (150 trees), the same fitted estimator in both; 1 row per request; "
          f"{args.requests:,} requests per level; --workers {args.workers} each; {args.rounds} round(s), medians")
    print(f"dagsmith: {versions(sys.executable, 'uvicorn starlette scikit-learn')}; "
          f"MLflow: {versions(python, 'mlflow uvicorn fastapi scikit-learn')}")
    print(f"Python {platform.python_version()}, {os.cpu_count()} CPUs; load average (1, 5, 15 min) before: {load_before}, "
          f"after each round: {'; '.join(loads[1:])}; same predictions: {'yes' if same else 'NO'}\n")
    print("| level | dagsmith req/s | MLflow req/s | req/s ratio (range) | dagsmith p99 (ms) | MLflow p99 (ms) "
          "| p99 ratio | dagsmith errors | MLflow errors | CPU ms / request (d / M) | listen overflows (d / M) |")
    print("|---|--:|--:|--:|--:|--:|--:|--:|--:|--:|--:|")

    def median(runs, key):
        values = [r[key] for r in runs if r[key] is not None]
        return statistics.median(values) if values else None

    met = True
    for label, _, _ in LEVELS:
        d, m = results[label]["dagsmith"], results[label]["mlflow"]
        rps = (median(d, "rps"), median(m, "rps"))
        p99 = (median(d, "p99"), median(m, "p99"))
        errors = (sum(r["errors"] for r in d), sum(r["errors"] for r in m))
        ratios = [a["rps"] / b["rps"] for a, b in zip(d, m)]
        cpu = (median(d, "cpu_ms"), median(m, "cpu_ms"))
        overflows = (sum(r["overflows"] or 0 for r in d), sum(r["overflows"] or 0 for r in m))
        span = f" ({min(ratios):.2f}-{max(ratios):.2f})" if len(ratios) > 1 else ""
        cpu_text = " / ".join("?" if c is None else f"{c:.2f}" for c in cpu)
        print(f"| {label} | {rps[0]:,.0f} | {rps[1]:,.0f} | {rps[0] / rps[1]:.2f}{span} | {p99[0]:,.1f} | "
              f"{p99[1]:,.1f} | {p99[0] / p99[1]:.2f} | {errors[0]} | {errors[1]} | {cpu_text} | "
              f"{overflows[0]} / {overflows[1]} |")
        met = met and rps[0] >= rps[1] and errors[0] == 0 and (label.startswith("1 client") or p99[0] <= p99[1])
    print("\nratios are dagsmith / MLflow: req/s above 1 and p99 below 1 favour dagsmith. Target (issue 12): at "
          "every level at least MLflow's req/s with 0 errors, p99 at most MLflow's at 50 and 200 clients: "
          + ("met (medians)" if met else "NOT met"))
    for label, _, _ in LEVELS:
        for name, runs in results[label].items():
            for n, r in enumerate(runs):
                if r["error_kinds"]:
                    print(f"errors of {name} at {label}, round {n + 1}: {r['error_kinds']}")
    return 0 if same else 1


if __name__ == "__main__":
    sys.exit(main())
