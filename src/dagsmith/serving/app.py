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
from ..runtime.data import json_scalar, model_input, partition_key
from ..runtime.store import LocalStore, Store
from .jsonbody import BadNumber, RequestError, check_value, loads
from .metrics import Metrics


class ServingError(DagsmithError):
    """The model cannot be served / the aliases cannot be changed (exit 2)."""

    exit_code = 2


class PredictionFailed(Exception):
    """The model raised while predicting: a 500, counted in dagsmith_prediction_errors_total."""


@dataclass(frozen=True)
class VersionModels:
    version: int
    partition_by: str | None
    task: str | None
    models: dict  # partition key (partition_key(value); None when unpartitioned) -> model dict
    plans: dict = field(default_factory=dict)  # the same keys -> ModelPlan (built on first use when absent)

    def model_for(self, key):
        return self.models.get(key)

    def plan_for(self, key) -> ModelPlan | None:
        plan = self.plans.get(key)
        if plan is None:
            model = self.models.get(key)
            if model is None:
                return None
            plan = self.plans[key] = ModelPlan(model)
        return plan


class ModelPlan:
    """What a request needs of one model, worked out once when the model is loaded.

    - `features`: the feature columns a row must have.
    - `array_estimator`: when the training encoding is the identity (numeric features only, in
      the order of the model's columns), an estimator that takes the rows as one numpy array
      (n_rows x n_features, in that column order) and answers exactly as `estimator` does for
      the DataFrame of the same values. A fitted scikit-learn estimator checks the column
      names of a DataFrame against `feature_names_in_` on every call, at about half the cost
      of predicting one row with 150 trees; here the order is checked once, and the array goes
      to a shallow copy of the estimator without `feature_names_in_` (the same fitted trees
      and coefficients, shared, not copied). Kept only when a probe gives the same predictions
      and probabilities as the DataFrame path, with no warning. None: the DataFrame path.
    - `classes`: the keys of the `probabilities` objects (None: no predict_proba).
    """

    __slots__ = ("model", "estimator", "features", "array_estimator", "proba", "classes")

    def __init__(self, model: dict):
        self.model = model
        self.estimator = model["estimator"]
        self.features = list(model["encoding"]["features"])
        self.proba = model.get("task") == "classifier" and hasattr(self.estimator, "predict_proba")
        self.classes = None
        if self.proba:
            try:
                classes = getattr(self.estimator, "classes_", None)
                if classes is not None:
                    self.classes = [partition_key(json_scalar(c)) for c in classes]
            except Exception:  # worked out per request instead (as before)
                self.classes = None
        self.array_estimator = _array_estimator(model, self.features)


