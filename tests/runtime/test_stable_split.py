"""A split that is stable as data grows (issue 24 item 3): `split: {hash_of, test_fraction}`
holds a row out when the SHA-256 of its key values falls below test_fraction, so a table grown
by half keeps every old row on its side; champion/challenger gates say which rows they scored
both models on."""

from __future__ import annotations

import hashlib

import numpy as np
import pandas as pd
import pytest

from dagsmith.runtime.context import StepFailed
from dagsmith.runtime.data import column_key_texts, hash_test_mask, key_fraction, key_text, prepare

from runtime_testing import Pipeline  # noqa: E402


def rows(n: int, start: int = 0, seed: int = 0) -> pd.DataFrame:
    rng = np.random.default_rng(seed)
    x1, x2 = rng.normal(size=n), rng.normal(size=n)
    region = np.array(["a", "b"])[(np.arange(start, start + n)) % 2]
    y = ((x1 + 0.5 * x2 + rng.normal(scale=0.7, size=n)) > 0.2).astype(int)
    return pd.DataFrame({"customer_id": np.arange(start, start + n), "x1": x1, "x2": x2, "region": region, "y": y})


def spec(extra: str = "", tail: str = "") -> str:
    return f"""
dagsmith: 1
pipeline: {{name: stable-split}}
sources:
  rows: {{type: csv, uri: data/rows.csv}}
training:
  inputs: [rows]
  target: y
  split: {{hash_of: [customer_id], test_fraction: 0.2}}
  model: {{estimator: sklearn.linear_model.LogisticRegression}}
{extra}
{tail}
"""


def _held_out_ids(prepared) -> set:
    return set(prepared.test_rows["customer_id"])


def test_a_grown_table_keeps_every_old_row_on_its_side(tmp_path):
    old = rows(2000)
    p = Pipeline(tmp_path, spec(), {"rows": old})
    assert p.ir.step("train").config["split"] == {"hash_of": ["customer_id"], "test_fraction": 0.2}
    first = prepare(p.ctx("train"))
    assert abs(len(first.y_test) / len(old) - 0.2) < 0.03  # near test_fraction
    assert "customer_id" not in first.columns  # a split key is an identifier, never a model input
    grown = pd.concat([rows(1000, start=2000, seed=1), old.sample(frac=1.0, random_state=4)])  # +50%, reordered
    p.commit_tables("r2", {"rows": grown})
    second = prepare(p.ctx("train", run="r2"))
    old_ids = set(old.customer_id)
    assert _held_out_ids(second) & old_ids == _held_out_ids(first)  # no old row changed sides
    assert abs(len(second.y_test) / len(grown) - 0.2) < 0.03
    # the side is the documented hash, nothing else: sha256 of the canonical key text < 0.2
    by_hand = {i for i in old_ids if int.from_bytes(hashlib.sha256(f"[{i}]".encode()).digest()[:8], "big") / 2**64 < 0.2}
    assert _held_out_ids(first) == by_hand


def test_the_key_text_is_canonical():
    assert key_text([7, "é", True, None]) == '[7,"é",true,null]'
    assert key_text([np.int64(7)]) == key_text([7.0]) == key_text([np.float64(7.0)]) == "[7]"  # an int column that became float
    assert key_text([pd.Timestamp("2024-01-02")]) == '["2024-01-02T00:00:00"]'
    assert key_fraction([7]) == int.from_bytes(hashlib.sha256(b"[7]").digest()[:8], "big") / 2**64
    # the column-at-a-time path writes the same text as key_text, whatever the column types
    frame = pd.DataFrame({"i": [1, -2, 3], "f": [1.0, 2.5, -0.0], "s": ["a", "é\"", "7"], "b": [True, False, True],
                          "d": pd.to_datetime(["2024-01-02 00:00", "2024-02-03 04:05", "1999-12-31 00:00"]),
                          "o": pd.Series([1, "x", 2.0], dtype=object)})
    columns = list(frame.columns)
    by_row = [key_fraction(row) < 0.5 for row in frame.itertuples(index=False, name=None)]
    assert hash_test_mask(frame, columns, 0.5).tolist() == by_row
    for column in columns:
        assert column_key_texts(frame[column]) == [key_text([v])[1:-1] for v in frame[column]]


