"""Serving latency and throughput of `dagsmith serve`, printed as a Markdown table.

    python benchmarks/serve.py                          # builds the churn example's registry first
    python benchmarks/serve.py --workdir DIR --model M  # an existing registry
    python benchmarks/serve.py --requests 1000 --clients 4 --rows 1

The server is the real CLI (`dagsmith serve MODEL --port 0`) in its own process on 127.0.0.1;
the clients are threads of this process, each with one keep-alive http.client connection.
Two runs: N sequential requests (one client), then N requests split over C concurrent
clients. Latency is measured per request by the client (send to last byte of the answer);
requests/s = N / wall time of the run. Before timing, 50 warm-up requests.

Without --workdir the churn example is run twice into a temporary workdir (production v1 and a
10% canary v2), so the numbers include canary routing.
"""

from __future__ import annotations

import argparse
import http.client
import json
import shutil
import signal
import statistics
import subprocess
import sys
import tempfile
import threading
import time
from pathlib import Path

REPO = Path(__file__).resolve().parent.parent
DAGSMITH = str(Path(sys.executable).parent / "dagsmith")


def churn_registry(tmp: Path) -> Path:
    example = tmp / "churn"
    example.mkdir()
    for name in ("pipeline.yaml", "make_data.py"):
        shutil.copy(REPO / "examples" / "churn" / name, example / name)
    subprocess.run([sys.executable, "make_data.py"], cwd=example, check=True, capture_output=True)
    workdir = tmp / "work"
    for _ in range(2):
        result = subprocess.run([DAGSMITH, "run", "pipeline.yaml", "--workdir", str(workdir)], cwd=example,
                                capture_output=True, text=True)
        if result.returncode:
            raise SystemExit(f"dagsmith run failed:\n{result.stderr[-3000:]}")
    return workdir


def sample_rows(workdir: Path, model: str, n: int) -> list[dict]:
    from dagsmith.runtime import registry
    from dagsmith.runtime.store import LocalStore

    store = LocalStore(workdir)
    index = registry.version_index(store, model, registry.resolve(store, model, "production"))
    entry = index["models"][0]
    m = registry.load_model(store, model, index["version"], entry.get("partition"))
    rows = []
    for i in range(n):
        row = {}
        for j, column in enumerate(m["encoding"]["features"]):
            row[column] = "x" if column in m["encoding"]["categorical"] else float((i + j) % 9)
        if index.get("partition_by"):
            row[index["partition_by"]] = entry["partition"]
        rows.append(row)
    return rows


def client_run(url: str, body: bytes, count: int, latencies: list, errors: list) -> None:
    host, port = url.removeprefix("http://").split(":")
    conn = http.client.HTTPConnection(host, int(port), timeout=30)
    headers = {"Content-Type": "application/json"}
    for _ in range(count):
        started = time.perf_counter()
        conn.request("POST", "/predict", body=body, headers=headers)
        response = conn.getresponse()
        response.read()
        latencies.append(time.perf_counter() - started)
        if response.status != 200:
            errors.append(response.status)
    conn.close()


def measure(url: str, body: bytes, requests: int, clients: int) -> dict:
    latencies, errors = [], []
    per_client = [requests // clients + (1 if i < requests % clients else 0) for i in range(clients)]
    threads = [threading.Thread(target=client_run, args=(url, body, n, latencies, errors)) for n in per_client]
    started = time.perf_counter()
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    wall = time.perf_counter() - started
    ordered = sorted(latencies)
    return {
        "p50": statistics.median(ordered) * 1000,
        "p99": ordered[min(len(ordered) - 1, int(round(0.99 * len(ordered))) - 1)] * 1000,
        "rps": len(ordered) / wall,
        "errors": len(errors),
        "n": len(ordered),
    }


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--workdir", type=Path, help="an existing workdir with a registry (default: build the churn one)")
    parser.add_argument("--model", default="churn")
    parser.add_argument("--requests", type=int, default=1000)
    parser.add_argument("--clients", type=int, default=4)
    parser.add_argument("--rows", type=int, default=1, help="rows per request")
    args = parser.parse_args()

    with tempfile.TemporaryDirectory(prefix="dagsmith-serve-bench-") as tmp:
        workdir = args.workdir or churn_registry(Path(tmp))
        body = json.dumps({"rows": sample_rows(workdir, args.model, args.rows)}).encode()
        server = subprocess.Popen([DAGSMITH, "serve", args.model, "--workdir", str(workdir), "--port", "0"],
                                  stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
        try:
            line = server.stdout.readline()
            if "serving model" not in line:
                raise SystemExit(f"dagsmith serve did not start:\n{line}{server.stderr.read()}")
            url = line.split(" on ")[-1].strip()
            measure(url, body, 50, 1)  # warm-up
            sequential = measure(url, body, args.requests, 1)
            concurrent = measure(url, body, args.requests, args.clients)
            host, port = url.removeprefix("http://").split(":")
            conn = http.client.HTTPConnection(host, int(port), timeout=10)
            conn.request("GET", "/health")
            health = json.loads(conn.getresponse().read())
            conn.close()
        finally:
            server.send_signal(signal.SIGINT)
            server.communicate(timeout=10)

    canary = health["canary"]
    print(f"model {args.model!r}: production v{health['production']}"
          + (f", canary v{canary['version']} at {canary['traffic_percent']:g}%" if canary else "")
          + f"; {args.rows} row(s) per request; Python {sys.version.split()[0]}\n")
    print("| run | requests | errors | p50 (ms) | p99 (ms) | requests/s |")
    print("|---|--:|--:|--:|--:|--:|")
    for label, r in (("sequential (1 client)", sequential), (f"concurrent ({args.clients} clients)", concurrent)):
        print(f"| {label} | {r['n']:,} | {r['errors']} | {r['p50']:.2f} | {r['p99']:.2f} | {r['rps']:,.0f} |")
    return 1 if sequential["errors"] or concurrent["errors"] else 0


if __name__ == "__main__":
    sys.exit(main())
