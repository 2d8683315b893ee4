"""The numpy-array path of a prediction (ModelPlan.array_estimator): for a scikit-learn
estimator fitted on numeric features, /predict gives it one numpy array instead of a
DataFrame, and the answers are exactly those of the estimator's own predict / predict_proba on
the DataFrame of the same values. Anything else takes the DataFrame path, as before."""

from __future__ import annotations

import warnings

import numpy as np
import pandas as pd
import pytest

from dagsmith.runtime import registry
from dagsmith.runtime.store import LocalStore
from dagsmith.runtime.scoring import ModelPlan, _numeric_array
from dagsmith.serving.app import ServingApp

from serving_testing import Sleepy, write_version  # noqa: E402

FEATURES = ["a", "b", "c"]
ENCODING = {"features": FEATURES, "categorical": [], "boolean": [], "duration": []}


def numeric_frame(n: int = 200, seed: int = 0) -> pd.DataFrame:
    rng = np.random.default_rng(seed)
    frame = pd.DataFrame({"a": rng.integers(0, 50, n), "b": rng.normal(size=n).round(2), "c": rng.normal(size=n)})
    frame["y"] = ((frame.a / 25 + frame.b + rng.normal(scale=0.3, size=n)) > 1).astype(int)
    return frame


def numeric_model(estimator, frame=None, columns=FEATURES, task="classifier") -> dict:
    frame = numeric_frame() if frame is None else frame
    estimator.fit(frame[columns], frame["y"])
    return {"estimator": estimator, "columns": list(columns), "encoding": {**ENCODING, "features": list(FEATURES)},
            "target": "y", "task": task, "partition": None, "partition_by": None, "dropped": {}}


def served_app(tmp_path, model: dict) -> ServingApp:
    store = LocalStore(tmp_path / "work")
    write_version(store, "m", 1, [(None, model)])
    registry.write_aliases(store, "m", {"production": 1, "canary": None, "history": []})
    return ServingApp(store, "m", reload_interval=0)


def estimators():
    from sklearn.ensemble import GradientBoostingClassifier, HistGradientBoostingClassifier, RandomForestClassifier
    from sklearn.linear_model import LogisticRegression

    return [GradientBoostingClassifier(n_estimators=30, random_state=0), LogisticRegression(),
            RandomForestClassifier(n_estimators=10, random_state=0), HistGradientBoostingClassifier(max_iter=20)]


ROWS = [
    [{"a": 3, "b": 0.5, "c": -1.25}],
    [{"a": 1, "b": 2, "c": 3}, {"a": 40, "b": -1, "c": 0}],  # integers only: an int64 array
    [{"a": 7, "b": 1.5, "c": 0.25, "extra": "ignored"}, {"a": 0, "b": 0.0, "c": 1e30}],
    [{"a": 2**60, "b": 0.5, "c": 1.0}],  # an integer a float64 does not hold, next to floats: the DataFrame path
    [{"a": "3", "b": 0.5, "c": 1.0}],  # text: the DataFrame path (coerced)
    [{"a": True, "b": 0.5, "c": 1.0}],  # a boolean: the DataFrame path
]


@pytest.mark.parametrize("estimator", estimators(), ids=lambda e: type(e).__name__)
def test_the_array_path_answers_exactly_as_the_estimator_on_a_dataframe(tmp_path, estimator):
    model = numeric_model(estimator)
    app = served_app(tmp_path, model)
    version = app.deployment.production
    plan = version.plan_for(None)
    assert plan.array_estimator is not None and plan.array_estimator is not plan.estimator
    fitted = version.model_for(None)["estimator"]
    assert list(fitted.feature_names_in_) == FEATURES  # the served model itself is not changed
    assert all(getattr(plan.array_estimator, k) is v for k, v in vars(fitted).items() if k != "feature_names_in_")
    for rows in ROWS:
        frame = pd.DataFrame([{c: pd.to_numeric(row[c]) for c in FEATURES} for row in rows], columns=FEATURES)
        with warnings.catch_warnings():
            warnings.simplefilter("error", UserWarning)  # no "X does not have valid feature names" per request
            result = app.predict(version, rows)
        assert result["predictions"] == fitted.predict(frame).tolist()
        expected = fitted.predict_proba(frame).tolist()
        assert [[p["0"], p["1"]] for p in result["probabilities"]] == expected  # exactly, not approximately


