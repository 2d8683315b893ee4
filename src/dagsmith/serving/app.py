"""What the server serves, without the HTTP: the deployment, routing, predictions, reloading.

A `Deployment` is an immutable snapshot: the production version's models, the canary's (if
any) and its traffic percent. Each request takes the current snapshot once (one attribute
read) and uses it to the end, so a reload never changes the models under a running request.

Reloading: a watcher thread looks at aliases.json every `reload_interval` seconds (a `stat`
locally: inode, mtime, size; the file's content on other stores). When it changed, the new
snapshot is built first (every model of the new versions loaded, reusing the models of
versions already loaded: a version never changes once written), then the reference is swapped.
If building fails (e.g. aliases.json names a missing version), the old snapshot keeps serving
and the error is logged and shown by /health.

Routing: with a canary, a request goes to it with probability traffic_percent / 100 (one shared
random generator under a lock). A request with an `X-Request-Id` header is routed by a hash of
that id instead, so the same id always gets the same version (sticky) while the canary and its
percent stay the same.
"""

from __future__ import annotations

import hashlib
import json
import math
import os
import random
import sys
import threading
import time
from dataclasses import dataclass, field

from ..errors import DagsmithError
from ..runtime import registry
# The row -> model input -> prediction path, shared with dagsmith.load_model and the predict step.
from ..runtime.scoring import (  # noqa: F401 - PredictionFailed, RequestError: serving's API
    PredictionFailed, RequestError, VersionModels, json_type, load_version, predict_version,
)
from ..runtime.store import LocalStore, Store
from .jsonbody import loads
from .metrics import Metrics


class ServingError(DagsmithError):
    """The model cannot be served / the aliases cannot be changed (exit 2)."""

    exit_code = 2


@dataclass(frozen=True)
class Deployment:
    production: VersionModels
    canary: VersionModels | None
    traffic_percent: float  # 0 when there is no canary
    signature: object
    aliases: dict = field(default_factory=dict)

    def describe(self) -> str:
        text = f"production v{self.production.version}"
        if self.canary is not None:
            text += f", canary v{self.canary.version} at {self.traffic_percent:g}%"
        return text


def _log_stderr(message: str) -> None:
    print(f"{time.strftime('%H:%M:%S')} {message}", file=sys.stderr, flush=True)


