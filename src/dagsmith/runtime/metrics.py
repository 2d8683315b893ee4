"""Evaluation metrics by name, computed with sklearn.metrics on the held-out split.

- roc_auc, log_loss use `predict_proba` (binary: the column of the positive class, the second
  of `classes_`; multiclass: one-vs-rest roc_auc). roc_auc falls back to `decision_function`
  for a binary model without probabilities.
- f1, precision, recall: `average="binary"` (positive class = the second of the sorted
  classes) for two classes, else `average="weighted"`; `zero_division=0`.
- Every value is a float rounded to 6 decimals (stable JSON), or None when it is undefined on
  this split (e.g. roc_auc when the test rows hold one class only).
"""

from __future__ import annotations

import math

from .context import StepFailed

CLASSIFICATION = ("accuracy", "balanced_accuracy", "f1", "precision", "recall", "roc_auc", "log_loss")
REGRESSION = ("r2", "mean_absolute_error", "mean_squared_error", "root_mean_squared_error",
              "median_absolute_error", "explained_variance")
# Which way is better (used when a caller needs a default goal).
GOALS = {name: "max" for name in ("accuracy", "balanced_accuracy", "f1", "precision", "recall", "roc_auc", "r2",
                                  "explained_variance")}
GOALS.update({name: "min" for name in ("log_loss", "mean_absolute_error", "mean_squared_error",
                                       "root_mean_squared_error", "median_absolute_error")})
NAMES = CLASSIFICATION + REGRESSION
DEFAULTS = {"classifier": ["accuracy", "f1", "roc_auc"], "regressor": ["r2", "mean_absolute_error"]}


def rounded(value) -> float | None:
    if value is None:
        return None
    value = float(value)
    if not math.isfinite(value):
        return None
    return round(value, 6)


def check_names(names) -> None:
    unknown = [n for n in names if n not in NAMES]
    if unknown:
        raise StepFailed(f"unknown metric(s) {', '.join(map(repr, unknown))} (known: {', '.join(NAMES)})")


def model_task(estimator, fallback: str | None = None) -> str:
    from .data import estimator_task

    return estimator_task(estimator) or fallback or "regressor"


class _Predictions:
    """Predictions of one model on one X, computed once, whatever the metrics ask for."""

    def __init__(self, estimator, X, y):
        self.estimator, self.X, self.y = estimator, X, y
        self._pred = self._proba = None

    @property
    def pred(self):
        if self._pred is None:
            self._pred = self.estimator.predict(self.X)
        return self._pred

    @property
    def classes(self) -> list:
        import numpy as np

        classes = getattr(self.estimator, "classes_", None)
        if classes is None:
            classes = np.unique(np.concatenate([np.asarray(self.y), np.asarray(self.pred)]))
        return list(classes)

    def proba(self, metric: str):
        if self._proba is None:
            if not hasattr(self.estimator, "predict_proba"):
                raise StepFailed(f"metric {metric} needs predicted probabilities, and the model "
                                 f"({type(self.estimator).__name__}) has no predict_proba")
            self._proba = self.estimator.predict_proba(self.X)
        return self._proba


def _classification(name: str, p: _Predictions):
    import numpy as np
    from sklearn import metrics as skm

    y = np.asarray(p.y)
    if name == "accuracy":
        return skm.accuracy_score(y, p.pred)
    if name == "balanced_accuracy":
        return skm.balanced_accuracy_score(y, p.pred)
    classes = p.classes
    if name in ("f1", "precision", "recall"):
        function = {"f1": skm.f1_score, "precision": skm.precision_score, "recall": skm.recall_score}[name]
        if len(classes) == 2:
            return function(y, p.pred, average="binary", pos_label=classes[1], zero_division=0)
        return function(y, p.pred, average="weighted", labels=classes, zero_division=0)
    if len(set(y.tolist())) < 2:
        return None  # roc_auc / log_loss are undefined on one class
    if name == "roc_auc":
        if len(classes) == 2:
            if hasattr(p.estimator, "predict_proba"):
                score = np.asarray(p.proba(name))[:, 1]
            elif hasattr(p.estimator, "decision_function"):
                score = p.estimator.decision_function(p.X)
            else:
                p.proba(name)  # raises the explanation
            return skm.roc_auc_score(y == classes[1], score)
        try:
            return skm.roc_auc_score(y, p.proba(name), multi_class="ovr", labels=classes)
        except ValueError:
            return None
    if name == "log_loss":
        return skm.log_loss(y, p.proba(name), labels=classes)
    raise AssertionError(name)


def _regression(name: str, p: _Predictions):
    import numpy as np
    from sklearn import metrics as skm

    y = np.asarray(p.y, dtype="float64")
    pred = np.asarray(p.pred, dtype="float64")
    if name == "r2":
        return skm.r2_score(y, pred) if len(y) > 1 else None
    if name == "mean_absolute_error":
        return skm.mean_absolute_error(y, pred)
    if name == "mean_squared_error":
        return skm.mean_squared_error(y, pred)
    if name == "root_mean_squared_error":
        return math.sqrt(skm.mean_squared_error(y, pred))
    if name == "median_absolute_error":
        return skm.median_absolute_error(y, pred)
    if name == "explained_variance":
        return skm.explained_variance_score(y, pred) if len(y) > 1 else None
    raise AssertionError(name)


def compute(names, estimator, X, y, task: str) -> dict:
    """{metric: value} of a fitted model on (X, y); `task` is "classifier" or "regressor"."""
    names = list(dict.fromkeys(names))
    check_names(names)
    p = _Predictions(estimator, X, y)
    out = {}
    for name in names:
        if name in CLASSIFICATION and task != "classifier":
            raise StepFailed(f"metric {name} is for classifiers, and this model is a {task}")
        if name in REGRESSION and task == "classifier":
            raise StepFailed(f"metric {name} is for regressors, and this model is a classifier")
        try:
            value = _classification(name, p) if name in CLASSIFICATION else _regression(name, p)
        except StepFailed:
            raise
        except Exception as exc:  # a model that cannot predict these rows: the user's to fix
            raise StepFailed(f"metric {name}: {type(exc).__name__}: {exc}") from None
        out[name] = rounded(value)
    return out
