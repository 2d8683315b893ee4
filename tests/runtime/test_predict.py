"""Runtime: the predict step (batch scoring). Its scores are exactly serve's answers for the same
rows (the serving app in-process, the rows sent as a JSON body), in batches, partitioned models
route each row by its partition column, and a row no model serves fails the step by name."""

from __future__ import annotations

import json
import math

import numpy as np
import pandas as pd
import pyarrow.parquet as pq
import pytest

from dagsmith.runtime.context import StepFailed
from dagsmith.serving.app import ServingApp

from runtime_testing import Pipeline
from test_evaluate_deploy import classification_rows, spec

DEPLOY = "deployment: {model_name: churn, target: local, strategy: replace}"
PREDICT = """predict:
  scores: {model: production, input: rows}
  mine: {model: trained, input: rows, batch_rows: 7}
  only_p: {model: production, input: rows, output_columns: [probability]}
"""


def _table(p: Pipeline, step_id: str) -> pd.DataFrame:
    manifest = p.store.manifest(p.store.step_key("r1", step_id))
    return pq.read_table(p.store.file(manifest, "table.parquet")).to_pandas()


def _served(p: Pipeline, frame: pd.DataFrame, batch: int | None = None) -> dict:
    """serve's answer for the rows, sent as a client sends them (JSON, NaN as null), `batch` rows
    a request. (The same rows grouped otherwise may differ in a probability's last bit: BLAS
    kernels depend on the matrix shape, for serve as for any caller.)"""
    rows = [{k: None if isinstance(v, float) and math.isnan(v) else (v.item() if hasattr(v, "item") else v)
             for k, v in r.items()} for r in frame.to_dict("records")]
    app = ServingApp(p.store, "churn", reload_interval=0)
    out = {"predictions": [], "probabilities": []}
    batch = batch or len(rows)
    for start in range(0, len(rows), batch):
        body = json.dumps({"rows": rows[start:start + batch]}).encode()
        answer = app.predict(app.deployment.production, ServingApp.parse_rows(body))
        out["predictions"] += answer["predictions"]
        out["probabilities"] += answer.get("probabilities") or []
    return out


def test_scores_equal_serve_with_this_runs_model_and_the_registry(tmp_path):
    rows = classification_rows(n=100)
    p = Pipeline(tmp_path, spec(deployment=DEPLOY) + PREDICT, {"rows": rows})
    p.run_through("deploy")
    results = {name: p.run(name) for name in ("scores", "mine", "only_p")}
    assert results["scores"] == {"rows": 100, "model": "churn", "model_version": 1,
                                 "columns": ["prediction", "probability", "model_version"], "seconds": results["scores"]["seconds"]}
    for name, version, batch in (("scores", 1, None), ("mine", None, 7)):
        served = _served(p, rows, batch)  # (this run's model is the version deployed)
        out = _table(p, name)
        assert list(out.columns) == [*rows.columns, "prediction", "probability", "model_version"]
        pd.testing.assert_frame_equal(out[list(rows.columns)], rows)  # the input rows as they were
        assert out["prediction"].tolist() == served["predictions"]
        # the probability of the predicted class, exactly serve's float
        assert out["probability"].tolist() == [probs[str(pred)] for pred, probs in zip(served["predictions"], served["probabilities"])]
        assert out["model_version"].isna().all() if version is None else (out["model_version"] == version).all()
    only = _table(p, "only_p")
    assert list(only.columns) == [*rows.columns, "probability", "model_version"]
    assert only["probability"].tolist() == _table(p, "scores")["probability"].tolist()


def test_a_partitioned_model_routes_rows_and_an_unknown_partition_fails_by_name(tmp_path):
    training = """  partition_by: region
  partitions: [a, b]"""
    predict = """predict:
  scores: {model: production, input: rows}
  mine: {model: trained, input: rows, batch_rows: 16}
"""
    rows = classification_rows(n=120, shift_b=2.5)
    p = Pipeline(tmp_path, spec(training_extra=training, deployment=DEPLOY) + predict, {"rows": rows})
    p.run_through("deploy")
    assert p.run("scores")["partition_by"] == "region"
    p.run("mine")
    served = _served(p, rows)
    for name in ("scores", "mine"):
        out = _table(p, name)
        assert out["prediction"].tolist() == served["predictions"] and out["region"].tolist() == rows["region"].tolist()
    # a row of region c (no model) in the 3rd batch: the step fails naming the row and the value
    other = rows.copy()
    other.loc[37, "region"] = "c"
    p.commit_tables("r1", {"rows": other})
    with pytest.raises(StepFailed, match=r"predict 'mine' cannot score table 'rows': unknown partition region='c' in rows\[37\] "
                                         r"\(the model serves: a, b\)"):
        p.run("mine")
    with pytest.raises(StepFailed, match=r"unknown partition region='c' in rows\[37\] \(version 1 serves: a, b\)"):
        p.run("scores")