class ServingApp:
    def __init__(self, store: Store, model: str, *, reload_interval: float = 0.5, seed=None, log=_log_stderr,
                 metrics_values=None):
        self.store = store
        self.model = model
        self.reload_interval = reload_interval
        self.log = log
        self.metrics = Metrics(model, metrics_values)
        self.reload_error: str | None = None
        self._failed_signature = object()
        self._load_lock = threading.Lock()
        self._rng = random.Random(seed)
        self._rng_lock = threading.Lock()
        self._stop = threading.Event()
        self._watcher: threading.Thread | None = None
        self.deployment: Deployment = self._load(None)

    # --- loading ------------------------------------------------------------------------------

    def _signature(self):
        key = registry.aliases_key(self.model)
        if isinstance(self.store, LocalStore):
            try:
                st = os.stat(self.store.root / key)
            except FileNotFoundError:
                return None
            return (st.st_ino, st.st_mtime_ns, st.st_size)
        return json.dumps(self.store.read_json(key), sort_keys=True)

    def _load(self, current: Deployment | None) -> Deployment:
        signature = self._signature()
        if self.store.read_json(registry.aliases_key(self.model)) is None:
            raise ServingError(f"model {self.model!r} is not in the registry of {self.store.uri} "
                               f"(no registry/{self.model}/aliases.json: has a deploy step run with this workdir?)")
        aliases = registry.read_aliases(self.store, self.model)
        if aliases["production"] is None:
            raise ServingError(f"model {self.model!r} has no production version in {self.store.uri}")
        loaded = {}
        if current is not None:
            loaded = {current.production.version: current.production}
            if current.canary is not None:
                loaded[current.canary.version] = current.canary
        production = self._version(int(aliases["production"]), loaded)
        canary, percent = None, 0.0
        alias = aliases.get("canary")
        if alias and alias.get("version") is not None and int(alias["version"]) != production.version:
            percent = float(alias.get("traffic_percent") or 0)
            if not math.isfinite(percent):
                percent = 0.0
            percent = min(max(percent, 0.0), 100.0)
            canary = self._version(int(alias["version"]), loaded)
        return Deployment(production, canary, percent if canary is not None else 0.0, signature, aliases)

    def _version(self, version: int, loaded: dict) -> VersionModels:
        if version in loaded:
            return loaded[version]
        try:
            return load_version(self.store, self.model, version)
        except DagsmithError as exc:
            raise ServingError(f"cannot load model {self.model!r} version {version}: {exc}") from None

    def check_reload(self) -> bool:
        """Apply a change of aliases.json, if any; True when the snapshot changed."""
        try:
            signature = self._signature()
        except Exception:  # e.g. a transient store error: try again at the next tick
            return False
        current = self.deployment
        if signature == current.signature or signature == self._failed_signature:
            return False
        with self._load_lock:
            current = self.deployment
            if signature == current.signature:
                return False
            try:
                new = self._load(current)
            except Exception as exc:  # keep serving the old snapshot
                self._failed_signature = signature
                self.reload_error = f"{type(exc).__name__}: {exc}" if not isinstance(exc, DagsmithError) else str(exc)
                self.log(f"reload of {self.model!r} aliases failed, still serving {current.describe()}: {self.reload_error}")
                return False
            self.deployment = new  # one reference swap: requests in flight keep their snapshot
            self.reload_error = None
            self.metrics.reloaded()
            if new.describe() != current.describe():
                self.log(f"{self.model}: aliases changed: {current.describe()} -> {new.describe()}")
            return True

    def start_watching(self) -> None:
        if self._watcher is not None or self.reload_interval <= 0:
            return
        self._stop.clear()
        self._watcher = threading.Thread(target=self._watch, name="dagsmith-alias-watcher", daemon=True)
        self._watcher.start()

    def stop_watching(self) -> None:
        self._stop.set()
        if self._watcher is not None:
            self._watcher.join(timeout=5)
            self._watcher = None

    def _watch(self) -> None:
        while not self._stop.wait(self.reload_interval):
            self.check_reload()

    # --- routing ------------------------------------------------------------------------------

    def route(self, deployment: Deployment, request_id: str | None = None) -> VersionModels:
        if deployment.canary is None or deployment.traffic_percent <= 0:
            return deployment.production
        if request_id:
            digest = hashlib.sha256(f"{deployment.canary.version}:{request_id}".encode("utf-8", "replace")).digest()
            draw = int.from_bytes(digest[:8], "big") / 2.0**64
        else:
            with self._rng_lock:
                draw = self._rng.random()
        return deployment.canary if draw * 100.0 < deployment.traffic_percent else deployment.production

    def health(self) -> dict:
        d = self.deployment
        return {
            "status": "ok",
            "model": self.model,
            "production": d.production.version,
            "canary": {"version": d.canary.version, "traffic_percent": d.traffic_percent} if d.canary else None,
            "partition_by": d.production.partition_by,
            "reload_error": self.reload_error,
        }

    def render_metrics(self) -> str:
        d = self.deployment
        return self.metrics.render(d.production.version, d.canary.version if d.canary else None, d.traffic_percent)

    # --- predictions --------------------------------------------------------------------------

    @staticmethod
    def parse_rows(body: bytes) -> list[dict]:
        """{"rows": [{...}, ...]} or [{...}, ...] -> the rows; RequestError 400 otherwise.

        Numbers no model can take (NaN, Infinity, 1e999, a 4,000-digit integer) are refused
        where a row uses them, with the row and column (`check_value` in predict)."""
        data = loads(body)  # bounded: depth, NaN/Infinity, huge integers (jsonbody.py)
        if isinstance(data, dict):
            if "rows" not in data:
                raise RequestError(400, 'expected a JSON object {"rows": [{column: value, ...}, ...]} '
                                        f'or a list of rows; got an object with keys {sorted(data)[:10]}')
            rows = data["rows"]
        elif isinstance(data, list):
            rows = data
        else:
            raise RequestError(400, 'expected {"rows": [{column: value, ...}, ...]} or a list of rows, '
                                    f"got a JSON {json_type(data)}")
        if not isinstance(rows, list):
            raise RequestError(400, f'"rows" must be a list of objects, got a JSON {json_type(rows)}')
        for i, row in enumerate(rows):
            if not isinstance(row, dict):
                raise RequestError(400, f"rows[{i}] must be an object {{column: value}}, got a JSON {json_type(row)}")
        return rows

    def predict(self, version: VersionModels, rows: list[dict]) -> dict:
        result = {"model": self.model, "version": version.version, "predictions": []}
        if not rows:
            return result
        predictions, probabilities = predict_version(version, rows)  # runtime/scoring.py: shared with load_model
        result["predictions"] = predictions
        if probabilities is not None:
            result["probabilities"] = probabilities
        return result
