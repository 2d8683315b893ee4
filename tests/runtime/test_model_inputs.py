"""docs/model-inputs.md, pinned: how a training table becomes model inputs (runtime/data.py).
Each test names the section of the page it holds to."""

from __future__ import annotations

import numpy as np
import pandas as pd

from dagsmith.runtime import data
from dagsmith.runtime.data import model_input, prepare

from runtime_testing import Pipeline  # noqa: E402

SPEC = """
dagsmith: 1
pipeline: {name: inputs-test}
sources:
  raw: {type: csv, uri: data/raw.csv}
features:
  rows:
    inputs: [raw]
    sql: SELECT * FROM raw
    key: [customer_id]
training:
  inputs: [rows]
  target: y
  split: {test_size: 0.25, seed: 3}
  model: {estimator: sklearn.linear_model.LogisticRegression, params: {max_iter: 500}}
"""


def pipeline(tmp_path, name: str, rows: pd.DataFrame, spec: str = SPEC) -> Pipeline:
    (tmp_path / name).mkdir()
    return Pipeline(tmp_path / name, spec, {"rows": rows})


def table(n: int = 1400, seed: int = 0) -> pd.DataFrame:
    rng = np.random.default_rng(seed)
    return pd.DataFrame({
        "customer_id": np.arange(n),                                         # the feature's key: never an input
        "plan": rng.choice(["pro", "basic", None], size=n),                 # text: one-hot
        "seats": rng.integers(1, 9, size=n),                                # a number: as it is
        "active": rng.random(n) > 0.5,                                      # boolean: 0/1
        "tenure": pd.to_timedelta(rng.integers(1, 900, size=n), unit="D"),  # duration: seconds
        "signed_up": pd.Timestamp("2024-01-01") + pd.to_timedelta(rng.integers(0, 300, size=n), unit="D"),  # dropped
        "email": [f"user{i}@example.com" for i in range(n)],                # > MAX_CATEGORIES distinct: dropped
        "region": rng.choice(["eu", "us"], size=n),
        "y": (rng.random(n) > 0.7).astype(int),
    })


def test_one_hot_naming_dropped_columns_and_how_values_become_numbers(tmp_path):
    """Sections "Which columns are features", "How each kind of column is encoded"."""
    p = Pipeline(tmp_path, SPEC, {"rows": table()})
    p.run("train")
    model = p.read("train", "model.joblib")
    assert data.MAX_CATEGORIES == 1000
    # numbers, booleans and durations first (in table order), then each text column's
    # `column=value` indicators, values sorted; no key, no target, no dropped column
    assert model["columns"] == ["seats", "active", "tenure", "plan=basic", "plan=pro", "region=eu", "region=us"]
    assert model["dropped"] == {  # counted on the train rows: 1050 of 1400
        "signed_up": "datetime column (derive numbers from it in a feature step)",
        "email": "text column with 1050 distinct values (> 1000: an identifier?)",
    }
    rows = pd.DataFrame({"customer_id": [1, 2, 3], "plan": ["pro", None, "gold"], "seats": [2, 3, 4],
                         "active": [True, False, True], "tenure": pd.to_timedelta([1, 2, 3], unit="D"),
                         "signed_up": pd.Timestamp("2024-01-01"), "email": "x", "region": ["us", "eu", "eu"]})
    X = model_input(model, rows)
    assert X["active"].tolist() == [1, 0, 1] and X["tenure"].tolist() == [86400.0, 172800.0, 259200.0]
    # a null and a value never seen in training ("gold"): every indicator of the column is 0
    assert X[["plan=basic", "plan=pro"]].values.tolist() == [[0, 1], [0, 0], [0, 0]]


def test_mixed_values_are_named_as_json_text():
    """Section "How each kind of column is encoded": a mixed column's indicators."""
    frame = pd.DataFrame({"v": [1, "a", True, None, 2.5]})
    encoding, dropped = data.plan_encoding(frame, ["v"])
    assert encoding["categorical"] == ["v"] and not dropped
    assert list(data.encode(frame, encoding).columns) == ["v=1", "v=2.5", "v=a", "v=true"]


def test_keys_order_the_rows_before_the_split(tmp_path):
    """Section "Which rows, in which order": the same rows in another order give the same split."""
    rows = table(300)
    shuffled = rows.sample(frac=1.0, random_state=9).reset_index(drop=True)
    first, second = pipeline(tmp_path, "a", rows), pipeline(tmp_path, "b", shuffled)
    a, b = prepare(first.ctx("train"), None), prepare(second.ctx("train"), None)
    assert a.test_rows["customer_id"].tolist() == b.test_rows["customer_id"].tolist()
    assert a.X_train.equals(b.X_train)


def test_stratified_split_and_split_by_column(tmp_path):
    """Section "The held-out split"."""
    rows = table(400)
    p = pipeline(tmp_path, "s", rows)
    prepared = prepare(p.ctx("train"), None)
    assert len(prepared.y_test) == 100  # ceil(0.25 x 400)
    share = rows["y"].mean()
    assert abs(prepared.y_test.mean() - share) <= 0.01 and abs(prepared.y_train.mean() - share) <= 0.01  # stratified
    by_column = SPEC.replace("split: {test_size: 0.25, seed: 3}", "split: {column: fold}")
    marked = rows.assign(fold=np.where(rows["customer_id"] % 5 == 0, "test", "train"))
    q = pipeline(tmp_path, "c", marked, by_column)
    held = prepare(q.ctx("train"), None)
    assert sorted(held.test_rows["customer_id"].tolist()) == list(range(0, 400, 5))
    assert "fold" not in held.columns and not any(c.startswith("fold=") for c in held.columns)
