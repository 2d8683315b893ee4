"""dagsmith.load_model(...).predict gives exactly serve's answers for the same rows: the examples
trained and deployed locally, then the same rows sent to the serving app (as a JSON body, parsed
as a request is) and to the public model API (as a DataFrame and as dicts)."""

from __future__ import annotations

import json
import math
import subprocess
import sys
from pathlib import Path

import pandas as pd
import pytest

import dagsmith
from dagsmith.model import PredictError
from dagsmith.runtime.store import LocalStore
from dagsmith.serving.app import ServingApp

DAGSMITH = str(Path(sys.executable).parent / "dagsmith")


def _run(spec: Path, workdir: Path) -> None:
    result = subprocess.run([DAGSMITH, "run", str(spec), "--workdir", str(workdir)], capture_output=True,
                            text=True, cwd=spec.parent, timeout=900)
    assert result.returncode == 0, result.stdout[-2000:] + result.stderr[-2000:]


def _json_body(frame: pd.DataFrame) -> bytes:
    """The rows as a client would send them: JSON, missing values as null (written independently
    of dagsmith's own conversion, model.as_rows)."""
    rows = []
    for record in frame.to_dict("records"):
        rows.append({k: None if (isinstance(v, float) and math.isnan(v)) else (v.item() if hasattr(v, "item") else v)
                     for k, v in record.items()})
    return json.dumps({"rows": rows}).encode()


def _same_as_serve(workdir: Path, model_name: str, frame: pd.DataFrame) -> dagsmith.model.Model:
    app = ServingApp(LocalStore(workdir), model_name, reload_interval=0)
    online = app.predict(app.deployment.production, ServingApp.parse_rows(_json_body(frame)))
    model = dagsmith.load_model(workdir, model_name)
    assert model.version == online["version"] == app.deployment.production.version
    assert model.predict(frame) == online["predictions"]
    assert model.predict(json.loads(_json_body(frame))["rows"]) == online["predictions"]
    assert model.predict_proba(frame) == online["probabilities"]  # exactly: the same floats
    return model


def test_minimal_example_offline_equals_serve(tmp_path, example_copy):
    folder = example_copy("minimal")
    spec = tmp_path / "pipeline.yaml"
    spec.write_text((folder / "pipeline.yaml").read_text().replace("data/applicants.csv", str(folder / "data" / "applicants.csv"))
                    + "deployment: {model_name: minimal}\n")
    _run(spec, tmp_path / "work")
    frame = pd.read_csv(folder / "data" / "applicants.csv").head(400)
    model = _same_as_serve(tmp_path / "work", "minimal", frame)
    assert model.task == "classifier" and model.classes == [0, 1] and model.partition_by is None
    assert "defaulted" not in model.features and set(model.features) <= set(frame.columns)
    assert set(model.predict_proba(frame.head(1))[0]) == {"0", "1"}
    # a row without a feature: the same message serve answers 422 with, as a PredictError
    with pytest.raises(PredictError, match=r"rows\[0\] lacks feature columns the model needs"):
        model.predict([{"x": 1}])
    with pytest.raises(PredictError, match="a list of"):
        model.predict({"x": 1})


@pytest.mark.slow
def test_churn_example_offline_equals_serve(tmp_path, example_copy):
    folder = example_copy("churn")
    _run(folder / "pipeline.yaml", tmp_path / "work")
    import pyarrow.parquet as pq

    features = next((tmp_path / "work" / "runs").glob("*/steps/churn_features/table.parquet"))
    frame = pq.read_table(features).to_pandas().head(500)
    model = _same_as_serve(tmp_path / "work", "churn", frame)
    assert model.version == 1 and "churned" not in model.features


def test_import_dagsmith_stays_light():
    code = ("import sys, dagsmith; heavy = [m for m in ('pandas', 'sklearn', 'numpy', 'dagsmith.model') if m in sys.modules]; "
            "print(heavy); assert callable(dagsmith.load_model); assert 'dagsmith.model' in sys.modules")
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True)
    assert out.returncode == 0 and out.stdout.strip() == "[]", out.stdout + out.stderr