def test_each_partition_is_split_by_the_same_hash(tmp_path):
    table = rows(1200)
    p = Pipeline(tmp_path, spec("  partition_by: region\n  partitions: [a, b]"), {"rows": table})
    for partition in ("a", "b"):
        part = table[table.region == partition]
        prepared = prepare(p.ctx("train"), partition)
        expected = {i for i in part.customer_id if key_fraction([i]) < 0.2}
        assert _held_out_ids(prepared) == expected and set(prepared.test_rows.region) == {partition}
        assert abs(len(expected) / len(part) - 0.2) < 0.05


def test_a_null_or_missing_key_is_an_error_naming_the_column(tmp_path):
    table = rows(300).astype({"customer_id": "float64"})
    table.loc[[3, 9], "customer_id"] = None
    p = Pipeline(tmp_path, spec(), {"rows": table})
    with pytest.raises(StepFailed, match=r"split hash_of column 'customer_id' has 2 null value\(s\): a row without a key"):
        prepare(p.ctx("train"))
    p.commit_tables("r2", {"rows": rows(300).drop(columns=["customer_id"])})
    with pytest.raises(StepFailed, match=r"split hash_of column 'customer_id' not in the training data"):
        prepare(p.ctx("train", run="r2"))


GATED = """evaluation:
  metrics: [roc_auc]
  gates:
    - {metric: roc_auc, compare_to: production, op: ">=", delta: -0.5}
deployment: {model_name: churn, target: local}"""


def test_champion_and_challenger_are_scored_on_this_runs_test_rows_and_the_gate_says_so(tmp_path):
    old = rows(800)
    p = Pipeline(tmp_path, spec(tail=GATED), {"rows": old})
    p.run_through("deploy")
    grown = pd.concat([old, rows(400, start=800, seed=2)])
    results = p.run_through("gate", run="r2", tables={"rows": grown})
    check = results["gate"]["gates"][0]
    held_out = prepare(p.ctx("gate", run="r2"))
    assert check["production_version"] == 1 and check["production_value"] is not None
    assert check["compared_on"] == (f"both on this run's {len(held_out.y_test)} test rows "
                                    "(split by a hash of customer_id: a row stays on its side as data grows)")
    # production's score is its model on exactly those rows
    from dagsmith.runtime import registry
    from dagsmith.runtime.data import model_input
    from sklearn.metrics import roc_auc_score

    production = registry.load_model(p.store, "churn", 1, None)
    proba = production["estimator"].predict_proba(model_input(production, held_out.test_rows))[:, 1]
    assert check["production_value"] == round(roc_auc_score(held_out.y_test, proba), 6)

    # the run summary and the report say it too
    import io

    from rich.console import Console

    from dagsmith.report.collect import RunData
    from dagsmith.report.sections import gates_table
    from dagsmith.report.svg import esc
    from dagsmith.runner.progress import summary

    out = io.StringIO()
    record = {"run_id": "r2", "pipeline": "stable-split", "status": "succeeded", "steps": {}, "gates": [check]}
    summary(record, Console(file=out, width=300))
    assert f"champion/challenger: {check['compared_on']}" in out.getvalue()
    assert esc(check["compared_on"]) in gates_table(RunData(record=record, ir=None))


def test_a_random_split_says_its_rows_are_redrawn_and_a_partition_says_which(tmp_path):
    text = spec("  partition_by: region\n  partitions: [a, b]", GATED).replace(
        "split: {hash_of: [customer_id], test_fraction: 0.2}", "split: {test_size: 0.25, seed: 1}")
    p = Pipeline(tmp_path, text, {"rows": rows(400)})
    p.run_through("deploy")
    checks = p.run_through("gate", run="r2", tables={"rows": rows(500)})["gate"]["gates"]
    assert [c["partition"] for c in checks] == ["a", "b"]
    for check in checks:
        n = len(prepare(p.ctx("gate", run="r2"), check["partition"]).y_test)
        assert check["compared_on"] == (f"both on this run's {n} test rows of partition {check['partition']!r} (a random split "
                                        "of this run's rows: other rows than earlier runs' when the data changed)")
