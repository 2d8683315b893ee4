"""The public model API: a trained or deployed model, predicting on raw rows.

    import dagsmith
    model = dagsmith.load_model(".dagsmith", "churn")          # the production version
    model = dagsmith.load_model("s3://acme-ml/dagsmith", "churn", "canary")
    model = dagsmith.load_model(".dagsmith", "churn", 3)       # a version number
    model.predict(rows)          # rows: a pandas DataFrame or a list of {column: value} dicts
    model.predict_proba(rows)    # classifiers: one {class: probability} dict per row

Rows are RAW rows (the columns of the training table, before any encoding: text categories,
booleans, durations), the rows `dagsmith serve` takes. The answers come from exactly the code
`dagsmith serve` runs (runtime/scoring.py: the partition routing, the training encoding, the
checks of the values), so the same rows give the same predictions and probabilities offline and
online. A DataFrame's values are first made the JSON values a request would carry (`rows_of`:
NaN/NaT/None -> null, numpy numbers -> Python numbers, dates -> ISO text, durations -> seconds).

The bundle a version is made of (registry/<model>/<version>/) is described in
docs/model-format.md.
"""

from __future__ import annotations

from .errors import DagsmithError


class PredictError(DagsmithError, ValueError):
    """The rows cannot be predicted (a missing feature or partition column, a partition no model
    serves, a value the encoding cannot take): the message names the row and the column."""


class Model:
    """One model version: one model per partition (or one), answering through serve's code path."""

    def __init__(self, name: str | None, version_models):
        self.name = name
        self._models = version_models  # runtime.scoring.VersionModels

    @property
    def version(self) -> int | None:
        """The registry version; None for a run's own trained model (load_trained)."""
        return self._models.version

    @property
    def partition_by(self) -> str | None:
        """The column whose value picks each row's model (None: one model for every row)."""
        return self._models.partition_by

    @property
    def task(self) -> str | None:
        return self._models.task

    @property
    def partitions(self) -> list | None:
        """The partition values that have a model (None when not partitioned)."""
        if not self.partition_by:
            return None
        return sorted((m.get("partition") for m in self._models.models.values()), key=repr)

    @property
    def features(self) -> list[str]:
        """The raw columns a row needs (of every partition's model, in their order); with
        partition_by, the partition column too."""
        seen: dict[str, None] = {}
        if self.partition_by:
            seen[self.partition_by] = None
        for model in self._models.models.values():
            for column in model["encoding"]["features"]:
                seen.setdefault(column, None)
        return list(seen)

    @property
    def classes(self) -> list | None:
        """A classifier's classes (of the first partition's model); None for a regressor. The
        keys of predict_proba's dicts are these as text (JSON text for a non-text class: 0 -> "0")."""
        if self.task != "classifier":
            return None
        from .runtime.data import json_scalar

        model = next(iter(self._models.models.values()))
        classes = model.get("classes")
        if classes is None:
            classes = getattr(model["estimator"], "classes_", None)
        return None if classes is None else [json_scalar(c) for c in classes]

    def predict(self, rows) -> list:
        """One prediction per row (JSON-safe values: int, float, str, bool or None)."""
        return self._answer(rows)[0]

    def predict_proba(self, rows) -> list[dict]:
        """One {class: probability} dict per row (class keys as in serve's `probabilities`)."""
        if self.task != "classifier":
            raise PredictError(f"model {self.name or ''!r} is a {self.task or 'model of unknown task'}: it has no probabilities")
        probabilities = self._answer(rows)[1]
        if probabilities is None:
            raise PredictError(f"model {self.name or ''!r}: the estimator gives no probabilities")
        return probabilities

    def _answer(self, rows):
        from .runtime.scoring import RequestError, predict_version

        try:
            return predict_version(self._models, as_rows(rows))
        except RequestError as exc:
            raise PredictError(exc.reason) from None

    def __repr__(self) -> str:
        what = f"version {self.version}" if self.version is not None else "this run's model"
        return f"<dagsmith.Model {self.name or ''!r} {what}: {self.task}, {len(self._models.models)} model(s)>"


def as_rows(rows) -> list[dict]:
    """A DataFrame (its rows as JSON values, runtime.scoring.rows_of) or a list of dicts."""
    from .runtime.scoring import rows_of

    if hasattr(rows, "columns") and hasattr(rows, "dtypes"):
        return rows_of(rows)
    if isinstance(rows, dict):
        raise PredictError("rows must be a list of {column: value} dicts (or a DataFrame), got one dict: wrap it in a list")
    rows = list(rows)
    for i, row in enumerate(rows):
        if not isinstance(row, dict):
            raise PredictError(f"rows[{i}] must be a {{column: value}} dict, got {type(row).__name__}")
    return rows


def load_model(store_or_workdir, name: str, alias_or_version: int | str = "production") -> Model:
    """A registry version of model `name`: `production` (default), `canary`, `latest` or a version
    number, from a workdir (a folder: `dagsmith run --workdir`'s, default .dagsmith), a store URI
    (s3://...) or a Store."""
    from .runtime import registry
    from .runtime.scoring import load_version
    from .runtime.store import Store

    store = store_or_workdir if isinstance(store_or_workdir, Store) else Store.open(store_or_workdir)
    if store.read_json(registry.aliases_key(name)) is None and not registry.versions(store, name):
        raise DagsmithError(f"model {name!r} is not in the registry of {store.uri} "
                            f"(no registry/{name}/: has a deploy step run with this workdir?)")
    version = registry.resolve(store, name, alias_or_version)
    return Model(name, load_version(store, name, version))


def load_trained(ctx) -> Model:
    """This run's trained model (the select step's choice per partition, or the train step's
    model) as a Model with version None, for a step of the run (runtime.context.StepContext)
    that declares it as an input (`model:<train or select step>`)."""
    from .runtime.scoring import trained_version

    name = next((s.config.get("model_name") for s in ctx.ir.steps if s.kind == "deploy"), None)
    return Model(name, trained_version(ctx))
