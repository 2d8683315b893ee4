"""Every example runs end to end with real DuckDB, Great Expectations and scikit-learn."""

from __future__ import annotations

import json
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[2]
DAGSMITH = str(Path(sys.executable).parent / "dagsmith")


def run(spec: Path, workdir: Path, *extra: str, cwd: Path = REPO):
    result = subprocess.run(
        [DAGSMITH, "run", str(spec), "--workdir", str(workdir), "--format", "json", *extra],
        capture_output=True, text=True, cwd=cwd, timeout=900,
    )
    return result, json.loads(result.stdout) if result.stdout else None


def states(record: dict) -> dict:
    return {step: entry["state"] for step, entry in record["steps"].items()}


@pytest.mark.slow
def test_minimal_example(tmp_path, example_copy):
    result, record = run(example_copy("minimal") / "pipeline.yaml", tmp_path)
    assert result.returncode == 0 and record["status"] == "succeeded", result.stderr
    assert set(record["metrics"]) == {"accuracy", "roc_auc"} and record["metrics"]["roc_auc"] > 0.7


@pytest.mark.slow
def test_churn_example_then_champion_challenger(tmp_path, example_copy):
    churn = example_copy("churn") / "pipeline.yaml"
    result, record = run(churn, tmp_path)
    assert result.returncode == 0 and record["status"] == "succeeded", result.stderr
    assert set(states(record).values()) == {"succeeded"}
    assert record["steps"]["train"]["items"] == {"total": 6, "done": 6, "failed": 0}
    assert record["metrics"]["roc_auc"] >= 0.75
    assert all(gate["passed"] for gate in record["gates"])
    challenger = next(g for g in record["gates"] if g.get("compare_to") == "production")
    assert "no production model" in challenger["note"]
    assert record["deployment"]["deployed"] is True
    registry = tmp_path / "registry" / "churn"
    aliases = json.loads((registry / "aliases.json").read_text())
    assert aliases["production"] == 1  # the first canary becomes production: nothing to split with
    lineage = json.loads((registry / "1" / "lineage.json").read_text())
    assert lineage["run_id"] == record["run_id"] and set(lineage["inputs"]) >= {"customers", "events", "plans"}

    # The second run compares with the model now in production: the same model, so "unchanged":
    # nothing registered, the aliases stay.
    result, second = run(churn, tmp_path)
    assert second["status"] == "succeeded", result.stderr
    assert states(second)["train"] == "cached" and states(second)["evaluate"] == "succeeded"
    challenger = next(g for g in second["gates"] if g.get("compare_to") == "production")
    assert challenger["production_version"] == 1 and challenger["threshold"] == pytest.approx(challenger["observed"] - 0.01, abs=1e-6)
    assert second["deployment"]["unchanged"] is True and second["deployment"]["version"] == 1
    assert sorted(p.name for p in registry.iterdir() if p.name.isdigit()) == ["1"]
    aliases = json.loads((registry / "aliases.json").read_text())
    assert aliases["production"] == 1 and aliases["canary"] is None

    # Another lookback window: another model, deployed as a canary.
    result, third = run(churn, tmp_path, "--param", "lookback_days=29")
    assert third["status"] == "succeeded", result.stderr
    aliases = json.loads((registry / "aliases.json").read_text())
    assert aliases["production"] == 1 and aliases["canary"] == {"version": 2, "traffic_percent": 10}


@pytest.mark.slow
def test_failing_gate_ends_gated_and_skips_deploy(tmp_path, example_copy):
    folder = tmp_path / "churn"
    shutil.copytree(example_copy("churn"), folder)
    spec = folder / "pipeline.yaml"
    spec.write_text(spec.read_text().replace("value: 0.75", "value: 0.999"))
    result, record = run(spec, tmp_path / "work", cwd=tmp_path)
    assert result.returncode == 0 and record["status"] == "gated", result.stderr
    assert states(record)["gate"] == "succeeded"
    assert states(record)["deploy"] == states(record)["notify"] == "skipped"
    failed = [g for g in record["gates"] if not g["passed"]]
    assert failed and failed[0]["threshold"] == 0.999
    assert not (tmp_path / "work" / "registry" / "churn").exists()


@pytest.mark.slow
def test_forecast_example_partitions_found_at_run_time(tmp_path, example_copy):
    result, record = run(example_copy("forecast") / "pipeline.yaml", tmp_path, "--env", "dev")
    assert result.returncode == 0 and record["status"] == "succeeded", result.stderr
    items = record["steps"]["train"]["items"]
    assert items["total"] == items["done"] == 40 * 2
    assert len(record["metrics"]) == 40  # one model per region
    assert all(g["passed"] for g in record["gates"])
    deployed = json.loads((tmp_path / "registry" / "demand-forecast" / "aliases.json").read_text())
    assert deployed["production"] == 1
