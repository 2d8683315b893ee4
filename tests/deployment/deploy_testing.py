"""What the deployment tests share: a spec with a deployment section, and its Pipeline (the
runtime tests' helper: a compiled spec, source tables committed into a store, steps run in order)."""

from __future__ import annotations

import sys
from pathlib import Path

import numpy as np
import pandas as pd

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "runtime"))

from runtime_testing import Pipeline  # noqa: E402

__all__ = ["Pipeline", "rows", "spec"]


def rows(n: int = 240, seed: int = 0) -> pd.DataFrame:
    rng = np.random.default_rng(seed)
    x1, x2 = rng.normal(size=n), rng.normal(size=n)
    y = ((x1 + 0.5 * x2 + rng.normal(scale=0.7, size=n)) > 0.3).astype(int)
    return pd.DataFrame({"x1": x1, "x2": x2, "plan": rng.choice(["basic", "pro"], size=n), "y": y})


def spec(deployment: str, *, gates: str = "", sweep: str = "", image: str = "ghcr.io/acme/dagsmith:1") -> str:
    return f"""
dagsmith: 1
pipeline: {{name: deploy-test}}
defaults: {{image: {image}}}
sources:
  rows: {{type: csv, uri: data/rows.csv}}
training:
  inputs: [rows]
  target: y
  split: {{test_size: 0.3, seed: 5}}
  model: {{estimator: sklearn.linear_model.LogisticRegression, params: {{max_iter: 300}}}}
{sweep}
evaluation:
  metrics: [roc_auc, accuracy]
{gates}
deployment:
{deployment}
"""