def _array_estimator(model: dict, features: list[str]):
    """The estimator to give numpy arrays to (see ModelPlan), or None."""
    encoding = model["encoding"]
    if encoding.get("categorical") or encoding.get("boolean") or encoding.get("duration") \
            or list(model["columns"]) != features or not features:
        return None
    estimator = model["estimator"]
    if not type(estimator).__module__.startswith("sklearn."):
        return None  # another library's estimator (or a test's): as it was trained, a DataFrame
    names = getattr(estimator, "feature_names_in_", None)
    if names is not None:
        if "feature_names_in_" not in vars(estimator) or [str(n) for n in names] != features:
            return None  # a property (a meta-estimator such as a Pipeline) or another order
        fast = object.__new__(type(estimator))
        fast.__dict__.update(vars(estimator))
        del fast.feature_names_in_
    else:
        fast = estimator
    import warnings

    import numpy as np
    import pandas as pd

    proba = model.get("task") == "classifier" and hasattr(estimator, "predict_proba")
    n = len(features)
    probes = (np.zeros((1, n)), np.arange(1, 2 * n + 1, dtype=np.float64).reshape(2, n) * 0.5 - 1)
    try:
        for array in probes:
            frame = pd.DataFrame(array, columns=features)
            with warnings.catch_warnings():
                warnings.simplefilter("ignore")
                expected = (np.asarray(estimator.predict(frame)), estimator.predict_proba(frame) if proba else None)
            with warnings.catch_warnings(record=True) as caught:
                warnings.simplefilter("always")
                got = (np.asarray(fast.predict(array)), fast.predict_proba(array) if proba else None)
            if caught or not np.array_equal(got[0], expected[0]) \
                    or (proba and not np.array_equal(got[1], expected[1])):
                return None
    except Exception:  # the estimator wants a DataFrame (or cannot predict these values): the general path
        return None
    return fast


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
            index = registry.version_index(self.store, self.model, version)
        except DagsmithError as exc:
            raise ServingError(f"cannot load model {self.model!r} version {version}: {exc}") from None
        partition_by = index.get("partition_by")
        models = {}
        for entry in index["models"]:
            partition = entry.get("partition")
            try:
                model = registry.load_model(self.store, self.model, version, partition)
            except DagsmithError as exc:
                raise ServingError(f"cannot load model {self.model!r} version {version}: {exc}") from None
            models[partition_key(partition) if partition_by else None] = model
        plans = {key: ModelPlan(model) for key, model in models.items()}
        return VersionModels(version, partition_by, index.get("task"), models, plans)

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
                                    f"got a JSON {_json_type(data)}")
        if not isinstance(rows, list):
            raise RequestError(400, f'"rows" must be a list of objects, got a JSON {_json_type(rows)}')
        for i, row in enumerate(rows):
            if not isinstance(row, dict):
                raise RequestError(400, f"rows[{i}] must be an object {{column: value}}, got a JSON {_json_type(row)}")
        return rows

    def predict(self, version: VersionModels, rows: list[dict]) -> dict:
        result = {"model": self.model, "version": version.version, "predictions": []}
        if not rows:
            return result
        groups: dict = {}
        if version.partition_by:
            column = version.partition_by
            for i, row in enumerate(rows):
                if column not in row or row[column] is None:
                    raise RequestError(422, f"rows[{i}] lacks the partition column {column!r}: "
                                            "it selects which partition's model answers")
                value = check_value(row[column], f"rows[{i}].{column}")
                if isinstance(value, (dict, list)):
                    raise RequestError(400, f"rows[{i}].{column}: expected a scalar, got a JSON {_json_type(value)}")
                key = partition_key(json_scalar(value))
                if version.model_for(key) is None:
                    known = sorted(version.models)
                    shown = ", ".join(known[:20]) + (f", ... ({len(known)} in all)" if len(known) > 20 else "")
                    raise RequestError(422, f"unknown partition {column}={value!r} in rows[{i}] "
                                            f"(version {version.version} serves: {shown})")
                groups.setdefault(key, []).append(i)
        else:
            groups[None] = list(range(len(rows)))

        predictions: list = [None] * len(rows)
        probabilities: list | None = [None] * len(rows) if version.task == "classifier" else None
        for key, positions in groups.items():
            plan = version.plan_for(key)
            preds, probs = self._predict_group(plan, rows if len(groups) == 1 else [rows[i] for i in positions],
                                               positions)
            for n, i in enumerate(positions):
                predictions[i] = preds[n]
            if probabilities is not None:
                if probs is None:
                    probabilities = None
                else:
                    for n, i in enumerate(positions):
                        probabilities[i] = probs[n]
        result["predictions"] = predictions
        if probabilities is not None:
            result["probabilities"] = probabilities
        return result

    def _predict_group(self, plan: ModelPlan, rows: list[dict], positions: list[int]):
        model = plan.model
        features = plan.features
        for n, row in enumerate(rows):
            for c in features:
                if c not in row:
                    missing = [c for c in features if c not in row]
                    raise RequestError(422, f"rows[{positions[n]}] lacks feature columns the model needs: "
                                            f"{', '.join(missing)}")
            for c in features:
                value = row[c]
                kind = type(value)
                if kind is int or kind is str or value is None:
                    continue
                if isinstance(value, (dict, list)):
                    raise RequestError(400, f"rows[{positions[n]}].{c}: expected a scalar, got a JSON {_json_type(value)}")
                if isinstance(value, (float, BadNumber)):
                    check_value(value, f"rows[{positions[n]}].{c}")
        X = None
        estimator = plan.estimator
        if plan.array_estimator is not None:
            X = _numeric_array(rows, features)
            if X is not None:
                estimator = plan.array_estimator
        if X is None:
            X = _numeric_input(model, rows, features)
        if X is None:
            import pandas as pd

            frame = pd.DataFrame([{c: row[c] for c in features} for row in rows], columns=features)
            frame = _coerce(frame, model["encoding"], positions)
            try:
                X = model_input(model, frame)
            except DagsmithError as exc:
                raise RequestError(422, str(exc)) from None
            except (ValueError, TypeError, OverflowError) as exc:
                raise RequestError(422, f"the rows cannot be encoded for the model: {exc}") from None
        try:
            raw = estimator.predict(X)
        except Exception as exc:
            if isinstance(exc, ValueError) and _input_rejected(exc):
                raise RequestError(422, f"the model cannot take these values: {exc}") from None
            raise PredictionFailed(f"the model failed to predict: {type(exc).__name__}: {exc}") from exc
        preds = _json_list(raw)
        probs = None
        if plan.proba:
            try:
                matrix = estimator.predict_proba(X)
                classes = plan.classes if plan.classes is not None else [partition_key(c) for c in range(matrix.shape[1])]
                probs = [{c: _finite(p) for c, p in zip(classes, line)} for line in matrix.tolist()]
            except Exception:  # probabilities are a bonus: the predictions stand
                probs = None
        return preds, probs


def _json_list(raw) -> list:
    """The predictions as JSON-safe Python values (json_scalar of each; a numeric array at once)."""
    kind = getattr(getattr(raw, "dtype", None), "kind", None)
    if kind in ("i", "u", "b") and getattr(raw, "ndim", 0) == 1:
        return raw.tolist()
    if kind == "f" and getattr(raw, "ndim", 0) == 1:
        return [None if v != v else v for v in raw.tolist()]  # NaN: missing, as json_scalar says
    return [json_scalar(v) for v in list(raw)]


