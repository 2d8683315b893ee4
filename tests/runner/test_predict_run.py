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