def test_null_values_go_to_the_array_as_nan(tmp_path):
    from sklearn.ensemble import HistGradientBoostingClassifier

    app = served_app(tmp_path, numeric_model(HistGradientBoostingClassifier(max_iter=20)))
    version = app.deployment.production
    fitted = version.model_for(None)["estimator"]
    rows = [{"a": None, "b": 0.5, "c": 1.0}, {"a": 4, "b": None, "c": None}]
    frame = pd.DataFrame({"a": [np.nan, 4.0], "b": [0.5, np.nan], "c": [1.0, np.nan]})
    result = app.predict(version, rows)
    assert result["predictions"] == fitted.predict(frame).tolist()
    assert [[p["0"], p["1"]] for p in result["probabilities"]] == fitted.predict_proba(frame).tolist()


def test_an_estimator_fitted_on_an_array_takes_the_array_path(tmp_path):
    from sklearn.linear_model import LogisticRegression

    frame = numeric_frame()
    estimator = LogisticRegression().fit(frame[FEATURES].to_numpy(), frame["y"])
    model = {**numeric_model(LogisticRegression()), "estimator": estimator}
    plan = ModelPlan(model)
    assert plan.array_estimator is estimator  # no feature names to take away
    app = served_app(tmp_path, model)
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        result = app.predict(app.deployment.production, [{"a": 3, "b": 0.5, "c": -1.0}])
    assert result["predictions"] == estimator.predict(np.array([[3, 0.5, -1.0]])).tolist()


def test_what_takes_the_dataframe_path():
    from sklearn.linear_model import LogisticRegression
    from sklearn.pipeline import make_pipeline
    from sklearn.preprocessing import StandardScaler

    # a column order other than the features', a categorical encoding, a meta-estimator whose
    # feature names are a property, an estimator of another library (or a test's)
    other_order = numeric_model(LogisticRegression(), columns=["c", "a", "b"])
    assert ModelPlan(other_order).array_estimator is None
    categorical = numeric_model(LogisticRegression())
    categorical["encoding"] = {**ENCODING, "categorical": ["a"]}
    assert ModelPlan(categorical).array_estimator is None
    assert ModelPlan(numeric_model(make_pipeline(StandardScaler(), LogisticRegression()))).array_estimator is None
    sleepy = {**numeric_model(LogisticRegression()), "estimator": Sleepy(5)}
    plan = ModelPlan(sleepy)  # not called at load (it would sleep 5 s per probe)
    assert plan.array_estimator is None and not plan.proba


def test_numeric_array():
    assert _numeric_array([{"a": 1, "b": 2}], ["a", "b"]).dtype == np.int64
    array = _numeric_array([{"a": 1, "b": None}, {"a": 2.5, "b": 3}], ["b", "a"])
    assert array.dtype == np.float64 and np.isnan(array[0, 0]) and array.tolist()[1] == [3.0, 2.5]
    assert _numeric_array([{"a": 2**62, "b": 2**63 - 1}], ["a", "b"]).tolist() == [[2**62, 2**63 - 1]]  # exact
    assert _numeric_array([{"a": 2**62, "b": 0.5}], ["a", "b"]) is None
    assert _numeric_array([{"a": "1", "b": 0.5}], ["a", "b"]) is None
    assert _numeric_array([{"a": False, "b": 0.5}], ["a", "b"]) is None


def test_predictions_become_json_values_as_json_scalar_makes_them():
    from dagsmith.runtime.data import json_scalar
    from dagsmith.runtime.scoring import _json_list

    for raw in (np.array([1, 2], dtype=np.int64), np.array([True, False]), np.array([0.5, np.nan, np.inf]),
                np.array(["a", "b"], dtype=object), np.array([3, 4], dtype=np.uint8)):
        fast, slow = _json_list(raw), [json_scalar(v) for v in list(raw)]
        assert fast == slow and [type(v) for v in fast] == [type(v) for v in slow]
