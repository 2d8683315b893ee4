"""Guard rails where inference can go wrong (issue 24 item 2): the train result warns when a text
column is mostly numbers, when one-hot encoding adds more than guards.MAX_ONE_HOT columns and
when a column is dropped, and says how many columns the model takes."""

from __future__ import annotations

import math

import numpy as np
import pandas as pd

from dagsmith.runtime import guards
from dagsmith.runtime.data import prepare

from runtime_testing import Pipeline  # noqa: E402

SPEC = """
dagsmith: 1
pipeline: {name: guard-rails}
sources:
  penguins: {type: csv, uri: data/penguins.csv}
training:
  inputs: [penguins]
  target: species
  split: {test_size: 0.25, seed: 1}
  model: {estimator: sklearn.tree.DecisionTreeClassifier, params: {random_state: 0}}
"""


def penguins(n: int = 300, text_numbers: bool = True) -> pd.DataFrame:
    """Measurements as a CSV reader without the right null values gives them: text, with '?'."""
    rng = np.random.default_rng(0)
    species = rng.choice(["Adelie", "Gentoo", "Chinstrap"], size=n)
    bill = np.round(rng.normal(44, 5, size=n), 1)
    mass = np.round(rng.normal(4200, 800, size=n)).astype(int)
    frame = pd.DataFrame({"species": species, "island": rng.choice(["Biscoe", "Dream"], size=n),
                          "bill_length_mm": bill, "body_mass_g": mass})
    if text_numbers:
        frame["bill_length_mm"] = [("?" if i % 40 == 0 else str(v)) for i, v in enumerate(bill)]  # 97.5% numbers
        frame["body_mass_g"] = [("?" if i % 5 == 0 else str(v)) for i, v in enumerate(mass)]  # 80%: not "mostly"
    return frame


def test_a_text_column_of_numbers_and_a_wide_one_hot_encoding_are_warned_about(tmp_path):
    p = Pipeline(tmp_path, SPEC, {"penguins": penguins()})
    result = p.run("train")
    warnings = result["warnings"]
    bill = next(w for w in warnings if w.startswith("column 'bill_length_mm'"))
    train_rows = prepare(p.ctx("train")).X_train  # the share is of the train rows' values
    unknown = int(train_rows["bill_length_mm=?"].sum())
    share = math.floor(100 * (len(train_rows) - unknown) / len(train_rows))
    assert share >= 90 and bill.startswith(f"column 'bill_length_mm' is text but {share}% of its values are numbers "
                                           f"(the others: '?' ({unknown})): ")
    assert bill.endswith("): declare its type or its null values (sources.penguins.columns / null_values)")
    assert not any(w.startswith("column 'body_mass_g'") for w in warnings)  # 80% numbers: below the 90% bar
    wide = next(w for w in warnings if w.startswith("one-hot encoding adds"))
    prepared = prepare(p.ctx("train"))
    one_hot = [c for c in prepared.columns if "=" in c]
    assert len(one_hot) > guards.MAX_ONE_HOT
    assert wide.startswith(f"one-hot encoding adds {len(one_hot)} columns (more than {guards.MAX_ONE_HOT}): ")
    widest = max(("bill_length_mm", "body_mass_g"), key=lambda c: sum(x.startswith(c + "=") for x in one_hot))
    assert f"{widest!r} (" in wide.split(": ", 1)[1].split(",")[0]  # the widest first
    assert result["model_inputs"] == len(prepared.columns) == result["features"]


def test_numbers_as_numbers_give_no_warning_and_the_input_count(tmp_path):
    p = Pipeline(tmp_path, SPEC, {"penguins": penguins(text_numbers=False)})
    result = p.run("train")
    assert "warnings" not in result
    assert result["model_inputs"] == 4  # bill, mass, island=Biscoe, island=Dream


def test_dropped_columns_are_warnings_and_each_partition_says_which(tmp_path):
    table = penguins(text_numbers=False)
    table["seen"] = pd.date_range("2024-01-01", periods=len(table), freq="h")
    spec = SPEC.replace("  split:", "  partition_by: island\n  partitions: [Biscoe, Dream]\n  split:")
    p = Pipeline(tmp_path, spec, {"penguins": table})
    result = p.run("train", item=1)
    assert result["warnings"] == ["partition 'Dream': column 'seen' dropped (not a model input): datetime column "
                                  "(derive numbers from it in a feature step)"]
    assert result["model_inputs"] == 2
    warnings, counts = guards.summarize([p.run("train", item=0), result, {"model_inputs": [2, 5]}])
    assert [w.split(":")[0] for w in warnings] == ["partition 'Biscoe'", "partition 'Dream'"] and counts == [2, 5]
    assert guards.model_inputs_text(counts) == "model inputs: 2 to 5 columns (the partitions' models differ)"


def test_the_numeric_share_counts_non_null_values_only():
    series = pd.Series(["1.5", " 2 ", None, "3e2", "-4", "x", None, "5", "6", "7", "8", "9"])
    text = guards.numeric_text_warning(series, "v", "here")
    assert text == "column 'v' is text but 90% of its values are numbers (the others: 'x' (1)): declare its type or its null values (here)"
    assert guards.numeric_text_warning(pd.Series(["a", "1"]), "v", "here") is None
    assert guards.numeric_text_warning(pd.Series([1.0, 2.0]), "v", "here") is None
