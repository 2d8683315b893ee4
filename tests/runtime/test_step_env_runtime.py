"""A step's `env` (docs/spec.md, step options) is set by the runtime for EVERY step kind while the
step runs, its references filled in with the run's values and `$${` written `${`: every backend
runs steps through `run_step`, so this is the one meaning everywhere (issue 22, finding 12)."""

from __future__ import annotations

import os

import pandas as pd
import pyarrow.parquet as pq

from runtime_testing import RUN, Pipeline

RECORD = '''
import os


def record(frames):
    frame = frames["people"].copy()
    frame["tag"] = os.environ.get("STEP_TAG")
    frame["flag"] = os.environ.get("FLAG")
    frame["number"] = os.environ.get("NUMBER")
    return frame
'''

SPEC = """
dagsmith: 1
pipeline: {name: envs}
params: {who: {type: string, default: "it's me"}}
sources:
  people: {type: csv, uri: people.csv}
features:
  tagged:
    inputs: [people]
    transform: "envcheck:record"
    env: {STEP_TAG: "run ${run.id} on ${run.date} for ${params.who} $${HOME}", FLAG: true, NUMBER: 3}
"""


def test_a_feature_step_sees_its_env_resolved_and_the_process_gets_its_own_back(tmp_path, monkeypatch):
    (tmp_path / "envcheck.py").write_text(RECORD)  # imported from the spec's folder (the root)
    monkeypatch.setenv("FLAG", "from the worker")
    monkeypatch.delenv("STEP_TAG", raising=False)
    pipeline = Pipeline(tmp_path, SPEC, {"people": pd.DataFrame({"x": [1, 2]})})
    pipeline.run("tagged")
    ctx = pipeline.ctx("tagged")
    table = pq.read_table(ctx.input_file("tagged", "table.parquet")).to_pandas()
    assert set(table["tag"]) == {f"run {RUN} on 2024-06-03 for it's me ${{HOME}}"}
    assert (set(table["flag"]), set(table["number"])) == ({"true"}, {"3"})
    # afterwards the process's environment is what it was (an Airflow worker runs many steps)
    assert os.environ["FLAG"] == "from the worker" and "STEP_TAG" not in os.environ


def test_the_step_env_is_restored_when_the_step_fails(tmp_path, monkeypatch):
    (tmp_path / "envboom.py").write_text("def record(frames):\n    raise ValueError('boom')\n")
    monkeypatch.delenv("STEP_TAG", raising=False)
    pipeline = Pipeline(tmp_path, SPEC.replace("envcheck:record", "envboom:record"), {"people": pd.DataFrame({"x": [1, 2]})})
    try:
        pipeline.run("tagged")
    except ValueError:
        pass
    assert "STEP_TAG" not in os.environ
