"""Helpers of the serving tests: tiny registries written with the registry helpers, a server in
a thread (uvicorn on 127.0.0.1), `dagsmith serve` in a subprocess, an HTTP client
(http.client, keep-alive) and a Prometheus text parser."""

from __future__ import annotations

import http.client
import json
import os
import re
import signal
import socket
import subprocess
import sys
import threading
import time
from contextlib import contextmanager
from pathlib import Path

import numpy as np
import pandas as pd

from dagsmith.runtime import registry
from dagsmith.runtime.data import encode
from dagsmith.runtime.store import LocalStore
from dagsmith.serving.server import make_server

CLF_ENCODING = {"features": ["x1", "x2", "color"], "categorical": ["color"], "boolean": [], "duration": []}
REG_ENCODING = {"features": ["x", "promo"], "categorical": [], "boolean": ["promo"], "duration": []}


HERE = Path(__file__).resolve().parent
DAGSMITH = str(Path(sys.executable).parent / "dagsmith")


class Exploding:
    """An 'estimator' whose predict always fails (an internal prediction error)."""

    def predict(self, X):
        raise RuntimeError("boom")


class Sleepy:
    """An 'estimator' whose predict takes `seconds` (a slow model: requests in flight at a
    shutdown). A `dagsmith serve` subprocess unpickles it from this module: see Served(env=)."""

    def __init__(self, seconds: float):
        self.seconds = seconds

    def predict(self, X):
        time.sleep(self.seconds)
        return np.zeros(len(X), dtype=int)


def sleepy_registry(root: Path, seconds: float, model: str = "slow") -> LocalStore:
    """v1 (production, no canary): a model whose predict sleeps `seconds`."""
    from sklearn.linear_model import LogisticRegression

    store = LocalStore(Path(root))
    good = clf_model(LogisticRegression(), clf_frame())
    write_version(store, model, 1, [(None, {**good, "estimator": Sleepy(seconds)})])
    registry.write_aliases(store, model, {"production": 1, "canary": None, "history": []})
    return store


def write_version(store: LocalStore, model: str, version: int, models: list, *, partition_by=None, task="classifier",
                  inherited: list | None = None) -> None:
    """models: [(partition, model dict)]; inherited: [{partition, file, version}] (kept from an earlier version)."""
    import joblib

    staging = store.stage(registry.version_key(model, version))
    entries = []
    for n, (partition, m) in enumerate(models):
        name = f"models/{n}.joblib" if partition_by else "model.joblib"
        joblib.dump(m, staging.path(name))
        entries.append({"partition": partition, "file": name})
    entries += inherited or []
    staging.write_json("model.json", {"model_name": model, "version": version, "partition_by": partition_by,
                                      "task": task, "target": "y", "source": "test", "models": entries})
    staging.write_json("metrics.json", {})
    store.commit(staging)


def clf_frame(n: int = 300, seed: int = 0) -> pd.DataFrame:
    rng = np.random.default_rng(seed)
    frame = pd.DataFrame({
        "x1": rng.normal(size=n).round(3),
        "x2": rng.normal(size=n).round(3),
        "color": rng.choice(["red", "green", "blue"], size=n),
    })
    frame["y"] = ((frame.x1 + (frame.color == "red") * 0.8 + rng.normal(scale=0.5, size=n)) > 0.4).astype(int)
    return frame


def clf_model(estimator, frame: pd.DataFrame) -> dict:
    X = encode(frame, CLF_ENCODING)
    estimator.fit(X, frame["y"])
    return {"estimator": estimator, "columns": list(X.columns), "encoding": CLF_ENCODING, "target": "y",
            "task": "classifier", "classes": [0, 1], "partition": None, "partition_by": None, "dropped": {}}


