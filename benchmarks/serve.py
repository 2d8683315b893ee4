"""Serving latency and throughput of `dagsmith serve`, printed as a Markdown table.

    python benchmarks/serve.py                          # builds the churn example's registry first
    python benchmarks/serve.py --workdir DIR --model M  # an existing registry
    python benchmarks/serve.py --requests 1000 --rows 1 --workers 2

The server is the real CLI (`dagsmith serve MODEL --port 0`) in its own process on 127.0.0.1.
The clients are coroutines of this process (asyncio, raw HTTP/1.1 on sockets: a client costs
far less CPU than a thread with http.client, which matters on a 2-core machine). Each level
sends N requests, shared by C concurrent clients:

    1 client, new connection each      one request at a time, connect + request + close
    50 clients, keep-alive             each client keeps one connection for its requests
    50 clients, new connection each    every request on a new connection (Connection: close)
    200 clients, new connection each

Latency is measured per request by the client, from the connect (new connection) or from the
send (keep-alive) to the last byte of the answer; requests/s = N / wall time of the level. An
error is any request that does not get a 200 (refused, reset, timed out after 60 s, or another
status). "listen overflows" is the kernel's TcpExtListenOverflows counter over the level
(/proc/net/netstat: system-wide, so other programs' sockets count too): connections dropped
because the listen queue was full. Before timing, 50 warm-up requests.

Without --workdir the churn example is run twice into a temporary workdir (production v1 and a
10% canary v2), so the numbers include canary routing. benchmarks/serve_vs_mlflow.py runs the
same levels against `mlflow models serve` too.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import shutil
import signal
import subprocess
import sys
import tempfile
import threading
import time
from pathlib import Path

REPO = Path(__file__).resolve().parent.parent
DAGSMITH = str(Path(sys.executable).parent / "dagsmith")
REQUEST_TIMEOUT = 60.0
LEVEL_TIMEOUT = 600.0

# (label, clients, keep-alive)
LEVELS = (
    ("1 client, new connection each", 1, False),
    ("50 clients, keep-alive", 50, True),
    ("50 clients, new connection each", 50, False),
    ("200 clients, new connection each", 200, False),
)


def churn_registry(tmp: Path, runs: int = 2) -> Path:
    """The churn example run `runs` times into tmp/work (1: production v1; 2: and a canary v2)."""
    example = tmp / "churn"
    example.mkdir()
    for name in ("pipeline.yaml", "make_data.py"):
        shutil.copy(REPO / "examples" / "churn" / name, example / name)
    subprocess.run([sys.executable, "make_data.py"], cwd=example, check=True, capture_output=True)
    workdir = tmp / "work"
    for n in range(runs):
        # the second run with another lookback: another model (the same one would deploy nothing: "unchanged")
        extra = ["--param", f"lookback_days={30 - n}"] if n else []
        result = subprocess.run([DAGSMITH, "run", "pipeline.yaml", "--workdir", str(workdir), *extra], cwd=example,
                                capture_output=True, text=True)
        if result.returncode:
            raise SystemExit(f"dagsmith run failed:\n{result.stderr[-3000:]}")
    return workdir


def production_model(workdir: Path, model: str) -> tuple[dict, dict]:
    """-> (the registry's model dict of the production version, its version index)."""
    from dagsmith.runtime import registry
    from dagsmith.runtime.store import LocalStore

    store = LocalStore(workdir)
    index = registry.version_index(store, model, registry.resolve(store, model, "production"))
    entry = index["models"][0]
    return registry.load_model(store, model, index["version"], entry.get("partition")), {**index, "entry": entry}


def sample_rows(workdir: Path, model: str, n: int) -> list[dict]:
    m, index = production_model(workdir, model)
    rows = []
    for i in range(n):
        row = {}
        for j, column in enumerate(m["encoding"]["features"]):
            row[column] = "x" if column in m["encoding"]["categorical"] else float((i + j) % 9)
        if index.get("partition_by"):
            row[index["partition_by"]] = index["entry"]["partition"]
        rows.append(row)
    return rows


# --- the load generator -----------------------------------------------------------------------

def http_request(host: str, port: int, path: str, body: bytes, keep_alive: bool) -> bytes:
    head = (f"POST {path} HTTP/1.1\r\nHost: {host}:{port}\r\nContent-Type: application/json\r\n"
            f"Content-Length: {len(body)}\r\n" + ("" if keep_alive else "Connection: close\r\n") + "\r\n")
    return head.encode() + body


async def read_response(reader: asyncio.StreamReader) -> tuple[int, bytes, bool]:
    """-> (status, body, the server keeps the connection open)."""
    head = await reader.readuntil(b"\r\n\r\n")
    lines = head.decode("latin-1").split("\r\n")
    status = int(lines[0].split()[1])
    headers = {}
    for line in lines[1:]:
        if ":" in line:
            name, value = line.split(":", 1)
            headers[name.strip().lower()] = value.strip()
    if "content-length" in headers:
        body = await reader.readexactly(int(headers["content-length"]))
    elif "chunked" in headers.get("transfer-encoding", "").lower():
        parts = []
        while True:
            size = int((await reader.readuntil(b"\r\n")).split(b";")[0], 16)
            parts.append(await reader.readexactly(size + 2))
            if size == 0:
                break
        body = b"".join(p[:-2] for p in parts)
    else:
        body = await reader.read()
    return status, body, headers.get("connection", "").lower() != "close"


async def _client(host, port, payload: bytes, keep_alive: bool, next_request, latencies: list, errors: dict):
    reader = writer = None
    try:
        while next_request():
            started = time.perf_counter()
            try:
                if writer is None:
                    reader, writer = await asyncio.wait_for(asyncio.open_connection(host, port), REQUEST_TIMEOUT)
                writer.write(payload)
                status, _, open_ = await asyncio.wait_for(read_response(reader), REQUEST_TIMEOUT)
                latencies.append(time.perf_counter() - started)
                if status != 200:
                    errors[f"HTTP {status}"] = errors.get(f"HTTP {status}", 0) + 1
                if not (keep_alive and open_):
                    writer.close()
                    reader = writer = None
            except (OSError, asyncio.IncompleteReadError, asyncio.LimitOverrunError, asyncio.TimeoutError,
                    ValueError, IndexError) as exc:
                latencies.append(time.perf_counter() - started)
                kind = type(exc).__name__
                errors[kind] = errors.get(kind, 0) + 1
                if writer is not None:
                    writer.close()
                reader = writer = None
    finally:
        if writer is not None:
            writer.close()


async def _level(host, port, path, body, requests, clients, keep_alive):
    latencies, errors = [], {}
    remaining = [requests]

    def next_request() -> bool:
        if remaining[0] <= 0:
            return False
        remaining[0] -= 1
        return True

    payload = http_request(host, port, path, body, keep_alive)
    started = time.perf_counter()
    await asyncio.wait_for(asyncio.gather(*(_client(host, port, payload, keep_alive, next_request, latencies, errors)
                                            for _ in range(clients))), LEVEL_TIMEOUT)
    return time.perf_counter() - started, latencies, errors


def listen_overflows() -> int | None:
    """TcpExt ListenOverflows of the whole machine (Linux), or None."""
    try:
        lines = Path("/proc/net/netstat").read_text().splitlines()
    except OSError:
        return None
    for names, values in zip(lines[::2], lines[1::2]):
        if names.startswith("TcpExt:"):
            table = dict(zip(names.split()[1:], values.split()[1:]))
            return int(table.get("ListenOverflows", 0))
    return None


def group_cpu_seconds(pgid: int) -> float | None:
    """User + system CPU seconds of the processes of process group `pgid` that are alive now
    (Linux; None elsewhere). A server started by Process is its own group, workers included."""
    total, found = 0.0, False
    tick = os.sysconf("SC_CLK_TCK")
    for stat in Path("/proc").glob("[0-9]*/stat"):
        try:
            fields = stat.read_text().rsplit(")", 1)[1].split()
        except OSError:  # gone meanwhile
            continue
        if int(fields[2]) == pgid:  # fields after the name: state, ppid, pgrp, ...
            total += (int(fields[11]) + int(fields[12])) / tick
            found = True
    return total if found else None


def percentile(ordered: list[float], q: float) -> float:
    return ordered[min(len(ordered) - 1, max(0, int(round(q * len(ordered))) - 1))]


def measure(url: str, body: bytes, requests: int, clients: int, keep_alive: bool = True, path: str = "/predict") -> dict:
    host, port = url.removeprefix("http://").rsplit(":", 1)
    before = listen_overflows()
    wall, latencies, errors = asyncio.run(_level(host, int(port), path, body, requests, clients, keep_alive))
    after = listen_overflows()
    ordered = sorted(latencies)
    return {
        "n": len(ordered),
        "errors": sum(errors.values()),
        "error_kinds": errors,
        "p50": percentile(ordered, 0.50) * 1000,
        "p99": percentile(ordered, 0.99) * 1000,
        "rps": len(ordered) / wall,
        "overflows": None if before is None or after is None else after - before,
    }


# --- the server -------------------------------------------------------------------------------

class Process:
    """A server command in its own process group; .url from the line that announces it."""

    def __init__(self, command: list[str], find_url, timeout: float = 180, env=None):
        self.process = subprocess.Popen(command, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True,
                                        start_new_session=True, env=env)
        self.output: list[str] = []
        found = threading.Event()
        self.url = None

        def read():
            for line in self.process.stdout:
                self.output.append(line)
                if self.url is None and (url := find_url(line)):
                    self.url = url
                    found.set()
            found.set()

        threading.Thread(target=read, daemon=True).start()
        if not found.wait(timeout) or self.url is None:
            self.stop()
            raise SystemExit(f"{command[0]} did not start:\n{''.join(self.output)[-3000:]}")

    def stop(self, timeout: float = 60) -> None:
        if self.process.poll() is None:
            try:
                os.killpg(self.process.pid, signal.SIGTERM)
                self.process.wait(timeout)
            except subprocess.TimeoutExpired:
                os.killpg(self.process.pid, signal.SIGKILL)
                self.process.wait(10)
            except ProcessLookupError:
                pass


def dagsmith_server(workdir: Path, model: str, workers: int = 1) -> Process:
    return Process([DAGSMITH, "serve", model, "--workdir", str(workdir), "--port", "0", "--workers", str(workers)],
                   lambda line: line.split(" on ")[-1].strip() if line.startswith("serving model") else None)


def health(url: str) -> dict:
    import urllib.request

    with urllib.request.urlopen(url + "/health", timeout=10) as response:
        return json.loads(response.read())


def load_average() -> str:
    try:
        return " ".join(Path("/proc/loadavg").read_text().split()[:3])
    except OSError:
        return "?"


def table(rows: list[tuple[str, dict]]) -> str:
    out = ["| level | requests | errors | p50 (ms) | p99 (ms) | requests/s | listen overflows |",
           "|---|--:|--:|--:|--:|--:|--:|"]
    for label, r in rows:
        out.append(f"| {label} | {r['n']:,} | {r['errors']} | {r['p50']:.1f} | {r['p99']:.1f} | {r['rps']:,.0f} | "
                   f"{'?' if r['overflows'] is None else r['overflows']} |")
    return "\n".join(out)


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--workdir", type=Path, help="an existing workdir with a registry (default: build the churn one)")
    parser.add_argument("--model", default="churn")
    parser.add_argument("--requests", type=int, default=1000, help="requests per level")
    parser.add_argument("--rows", type=int, default=1, help="rows per request")
    parser.add_argument("--workers", type=int, default=1, help="dagsmith serve --workers")
    args = parser.parse_args()

    with tempfile.TemporaryDirectory(prefix="dagsmith-serve-bench-") as tmp:
        workdir = args.workdir or churn_registry(Path(tmp))
        body = json.dumps({"rows": sample_rows(workdir, args.model, args.rows)}).encode()
        load_before = load_average()
        server = dagsmith_server(workdir, args.model, args.workers)
        try:
            measure(server.url, body, 50, 1)  # warm-up
            results = [(label, measure(server.url, body, args.requests, clients, keep_alive))
                       for label, clients, keep_alive in LEVELS]
            served = health(server.url)
        finally:
            server.stop()

    canary = served["canary"]
    print(f"model {args.model!r}: production v{served['production']}"
          + (f", canary v{canary['version']} at {canary['traffic_percent']:g}%" if canary else "")
          + f"; {args.rows} row(s) per request; --workers {args.workers}; Python {sys.version.split()[0]}; "
            f"{os.cpu_count()} CPUs\n")
    print(table(results))
    print(f"\nload average (1, 5, 15 min) before: {load_before}; after: {load_average()}")
    for label, r in results:
        if r["error_kinds"]:
            print(f"errors at {label}: {r['error_kinds']}")
    return 1 if any(r["errors"] for _, r in results) else 0


if __name__ == "__main__":
    sys.exit(main())
