"""`dagsmith run` twice on the minimal example with a deployment and batch scoring: the second,
unchanged run caches the scores (the registry version's fingerprint is in the key) and deploys
nothing ("unchanged, version 1"); the scores are serve's answers for the same rows."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pandas as pd
import pyarrow.parquet as pq

DAGSMITH = str(Path(sys.executable).parent / "dagsmith")


def test_second_unchanged_run_caches_scores_and_deploys_nothing(tmp_path, example_copy):
    folder = example_copy("minimal")
    spec = tmp_path / "pipeline.yaml"
    spec.write_text((folder / "pipeline.yaml").read_text().replace("data/applicants.csv", str(folder / "data" / "applicants.csv"))
                    + "deployment: {model_name: minimal}\n"
                    + "predict:\n  scores: {model: production, input: applicants}\n  mine: {model: trained, input: applicants}\n")
    work = tmp_path / "work"

    def run():
        done = subprocess.run([DAGSMITH, "run", str(spec), "--workdir", str(work), "--format", "json"],
                              capture_output=True, text=True, cwd=tmp_path, timeout=300)
        assert done.returncode == 0, done.stderr[-3000:]
        return json.loads(done.stdout), done.stderr

    first, _ = run()
    assert first["steps"]["scores"]["state"] == first["steps"]["mine"]["state"] == "succeeded"
    assert first["deployment"]["version"] == 1
    second, printed = run()
    assert second["steps"]["scores"]["state"] == second["steps"]["mine"]["state"] == "cached"
    assert second["deployment"]["unchanged"] is True and second["deployment"]["version"] == 1
    assert sorted(p.name for p in (work / "registry" / "minimal").iterdir() if p.name.isdigit()) == ["1"]

    table = pq.read_table(next(work.glob(f"runs/{first['run_id']}/steps/scores/table.parquet"))).to_pandas()
    rows = pd.read_csv(folder / "data" / "applicants.csv")
    assert len(table) == len(rows) and (table["model_version"] == 1).all()
    import dagsmith

    model = dagsmith.load_model(work, "minimal")
    assert table["prediction"].tolist() == model.predict(rows)


def test_a_predict_fanned_out_over_rows_runs_cached_and_reads_as_one_table(tmp_path):
    """rows_per_task: the runner runs one task per 1,000 rows (3 for 2,500), a feature reads the
    parts as one table, and an unchanged second run reuses the items (cached, like train's)."""
    import numpy as np

    rng = np.random.default_rng(0)
    x = rng.normal(size=2500)
    pd.DataFrame({"x": x, "z": rng.normal(size=2500), "y": (x + rng.normal(scale=0.5, size=2500) > 0).astype(int)}) \
        .to_csv(tmp_path / "rows.csv", index=False)
    spec = tmp_path / "pipeline.yaml"
    spec.write_text("""dagsmith: 1
pipeline: {name: rows}
sources:
  rows: {type: csv, uri: rows.csv}
training:
  inputs: [rows]
  target: y
  model: {estimator: sklearn.linear_model.LogisticRegression}
predict:
  one: {model: trained, input: rows}
  parts: {model: trained, input: rows, rows_per_task: 1000, batch_rows: 400}
features:
  counted:
    inputs: [parts]
    sql: SELECT count(*) AS n, sum(prediction) AS positive FROM parts
""")
    work = tmp_path / "work"

    def run():
        done = subprocess.run([DAGSMITH, "run", str(spec), "--workdir", str(work), "--format", "json"],
                              capture_output=True, text=True, cwd=tmp_path, timeout=300)
        assert done.returncode == 0, done.stderr[-3000:]
        return json.loads(done.stdout)

    first = run()
    assert first["steps"]["parts"]["state"] == "succeeded" and first["steps"]["parts"]["items"]["total"] == 3
    folder = work / "runs" / first["run_id"]
    parts = [pq.read_table(folder / "items" / "parts" / str(i) / "table.parquet") for i in range(3)]
    assert [t.num_rows for t in parts] == [1000, 1000, 500]
    import pyarrow as pa

    assert pa.concat_tables(parts).equals(pq.read_table(folder / "steps" / "one" / "table.parquet"))
    counted = pq.read_table(folder / "steps" / "counted" / "table.parquet").to_pylist()
    assert counted == [{"n": 2500, "positive": sum(pa.concat_tables(parts).column("prediction").to_pylist())}]

    second = run()
    assert second["steps"]["parts"]["state"] == second["steps"]["counted"]["state"] == "cached"
    again = work / "runs" / second["run_id"] / "items" / "parts"
    assert sorted(p.name for p in again.iterdir()) == ["0", "1", "2"]  # the items, linked into the new run
