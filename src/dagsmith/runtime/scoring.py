"""Rows -> model input -> predictions: the one code path of `dagsmith serve`, of
`dagsmith.load_model(...).predict` and of the `predict:` batch-scoring step, so the same rows
give the same predictions (and probabilities) offline and online.

Rows are JSON-like dicts {column: value}, values int, float, str, bool or None (what a JSON
request body parses to; `rows_of(frame)` turns a DataFrame's rows into the same values). A
version's models are a `VersionModels` (one model dict per partition, see
docs/model-format.md); `predict_version` routes each row to its partition's model by the
partition column, `predict_group` encodes the rows with the training encoding
(data.model_input, or an equivalent faster path for numeric features) and asks the model.

A row the model cannot take is a `RequestError` (a status and a reason naming the row and
column: serve answers it as is); a model that raises is `PredictionFailed`.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field

from ..errors import DagsmithError
from .data import json_scalar, model_input, partition_key


class RequestError(Exception):
    """A client mistake: answered with `status` and {"error": reason}."""

    def __init__(self, status: int, reason: str):
        super().__init__(reason)
        self.status = status
        self.reason = reason


class BadNumber:
    """A number of the body that no model can take; reported where a row uses it."""

    __slots__ = ("text", "status", "why")

    def __init__(self, text: str, status: int, why: str):
        self.text, self.status, self.why = text, status, why

    def describe(self) -> str:
        shown = self.text if len(self.text) <= 40 else f"{self.text[:20]}... ({len(self.text)} characters)"
        return f"{shown} {self.why}"

    def __repr__(self) -> str:
        return f"BadNumber({self.text[:40]!r})"



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



def check_value(value, where: str):
    """A row's value as parsed -> RequestError when no model can take it (non-finite, too large)."""
    if isinstance(value, float):
        if not math.isfinite(value):
            raise RequestError(422, f"{where}: the number is out of range: a number must fit a 64-bit float "
                                    "(at most about ±1.8e308)")
    elif isinstance(value, BadNumber):
        raise RequestError(value.status, f"{where}: {value.describe()}")
    return value


def load_version(store, model: str, version: int) -> VersionModels:
    """Every model of a registry version, with its plans (what serve loads; DagsmithError when
    the version or one of its files is missing)."""
    from . import registry

    index = registry.version_index(store, model, version)
    partition_by = index.get("partition_by")
    models = {}
    for entry in index["models"]:
        partition = entry.get("partition")
        models[partition_key(partition) if partition_by else None] = registry.load_model(store, model, version, partition)
    plans = {key: ModelPlan(m) for key, m in models.items()}
    return VersionModels(version, partition_by, index.get("task"), models, plans)


def trained_version(ctx) -> VersionModels:
    """This run's trained model(s) (select's choice per partition, or train's model), version
    None, for a step that declares `model:<train or select step>` among its inputs."""
    from .evaluate import is_partitioned, load_selected, selected

    partitioned = is_partitioned(ctx)
    models = {}
    for entry in selected(ctx):
        models[partition_key(entry["partition"]) if partitioned else None] = load_selected(ctx, entry)
    sample = next(iter(models.values()))
    plans = {key: ModelPlan(model) for key, model in models.items()}
    return VersionModels(None, sample.get("partition_by") if partitioned else None, sample.get("task"), models, plans)


def rows_of(frame) -> list[dict]:
    """A DataFrame's rows as the JSON values a request would carry for them: missing (NaN, NaT,
    None, NA) -> None, numpy numbers -> Python int/float/bool, datetimes and dates -> ISO text,
    durations -> seconds (float), Decimal -> float. Every column is kept."""
    import pandas as pd

    columns = []
    for name in frame.columns:
        series = frame[name]
        dtype = series.dtype
        if dtype.kind in "iub":  # numpy ints, unsigned, bools: no missing values
            values = series.tolist()
        elif dtype.kind == "f":
            values = [None if v != v else v for v in series.tolist()]
        elif dtype.kind == "m":
            values = [None if v != v else v for v in series.dt.total_seconds().tolist()]
        else:  # datetimes, text, objects, pandas' nullable types
            values = [json_scalar(v) for v in series.astype(object).tolist()] if not isinstance(dtype, pd.DatetimeTZDtype) \
                else [json_scalar(v) for v in series.tolist()]
        columns.append(values)
    names = [str(c) for c in frame.columns]
    return [dict(zip(names, line)) for line in zip(*columns)] if columns else [{} for _ in range(len(frame))]


def predict_version(version: VersionModels, rows: list[dict], offset: int = 0):
    """(predictions, probabilities or None) of the rows: each row answered by its partition's
    model (the partition column's value; RequestError 422 when a row lacks it or no model has
    that partition). `offset`: the index of rows[0] in the caller's rows (for messages)."""
    if not rows:
        return [], None
    groups: dict = {}
    if version.partition_by:
        column = version.partition_by
        for i, row in enumerate(rows):
            if column not in row or row[column] is None:
                raise RequestError(422, f"rows[{offset + i}] lacks the partition column {column!r}: "
                                        "it selects which partition's model answers")
            value = check_value(row[column], f"rows[{offset + i}].{column}")
            if isinstance(value, (dict, list)):
                raise RequestError(400, f"rows[{offset + i}].{column}: expected a scalar, got a JSON {json_type(value)}")
            key = partition_key(json_scalar(value))
            if version.model_for(key) is None:
                known = sorted(version.models)
                shown = ", ".join(known[:20]) + (f", ... ({len(known)} in all)" if len(known) > 20 else "")
                what = f"version {version.version}" if version.version is not None else "the model"
                raise RequestError(422, f"unknown partition {column}={value!r} in rows[{offset + i}] "
                                        f"({what} serves: {shown})")
            groups.setdefault(key, []).append(i)
    else:
        groups[None] = list(range(len(rows)))

    predictions: list = [None] * len(rows)
    probabilities: list | None = [None] * len(rows) if version.task == "classifier" else None
    for key, positions in groups.items():
        plan = version.plan_for(key)
        preds, probs = predict_group(plan, rows if len(groups) == 1 else [rows[i] for i in positions],
                                     positions if not offset else [offset + i for i in positions])
        for n, i in enumerate(positions):
            predictions[i] = preds[n]
        if probabilities is not None:
            if probs is None:
                probabilities = None
            else:
                for n, i in enumerate(positions):
                    probabilities[i] = probs[n]
    return predictions, probabilities


def predict_group(plan: ModelPlan, rows: list[dict], positions: list[int]):
    """(predictions, probabilities or None) of the rows one model answers; `positions`: each
    row's index in the caller's rows (for messages)."""
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
                raise RequestError(400, f"rows[{positions[n]}].{c}: expected a scalar, got a JSON {json_type(value)}")
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


def json_type(value) -> str:
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