def test_multiclass_and_regression_probabilities(tmp_path):
    rng = np.random.default_rng(3)
    x = rng.normal(size=150)
    rows = pd.DataFrame({"x": x, "z": rng.normal(size=150), "y": np.digitize(x, [-0.5, 0.5])})
    (tmp_path / "m").mkdir()
    p = Pipeline(tmp_path / "m", spec(metrics="[accuracy]") + "predict:\n  s: {model: trained, input: rows}\n", {"rows": rows})
    p.run_through("train")
    p.run("s")
    out = _table(p, "s")
    from dagsmith.runtime.evaluate import load_selected, selected

    model = load_selected(p.ctx("s"), selected(p.ctx("s"))[0])
    proba = model["estimator"].predict_proba(rows[["x", "z"]])
    assert out["probability"].tolist() == pytest.approx(proba.max(axis=1).tolist(), abs=1e-12)  # the predicted class's
    assert set(out["prediction"]) == {0, 1, 2}

    regression = spec(metrics="[r2]").replace("LogisticRegression", "LinearRegression").replace(", params: {max_iter: 300}", "")
    (tmp_path / "r").mkdir()
    q = Pipeline(tmp_path / "r", regression + "predict:\n  s: {model: trained, input: rows}\n", {"rows": rows.assign(y=x * 2.0)})
    q.run_through("train")
    q.run("s")
    out = _table(q, "s")
    assert out["probability"].isna().all() and out["prediction"].dtype == np.float64
    assert out["prediction"].tolist() == pytest.approx((rows["x"] * 2.0).tolist(), abs=1e-9)


def test_a_column_the_scores_would_overwrite_is_refused(tmp_path):
    rows = classification_rows(n=60).assign(prediction=1)
    p = Pipeline(tmp_path, spec() + "predict:\n  s: {model: trained, input: rows}\n", {"rows": rows})
    p.run_through("train")
    with pytest.raises(StepFailed, match="already has the column\\(s\\) 'prediction'"):
        p.run("s")


def test_the_cache_key_follows_the_registry_version_not_deploys_result(tmp_path):
    """A predict of `production` is cached with the version the alias resolves to and that
    version's files: a new production version changes the key; an unchanged deploy (another
    deployment.json, the same production) does not."""
    from dagsmith.runner.cache import cache_key

    p = Pipeline(tmp_path, spec(deployment=DEPLOY) + "predict:\n  scores: {model: production, input: rows}\n",
                 {"rows": classification_rows(n=80)})
    assert cache_key(p.ctx("scores"), p.ir) is None  # no production version yet: not cached (the step will fail)
    p.run_through("deploy")
    first = cache_key(p.ctx("scores"), p.ir)
    other = {"rows": classification_rows(n=80, seed=1)}
    assert p.run_through("deploy", run="r2", tables=other)["deploy"]["version"] == 2
    assert cache_key(p.ctx("scores"), p.ir) != first  # run r1's rows, now with production v2
    second = cache_key(p.ctx("scores", run="r2"), p.ir)
    assert p.run_through("deploy", run="r3", tables=other)["deploy"]["unchanged"] is True
    assert cache_key(p.ctx("scores", run="r3"), p.ir) == second


def test_an_empty_input_gives_an_empty_table_with_the_score_columns(tmp_path):
    rows = classification_rows(n=60)
    text = spec().replace("  rows: {type: csv, uri: data/rows.csv}", "  rows: {type: csv, uri: data/rows.csv}\n  empty: {type: csv, uri: e.csv}")
    p = Pipeline(tmp_path, text + "predict:\n  s: {model: trained, input: empty}\n", {"rows": rows, "empty": rows.head(0)})
    p.run_through("train")
    assert p.run("s")["rows"] == 0
    manifest = p.store.manifest(p.store.step_key("r1", "s"))
    schema = pq.read_schema(p.store.file(manifest, "table.parquet"))
    assert schema.names == [*rows.columns, "prediction", "probability", "model_version"]
    assert str(schema.field("prediction").type) == "int64"  # the classes' type