def classifier_registry(root: Path, model: str = "clf", canary_percent=10) -> LocalStore:
    """v1 LogisticRegression (production), v2 DecisionTree (canary at canary_percent; None: no canary)."""
    from sklearn.linear_model import LogisticRegression
    from sklearn.tree import DecisionTreeClassifier

    store = LocalStore(Path(root))
    frame = clf_frame()
    write_version(store, model, 1, [(None, clf_model(LogisticRegression(), frame))])
    write_version(store, model, 2, [(None, clf_model(DecisionTreeClassifier(max_depth=3, random_state=0), frame))])
    canary = {"version": 2, "traffic_percent": canary_percent} if canary_percent is not None else None
    registry.write_aliases(store, model, {"production": 1, "canary": canary, "history": []})
    return store


def rows_of(frame: pd.DataFrame, n: int, columns=("x1", "x2", "color")) -> list[dict]:
    return [{c: (v.item() if hasattr(v, "item") else v) for c, v in row.items()}
            for row in frame[list(columns)].head(n).to_dict("records")]


def reg_frame(region: str, slope: float, n: int = 60, seed: int = 1) -> pd.DataFrame:
    rng = np.random.default_rng(seed)
    frame = pd.DataFrame({"x": rng.uniform(0, 10, size=n).round(2), "promo": rng.choice([True, False], size=n)})
    frame["y"] = slope * frame.x + 5 * frame.promo + rng.normal(scale=0.1, size=n)
    frame["region"] = region
    return frame


def reg_model(region: str, slope: float) -> dict:
    from sklearn.linear_model import LinearRegression

    frame = reg_frame(region, slope)
    X = encode(frame, REG_ENCODING)
    estimator = LinearRegression().fit(X, frame["y"])
    return {"estimator": estimator, "columns": list(X.columns), "encoding": REG_ENCODING, "target": "y",
            "task": "regressor", "partition": region, "partition_by": "region", "dropped": {}}


def partitioned_registry(root: Path, model: str = "demand") -> LocalStore:
    """Forecast-like: one regressor per region. v1: north, south. v2 (production): north
    retrained, west new, south kept from v1 (an inherited entry)."""
    store = LocalStore(Path(root))
    write_version(store, model, 1, [("north", reg_model("north", 1.0)), ("south", reg_model("south", 3.0))],
                  partition_by="region", task="regressor")
    write_version(store, model, 2, [("north", reg_model("north", 2.0)), ("west", reg_model("west", -1.0))],
                  partition_by="region", task="regressor",
                  inherited=[{"partition": "south", "file": "models/1.joblib", "version": 1}])
    registry.write_aliases(store, model, {"production": 2, "canary": None, "history": [1]})
    return store


@contextmanager
def running(root, model: str, **kwargs):
    """A real server (uvicorn) on 127.0.0.1:<free port> in a thread; yields it (server.url,
    server.app, server.logs: what the ServingApp logged)."""
    logs = []
    kwargs.setdefault("reload_interval", 0.05)
    server = make_server(root, model, "127.0.0.1", 0, log=logs.append, **kwargs)
    server.logs = logs
    started = threading.Event()
    thread = threading.Thread(target=server.serve_forever, kwargs={"ready": started.set}, daemon=True)
    thread.start()
    try:
        assert started.wait(30), "the server did not start"
        yield server
    finally:
        server.stop()
        thread.join(30)
        assert not thread.is_alive(), "the server did not stop"


def raw(url: str, data: bytes, timeout: float = 5) -> tuple[int, dict, object]:
    """Send raw bytes on a new connection, read until the server closes it; -> (status, headers
    with lowercase names, the body: parsed when JSON, else text)."""
    host, port = url.removeprefix("http://").split(":")
    with socket.create_connection((host, int(port)), timeout=timeout) as sock:
        sock.sendall(data)
        chunks = b""
        while True:
            chunk = sock.recv(65536)
            if not chunk:
                break
            chunks += chunk
    head, _, body = chunks.partition(b"\r\n\r\n")
    lines = head.decode().split("\r\n")
    headers = {name.lower(): value for name, value in (line.split(": ", 1) for line in lines[1:])}
    payload = json.loads(body) if headers.get("content-type", "").startswith("application/json") else body.decode()
    return int(lines[0].split()[1]), headers, payload


