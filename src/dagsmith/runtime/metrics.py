"""Evaluation metrics by name, computed on the held-out split (which names a spec may use, and
how each is reported: dagsmith/metricnames.py).

- dagsmith's own metrics, with sklearn.metrics:
  - roc_auc, log_loss use `predict_proba` (binary: the column of the positive class, the second
    of `classes_`; multiclass: roc_auc is one-vs-rest, macro-averaged over the classes, i.e.
    `roc_auc_score(multi_class="ovr", average="macro")`). roc_auc falls back to
    `decision_function` for a binary model without probabilities.
  - f1, precision, recall: `average="binary"` (positive class = the second of the sorted
    classes) for two classes, else `average="weighted"` (each class's score weighted by its
    number of true rows); `zero_division=0`. f1_macro, recall_micro... are scikit-learn's scorers.
- any other scikit-learn scorer: `sklearn.metrics.get_scorer(name)(model, X, y)`, as it is (a
  neg_ scorer is negative).
- a user function (`metric_functions`, from evaluate's IR config): `function(y_true, y_pred,
  **params)`, or `function(y_true, y_proba, **params)` with needs: proba (two classes: the
  positive class's column; more: the rows x classes matrix in `classes_` order).
- Every value is a float rounded to 6 decimals (stable JSON), or None when it is undefined on
  this split (e.g. roc_auc when the test rows hold one class only, or a non-finite value).
"""

from __future__ import annotations

import math

from ..metricnames import BUILTIN as NAMES, CLASSIFICATION, GOALS, REGRESSION  # noqa: F401 (GOALS: train.py)
from ..metricnames import known
from .context import StepFailed

DEFAULTS = {"classifier": ["accuracy", "f1", "roc_auc"], "regressor": ["r2", "mean_absolute_error"]}


def functions_of(ir) -> dict:
    """{name: {function, needs, params}} of the spec's user metrics (evaluate's IR config)."""
    evaluate = next((s for s in ir.steps if s.kind == "evaluate"), None)
    return dict((evaluate.config.get("metric_functions") or {}) if evaluate is not None else {})


def rounded(value) -> float | None:
    if value is None:
        return None
    value = float(value)
    if not math.isfinite(value):
        return None
    return round(value, 6) + 0.0  # + 0.0: a -0.0 (e.g. -1e-9 rounded) is 0.0, never printed "-0.0"


def check_names(names, functions=None) -> None:
    unknown = [n for n in names if n not in (functions or {}) and not known(n)]
    if unknown:
        raise StepFailed(f"unknown metric(s) {', '.join(map(repr, unknown))}: neither a dagsmith metric "
                         f"({', '.join(NAMES)}), a scikit-learn scorer nor a user metric of evaluation.metrics")


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


def _scorer(name: str, p: _Predictions):
    import numpy as np
    import sklearn
    from sklearn.metrics import get_scorer, get_scorer_names

    if name not in get_scorer_names():  # a scorer of another scikit-learn version than this image's
        raise StepFailed(f"metric {name}: scikit-learn {sklearn.__version__} here has no scorer {name!r}")
    try:
        return get_scorer(name)(p.estimator, p.X, p.y)
    except ValueError:
        present = len(np.unique(np.asarray(p.y)))
        known = getattr(p.estimator, "classes_", None)
        if present < 2 or (known is not None and present < len(known)):
            # e.g. roc_auc_ovr when the held-out rows lack a class the model knows: undefined on
            # this split (None), as dagsmith's roc_auc
            return None
        raise


def _user_function(name: str, definition: dict, p: _Predictions, root):
    import numpy as np

    from .userscode import import_function, user_code_error

    function = import_function(definition["function"], root or ".")
    if definition.get("needs") == "proba":
        proba = np.asarray(p.proba(name))
        given = proba[:, 1] if proba.ndim == 2 and proba.shape[1] == 2 else proba
    else:
        given = p.pred
    try:
        returned = function(np.asarray(p.y), given, **(definition.get("params") or {}))
    except Exception as exc:
        raise user_code_error(f"metric {name} ({definition['function']})", exc) from None
    if returned is None:
        return None  # undefined on this split
    if not isinstance(returned, (bool, np.bool_, str, bytes)):
        try:
            return float(returned)  # a number, a numpy scalar, a 0-d array
        except (TypeError, ValueError):
            pass
    raise StepFailed(f"metric {name} ({definition['function']}) returned {type(returned).__name__}, not a number")


def compute(names, estimator, X, y, task: str, functions=None, root=None) -> dict:
    """{metric: value} of a fitted model on (X, y); `task` is "classifier" or "regressor";
    `functions`: the user metrics' definitions (functions_of), imported from `root`."""
    names = list(dict.fromkeys(names))
    functions = functions or {}
    check_names(names, functions)
    p = _Predictions(estimator, X, y)
    out = {}
    for name in names:
        if name in CLASSIFICATION and name not in functions and task != "classifier":
            raise StepFailed(f"metric {name} is for classifiers, and this model is a {task}")
        if name in REGRESSION and name not in functions and task == "classifier":
            raise StepFailed(f"metric {name} is for regressors, and this model is a classifier")
        try:
            if name in functions:
                value = _user_function(name, functions[name], p, root)
            elif name in CLASSIFICATION:
                value = _classification(name, p)
            elif name in REGRESSION:
                value = _regression(name, p)
            else:
                value = _scorer(name, p)
        except StepFailed:
            raise
        except Exception as exc:  # a model that cannot predict these rows: the user's to fix
            raise StepFailed(f"metric {name}: {type(exc).__name__}: {exc}") from None
        out[name] = rounded(value)
    return out
