"""Helpers of the serving tests: tiny registries written with the registry helpers, a server in
a thread, an HTTP client (http.client, keep-alive) and a Prometheus text parser."""

from __future__ import annotations

import http.client
import json
import re
import threading
from contextlib import contextmanager
from pathlib import Path

import numpy as np
import pandas as pd

from dagsmith.runtime import registry
from dagsmith.runtime.data import encode
from dagsmith.runtime.store import LocalStore
from dagsmith.serving.server import close, make_server

CLF_ENCODING = {"features": ["x1", "x2", "color"], "categorical": ["color"], "boolean": [], "duration": []}
REG_ENCODING = {"features": ["x", "promo"], "categorical": [], "boolean": ["promo"], "duration": []}


class Exploding:
    """An 'estimator' whose predict always fails (an internal prediction error)."""

    def predict(self, X):
        raise RuntimeError("boom")


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
    """A real server on 127.0.0.1:<free port> in a thread; yields it (server.url, server.app)."""
    logs = []
    kwargs.setdefault("reload_interval", 0.05)
    server = make_server(root, model, "127.0.0.1", 0, log=logs.append, **kwargs)
    server.logs = logs
    thread = threading.Thread(target=server.serve_forever, kwargs={"poll_interval": 0.05}, daemon=True)
    thread.start()
    try:
        yield server
    finally:
        server.shutdown()
        close(server)
        thread.join(5)


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