class Served:
    """`dagsmith serve MODEL --port 0 [args]` in a subprocess; .url from its first line. The
    subprocess can unpickle the test estimators of this module (PYTHONPATH)."""

    def __init__(self, workdir, model: str, *args: str, timeout: float = 120):
        env = {**os.environ, "PYTHONPATH": os.pathsep.join(filter(None, [str(HERE), os.environ.get("PYTHONPATH")]))}
        self.process = subprocess.Popen([DAGSMITH, "serve", model, "--workdir", str(workdir), "--port", "0", *args],
                                        stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, env=env)
        line = _readline(self.process, timeout)
        assert "serving model" in line, line + self.process.stderr.read()
        self.first_line = line
        self.url = line.split(" on ")[-1].strip()

    def send(self, signum=signal.SIGINT) -> None:
        self.process.send_signal(signum)

    def stop(self, signum=signal.SIGINT, timeout: float = 60) -> tuple[int, str, str]:
        """Ctrl-C (or signum; None: no signal, the process was sent one already); -> (exit code,
        the rest of stdout, stderr)."""
        if signum is not None and self.process.poll() is None:
            self.process.send_signal(signum)
        try:
            out, err = self.process.communicate(timeout=timeout)
        except subprocess.TimeoutExpired:
            self.process.kill()
            out, err = self.process.communicate()
        return self.process.returncode, out, err


def _readline(process: subprocess.Popen, timeout: float) -> str:
    """The first line of stdout, or "" after `timeout` seconds (the process is then killed)."""
    lines = []
    reader = threading.Thread(target=lambda: lines.append(process.stdout.readline()), daemon=True)
    reader.start()
    reader.join(timeout)
    if not lines:
        process.kill()
        return ""
    return lines[0]


class Client:
    """One keep-alive connection (http.client reconnects when the server closed it)."""

    def __init__(self, url: str, timeout: float = 10):
        host, port = url.removeprefix("http://").split(":")
        self.conn = http.client.HTTPConnection(host, int(port), timeout=timeout)

    def request(self, method: str, path: str, body=None, headers: dict | None = None):
        if body is not None and not isinstance(body, (bytes, str)):
            body = json.dumps(body)
        self.conn.request(method, path, body=body, headers=headers or {})
        response = self.conn.getresponse()
        raw = response.read()
        kind = response.getheader("Content-Type", "")
        payload = json.loads(raw) if kind.startswith("application/json") else raw.decode("utf-8")
        return response.status, response, payload

    def predict(self, rows, headers=None):
        return self.request("POST", "/predict", {"rows": rows}, headers)

    def close(self):
        self.conn.close()


SAMPLE = re.compile(r'^([a-zA-Z_:][a-zA-Z0-9_:]*)(\{(?:[a-zA-Z_][a-zA-Z0-9_]*="(?:[^"\\]|\\.)*",?)*\})? (\S+)$')
LABEL = re.compile(r'([a-zA-Z_][a-zA-Z0-9_]*)="((?:[^"\\]|\\.)*)"')


def parse_prometheus(text: str) -> tuple[dict, list]:
    """-> ({family: type}, [(name, {label: value}, float)]); asserts the text format as it goes."""
    assert text.endswith("\n")
    types, helps, samples = {}, set(), []
    for line in text.splitlines():
        assert line, "no blank lines"
        if line.startswith("# HELP "):
            name = line.split()[2]
            assert name not in helps
            helps.add(name)
        elif line.startswith("# TYPE "):
            _, _, name, kind = line.split()
            assert kind in ("counter", "gauge", "histogram", "summary", "untyped")
            assert name not in types, f"TYPE {name} twice"
            types[name] = kind
        else:
            assert not line.startswith("#"), line
            match = SAMPLE.match(line)
            assert match, f"not a sample line: {line!r}"
            name, labels, value = match.group(1), match.group(2) or "", match.group(3)
            family = re.sub(r"_(bucket|sum|count)$", "", name) if re.sub(r"_(bucket|sum|count)$", "", name) in types \
                and types[re.sub(r"_(bucket|sum|count)$", "", name)] == "histogram" else name
            assert family in types, f"sample {name} before its TYPE line"
            samples.append((name, dict(LABEL.findall(labels)), float(value)))
    return types, samples
