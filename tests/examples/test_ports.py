"""The two ported pipelines (examples/spaceflights: Kedro's starter; examples/penguins: TFX's
penguin example with BulkInferrer) run locally twice: the second run is fully cached and deploys
nothing new, user code reads and writes pipeline tables through `dagsmith.step`, and the batch
scores equal what `dagsmith serve` answers for the same rows (and `dagsmith.load_model`).
Airflow, Argo and Step Functions run both in the conformance suite (tests/conformance), which
compares every table they write with the local run's."""

from __future__ import annotations

import json
import subprocess
import sys
import threading
import urllib.request
from pathlib import Path

import pytest

DAGSMITH = str(Path(sys.executable).with_name("dagsmith"))
CACHEABLE = ("source", "feature", "validate", "plan", "train", "select", "predict")


def run(folder: Path, workdir: Path) -> dict:
    result = subprocess.run([DAGSMITH, "run", "pipeline.yaml", "--workdir", str(workdir), "--format", "json"],
                            capture_output=True, text=True, cwd=folder, timeout=600)
    assert result.returncode == 0, result.stderr[-4000:]
    return json.loads(result.stdout)


def kinds(folder: Path, workdir: Path, record: dict) -> dict:
    (ir_file,) = (workdir / "runs" / record["run_id"]).glob("*.ir.json")
    return {step["id"]: step["kind"] for step in json.loads(ir_file.read_text())["steps"]}


def registry_versions(workdir: Path, model: str) -> list[int]:
    folder = workdir / "registry" / model
    return sorted(int(p.name) for p in folder.iterdir() if p.name.isdigit()) if folder.is_dir() else []


def table_rows(workdir: Path, run_id: str, step_id: str, name: str = "table.parquet") -> list[dict]:
    import pyarrow.parquet as pq

    from dagsmith.runtime.store import Store

    store = Store.open(str(workdir))
    manifest = store.require(store.step_key(run_id, step_id))
    return pq.read_table(store.file(manifest, name)).to_pylist()


def check_second_run(folder: Path, workdir: Path, first: dict, model: str) -> dict:
    second = run(folder, workdir)
    assert second["status"] == "succeeded"
    by_kind = kinds(folder, workdir, second)
    states = {sid: entry["state"] for sid, entry in second["steps"].items()}
    assert {sid: s for sid, s in states.items() if by_kind[sid] in CACHEABLE or
            (by_kind[sid] == "custom")} == {sid: "cached" for sid in states if by_kind[sid] in CACHEABLE or by_kind[sid] == "custom"}
    assert registry_versions(workdir, model) == [1]  # nothing new registered
    assert second["metrics"] == first["metrics"]
    return second


@pytest.mark.slow
def test_spaceflights_runs_and_reruns_cached(example_copy, tmp_path):
    folder = example_copy("spaceflights")
    workdir = tmp_path / "work"
    first = run(folder, workdir)
    assert first["status"] == "succeeded", first
    assert first["metrics"]["r2"] > 0.7 and first["metrics"]["mean_absolute_error"] < 400, first["metrics"]
    report = table_rows(workdir, first["run_id"], "capacity_report", "tables/passenger_capacity_by_type.parquet")
    assert [r["shuttle_type"] for r in report] == ["Type A1", "Type F5", "Type V5"]
    assert all(1 <= r["mean_passenger_capacity"] <= 8 for r in report)
    assert registry_versions(workdir, "spaceflights-price") == [1]
    check_second_run(folder, workdir, first, "spaceflights-price")


def serve_answers(workdir: Path, model: str, rows: list[dict]) -> dict:
    """What a real `dagsmith serve` (HTTP, in a thread) answers for the rows."""
    from dagsmith.serving import make_server

    server = make_server(workdir, model, "127.0.0.1", 0, log=lambda message: None)
    started = threading.Event()
    thread = threading.Thread(target=server.serve_forever, kwargs={"ready": started.set}, daemon=True)
    thread.start()
    try:
        assert started.wait(30)
        request = urllib.request.Request(f"{server.url}/predict", data=json.dumps({"rows": rows}).encode(),
                                         headers={"Content-Type": "application/json"})
        with urllib.request.urlopen(request, timeout=30) as response:
            return json.loads(response.read())
    finally:
        server.stop()
        thread.join(30)


@pytest.mark.slow
def test_penguins_batch_scores_equal_serve_and_rerun_is_cached(example_copy, tmp_path):
    folder = example_copy("penguins")
    workdir = tmp_path / "work"
    first = run(folder, workdir)
    assert first["status"] == "succeeded", first
    assert first["metrics"]["accuracy"] > 0.9, first["metrics"]
    scores = table_rows(workdir, first["run_id"], "penguin_scores")
    inputs = table_rows(workdir, first["run_id"], "new_penguins_transformed")
    assert len(scores) == len(inputs) == 60
    assert [r["penguin_id"] for r in scores] == [r["penguin_id"] for r in inputs]
    assert {r["model_version"] for r in scores} == {1}
    features = ["culmen_length_mm", "culmen_depth_mm", "flipper_length_mm", "body_mass_kg"]
    rows = [{c: r[c] for c in features} for r in inputs]
    served = serve_answers(workdir, "penguin", rows)
    assert served["version"] == 1
    assert [r["prediction"] for r in scores] == served["predictions"]
    assert [r["probability"] for r in scores] == [max(p.values()) for p in served["probabilities"]]
    import dagsmith

    model = dagsmith.load_model(workdir, "penguin", "production")
    assert list(model.predict(rows)) == served["predictions"]
    check_second_run(folder, workdir, first, "penguin")