_INT64_EXACT = 2**53  # the largest integers a float64 holds exactly


def _numeric_array(rows: list[dict], features: list[str]):
    """The rows as one numpy array (n_rows x n_features) for ModelPlan.array_estimator, when
    every value is a JSON number or null: int64 when every value is an integer, else float64
    with null as NaN: the array that the DataFrame of _numeric_input becomes in the estimator
    (a frame of int64 and float64 columns is converted to float64 as a whole). None: the
    general path (text, booleans, an integer a float64 does not hold exactly next to floats)."""
    import numpy as np

    matrix = [[row[c] for c in features] for row in rows]
    all_int = True
    for line in matrix:
        for v in line:
            kind = type(v)
            if kind is int:
                continue
            if kind is float or v is None:
                all_int = False
                continue
            return None  # str, bool, BadNumber (refused before), ...
    if all_int:
        return np.array(matrix, dtype=np.int64)
    for line in matrix:
        for v in line:
            if type(v) is int and not -_INT64_EXACT <= v <= _INT64_EXACT:
                return None
    return np.array(matrix, dtype=np.float64)  # None -> nan


def _numeric_input(model: dict, rows: list[dict], features: list[str]):
    """The model input built directly, when the training encoding is the identity (numeric
    features only, in the order of the model's columns) and every value is a JSON number or
    null: the same frame as _coerce + model_input give (a column of integers is int64, any
    other float64, null is NaN), at a fraction of the cost. None: take the general path."""
    encoding = model["encoding"]
    if encoding.get("categorical") or encoding.get("boolean") or encoding.get("duration") \
            or list(model["columns"]) != features:
        return None
    import numpy as np
    import pandas as pd

    data = {}
    for c in features:
        values = [row[c] for row in rows]
        kinds = {type(v) for v in values}
        if kinds == {int}:
            data[c] = np.array(values, dtype=np.int64)
        elif kinds <= {int, float, type(None)} and kinds != {type(None)}:
            data[c] = np.array([math.nan if v is None else v for v in values], dtype=np.float64)
        else:  # text, booleans, a column of nulls only: the general path decides
            return None
    return pd.DataFrame(data, columns=features, copy=False)


def _input_rejected(exc: ValueError) -> bool:
    """scikit-learn's check of the input values (a missing value for an estimator that takes
    none, a value too large for float32): the client's values, not a broken model."""
    text = str(exc)
    return text.startswith(("Input X contains", "Input contains", "Input y contains"))


def _finite(value):
    value = float(value)
    return value if math.isfinite(value) else None


def _json_type(value) -> str:
    if value is None:
        return "null"
    if isinstance(value, bool):
        return "boolean"
    if isinstance(value, (int, float, BadNumber)):
        return "number"
    if isinstance(value, str):
        return "string"
    if isinstance(value, list):
        return "array"
    if isinstance(value, dict):
        return "object"
    return type(value).__name__


_TRUE = {"true": 1, "false": 0, "1": 1, "0": 0, "yes": 1, "no": 0}


def _coerce(frame, encoding: dict, positions: list[int]):
    """JSON values -> the dtypes the encoding expects; RequestError 422 for a value that fits not."""
    import pandas as pd

    categorical = set(encoding.get("categorical") or [])
    boolean = set(encoding.get("boolean") or [])
    duration = set(encoding.get("duration") or [])

    def bad(column, mask, what):
        n = int(mask.values.argmax())
        raise RequestError(422, f"rows[{positions[n]}].{column}: {frame[column].iloc[n]!r} is not {what}")

    for column in frame.columns:
        series = frame[column]
        if column in categorical:
            continue
        if column in boolean:
            def to01(v):
                if v is None or (isinstance(v, float) and math.isnan(v)):
                    return math.nan
                if isinstance(v, bool):
                    return int(v)
                if isinstance(v, (int, float)) and v in (0, 1):
                    return int(v)
                if isinstance(v, str) and v.strip().lower() in _TRUE:
                    return _TRUE[v.strip().lower()]
                return -1
            converted = series.map(to01)
            if (converted == -1).any():
                bad(column, converted == -1, "a boolean (true/false, 0/1)")
            frame[column] = converted if converted.isna().any() else converted.astype("int8")
        elif column in duration:
            try:
                if pd.api.types.is_numeric_dtype(series):
                    frame[column] = pd.to_timedelta(series, unit="s")
                else:
                    frame[column] = pd.to_timedelta(series)
            except (ValueError, TypeError, OverflowError):
                bad(column, series.notna(), "a duration (seconds, or text like '1 days 02:00:00')")
        elif not pd.api.types.is_numeric_dtype(series) or series.dtype == bool:
            converted = pd.to_numeric(series, errors="coerce")
            wrong = series.notna() & converted.isna()
            if wrong.any():
                bad(column, wrong, "a number")
            if pd.api.types.is_float_dtype(converted):
                infinite = converted.abs() == math.inf  # "inf", "1e999" sent as text
                if infinite.any():
                    bad(column, infinite, "a finite number")
            frame[column] = converted
    return frame
