"""Which metric names a spec may use: dagsmith's own metrics, scikit-learn's scorers, and user
functions. One list for the spec checks (dagsmith.spec) and the runtime that computes them
(dagsmith.runtime.metrics); imports nothing of dagsmith, and scikit-learn only for a name that is
in neither list below (a scorer newer than SCORERS).

A metric is named as written in `evaluation.metrics`, and gates and `sweep.select` refer to it by
that name:
- a dagsmith metric (BUILTIN): its value as runtime/metrics.py computes it (mean_absolute_error
  is the error itself, lower is better);
- a scikit-learn scorer (`sklearn.metrics.get_scorer_names()`, e.g. neg_mean_absolute_error,
  f1_macro, roc_auc_ovr): the scorer's own value, `get_scorer(name)(model, X, y)`, so a `neg_`
  scorer is reported negated (neg_mean_absolute_error: -0.42) and, like every scorer, greater is
  better; a gate compares that value as it is ({metric: neg_mean_absolute_error, op: ">=",
  value: -0.5} is "MAE at most 0.5"). Where a dagsmith metric and a scorer share a name
  (accuracy, f1, roc_auc, r2...), the dagsmith metric is the one computed;
- a user function, `package.module:function` as a string, or `{name, function, needs, params}`:
  called `function(y_true, y_pred, **params)` (needs: prediction, the default) or
  `function(y_true, y_proba, **params)` (needs: proba: the positive class's probability for two
  classes, the (rows x classes) matrix in `classes_` order otherwise). It returns a number, or None
  (undefined on these rows).
"""

from __future__ import annotations

CLASSIFICATION = ("accuracy", "balanced_accuracy", "f1", "precision", "recall", "roc_auc", "log_loss")
REGRESSION = ("r2", "mean_absolute_error", "mean_squared_error", "root_mean_squared_error",
              "median_absolute_error", "explained_variance")
BUILTIN = CLASSIFICATION + REGRESSION
# Which way is better (a select step without a goal); every scikit-learn scorer: max.
GOALS = {name: "max" for name in ("accuracy", "balanced_accuracy", "f1", "precision", "recall", "roc_auc", "r2",
                                  "explained_variance")}
GOALS.update({name: "min" for name in ("log_loss", "mean_absolute_error", "mean_squared_error",
                                       "root_mean_squared_error", "median_absolute_error")})

# sklearn.metrics.get_scorer_names() of scikit-learn 1.9 (tests/test_compile.py compares it with
# the installed one). A name not here is looked up in the installed scikit-learn (scorers()).
SCORERS = (
    "accuracy", "adjusted_mutual_info_score", "adjusted_rand_score", "average_precision", "balanced_accuracy",
    "completeness_score", "d2_absolute_error_score", "d2_brier_score", "d2_log_loss_score", "explained_variance",
    "f1", "f1_macro", "f1_micro", "f1_samples", "f1_weighted", "fowlkes_mallows_score", "homogeneity_score",
    "jaccard", "jaccard_macro", "jaccard_micro", "jaccard_samples", "jaccard_weighted", "matthews_corrcoef",
    "mutual_info_score", "neg_brier_score", "neg_log_loss", "neg_max_error", "neg_mean_absolute_error",
    "neg_mean_absolute_percentage_error", "neg_mean_gamma_deviance", "neg_mean_poisson_deviance",
    "neg_mean_squared_error", "neg_mean_squared_log_error", "neg_median_absolute_error",
    "neg_negative_likelihood_ratio", "neg_root_mean_squared_error", "neg_root_mean_squared_log_error",
    "normalized_mutual_info_score", "positive_likelihood_ratio", "precision", "precision_macro",
    "precision_micro", "precision_samples", "precision_weighted", "r2", "rand_score", "recall", "recall_macro",
    "recall_micro", "recall_samples", "recall_weighted", "roc_auc", "roc_auc_ovo", "roc_auc_ovo_weighted",
    "roc_auc_ovr", "roc_auc_ovr_weighted", "top_k_accuracy", "v_measure_score",
)
NEEDS = ("prediction", "proba")


def scorers() -> tuple[str, ...]:
    """The scorer names of the installed scikit-learn (SCORERS when it is not installed)."""
    try:
        from sklearn.metrics import get_scorer_names
    except ImportError:
        return SCORERS
    return tuple(get_scorer_names())


def is_function(name: str) -> bool:
    """`package.module:function`: a user function (named by that text)."""
    return ":" in name


def known(name: str) -> bool:
    """A dagsmith metric or a scikit-learn scorer."""
    return name in BUILTIN or name in SCORERS or name in scorers()


def goal(name: str) -> str:
    """max or min: which way is better."""
    return GOALS.get(name, "max")
