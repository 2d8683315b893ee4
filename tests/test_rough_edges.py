"""Rough edges a new user meets: help texts that name what exists, output that can be split,
no Airflow log lines among dagsmith's, a run summary that says what happened, `runs` that say
where they look, and a horovod build that names the tools it lacks."""

from __future__ import annotations

import io
import json
import os
import re
import shutil
import subprocess
import sys
from pathlib import Path

import pytest
from rich.console import Console

from dagsmith import backends
from dagsmith.cli import FILE_HEADER, main
from dagsmith.runner.progress import deployment_line, summary, threshold_text
from dagsmith_testing import REPO

DAGSMITH = str(Path(sys.executable).parent / "dagsmith")
MINIMAL = "examples/minimal/pipeline.yaml"


def run(capsys, *args):
    code = main(list(args))
    out, err = capsys.readouterr()
    return code, out, err


def rendered(record: dict, **kwargs) -> str:
    console = Console(file=io.StringIO(), width=200, color_system=None)
    summary(record, console, **kwargs)
    return console.file.getvalue()


# --- compile / deploy --help --------------------------------------------------------------


@pytest.mark.parametrize("command", ["compile", "deploy"])
def test_target_help_lists_the_available_targets(capsys, command):
    code, out, _ = run(capsys, command, "--help")
    assert code == 0 and "as they land" not in out
    text = " ".join(out.split())
    available = backends.available() if command == "compile" else ["airflow", "argo", "stepfunctions"]
    assert f"One of: {', '.join(available)}." in text
    assert "Planned" not in text  # every orchestrator has landed


# --- compile -o - -------------------------------------------------------------------------


def test_compile_to_stdout_puts_each_file_of_a_multi_file_target_under_a_header(capsys, in_repo, tmp_path):
    code, out, _ = run(capsys, "compile", MINIMAL, "--target", "airflow", "-o", "-")
    assert code == 0
    assert out.startswith(FILE_HEADER.format(name="minimal.ir.json") + "\n")
    parts = re.split(r"^# ---- file: (.+) ----\n", out, flags=re.M)
    assert parts[0] == ""
    printed = dict(zip(parts[1::2], parts[2::2]))
    assert sorted(printed) == ["minimal.ir.json", "minimal.py"]
    assert json.loads(printed["minimal.ir.json"])["pipeline"]["name"] == "minimal"
    assert "import" in printed["minimal.py"] and "minimal" in printed["minimal.py"]
    # a one-file target prints just its file, no header
    code, out, _ = run(capsys, "compile", MINIMAL, "--target", "ir", "-o", "-")
    assert code == 0 and not out.startswith("#") and json.loads(out)["pipeline"]["name"] == "minimal"


# --- deploy: Airflow's own log lines stay out ------------------------------------------------


def test_deploy_to_airflow_prints_only_dagsmiths_lines(tmp_path):
    pytest.importorskip("airflow")
    home, dags = tmp_path / "airflow-home", tmp_path / "dags"
    home.mkdir()
    dags.mkdir()
    # Airflow's defaults (INFO), not the WARNING the Airflow test suite sets; a DagBag parse needs
    # no metadata database, so no `airflow db migrate` here.
    env = {k: v for k, v in os.environ.items() if not k.startswith("AIRFLOW")}
    env["AIRFLOW_HOME"] = str(home)
    result = subprocess.run([DAGSMITH, "deploy", MINIMAL, "--target", "airflow", "--dags-folder", str(dags)],
                            capture_output=True, text=True, cwd=REPO, env=env, timeout=300)
    assert result.returncode == 0, result.stderr
    assert result.stdout == ""
    assert result.stderr.splitlines() == [
        "examples/minimal/pipeline.yaml:19:10: warning: defaults.image: does not apply in operator mode python: steps run in the airflow worker",
        f"created {dags / 'minimal.ir.json'}", f"created {dags / 'minimal.py'}"]


# --- the run summary ------------------------------------------------------------------------


def record_of(**fields) -> dict:
    record = {"run_id": "20261125-101500-a1b2c3", "pipeline": "churn-model", "status": "succeeded",
              "steps": {"gate": {"state": "succeeded", "attempts": 1}, "deploy": {"state": "succeeded", "attempts": 1}},
              "metrics": {}, "gates": [], "validation": {}}
    record.update(fields)
    return record


CANARY = {"deployed": True, "model": "churn", "version": 2, "target": "local", "strategy": "canary",
          "production": 1, "canary": {"version": 2, "traffic_percent": 10}, "previous_production": 1}


def test_deployment_line_says_what_deploy_did():
    assert deployment_line(CANARY) == "churn v2 deployed as canary at 10% (production stays v1)"
    first = dict(CANARY, version=1, production=1, canary=None, previous_production=None)
    assert deployment_line(first) == "churn v1 deployed as production (no production version before it, so no canary)"
    replace = dict(CANARY, version=3, strategy="replace", production=3, canary=None, previous_production=2)
    assert deployment_line(replace) == "churn v3 deployed as production (replaces v2)"
    gated = {"deployed": False, "model": "churn", "reason": "the gates did not pass: nothing deployed"}
    assert deployment_line(gated) == "churn: nothing deployed (the gates did not pass: nothing deployed)"
    partitioned = dict(replace, model="demand", partitions=["a", "b", "c"], inherited=["d"])
    assert deployment_line(partitioned) == "demand v3 deployed as production (replaces v2; 3 partitions from this run, 1 kept from earlier versions)"
    assert deployment_line(None) is None


def test_summary_prints_the_deployment_and_the_champion_challenger_threshold():
    gates = [
        {"metric": "roc_auc", "op": ">=", "observed": 0.93, "threshold": 0.75, "passed": True},
        {"metric": "roc_auc", "op": ">=", "observed": 0.93, "threshold": 0.9, "passed": True, "compare_to": "production",
         "delta": -0.01, "production_version": 1, "production_value": 0.91},
    ]
    text = rendered(record_of(gates=gates, deployment=CANARY))
    assert "deploy: churn v2 deployed as canary at 10% (production stays v1)" in text
    assert "0.9000 (production v1 0.9100, delta -0.0100)" in text
    assert "gates: passed (2/2 checks passed)" in text
    assert threshold_text({"threshold": None, "note": "no production model of 'churn' yet: passes"}) == "no production model of 'churn' yet: passes"


def partition_gates(n: int, failing=()) -> list:
    return [{"metric": "r2", "op": ">=", "observed": 0.5 if f"r{i:02d}" in failing else 0.9, "threshold": 0.7,
             "passed": f"r{i:02d}" not in failing, "partition": f"r{i:02d}"} for i in range(n)]


def test_partitioned_summary_has_totals_and_only_the_failed_rows_when_many():
    text = rendered(record_of(gates=partition_gates(40)))
    assert "gates: 40/40 partitions passed (40/40 checks)" in text
    assert "r07" not in text  # 40 passing rows are not listed one by one
    text = rendered(record_of(gates=partition_gates(40, failing=("r03", "r17"))))
    assert "gates: 38/40 partitions passed (38/40 checks); failed: r03, r17" in text
    assert "gates that failed" in text and "r03" in text and "r17" in text and "r04" not in text
    all_fail = rendered(record_of(gates=partition_gates(40, failing={f"r{i:02d}" for i in range(40)})))
    assert "gates: 0/40 partitions passed (40 checks failed)" in all_fail
    assert "r19" in all_fail and "r20" not in all_fail.split("gates: ")[0] and "... and 20 more failed checks" in all_fail
    few = rendered(record_of(gates=partition_gates(3, failing=("r01",))))
    assert "gates: 2/3 partitions passed (2/3 checks); failed: r01" in few
    assert all(name in few for name in ("r00", "r01", "r02"))  # few partitions: every row


def test_partitioned_metrics_are_aggregated_when_many():
    metrics = {f"r{i:02d}": {"r2": 0.8 + i / 1000, "mae": 3.0} for i in range(40)}
    text = rendered(record_of(metrics=metrics))
    assert "metrics of 40 partitions" in text and "0.8000" in text and "0.8390" in text and "r05" not in text


def test_summary_reads_the_full_gate_decision_from_the_run_folder(tmp_path):
    """Past 50 checks the record keeps only the failed ones: the totals come from the gate's file."""
    record = record_of(gates=partition_gates(60, failing=("r09",))[9:10])
    folder = tmp_path / "runs" / record["run_id"] / "steps" / "gate"
    folder.mkdir(parents=True)
    decision = {"passed": True, "partitions_passed": [f"r{i:02d}" for i in range(60) if i != 9], "partitions_failed": ["r09"],
                "gates": partition_gates(60, failing=("r09",))}
    (folder / "decision.json").write_text(json.dumps(decision))
    assert "gates: 59/60 partitions passed (59/60 checks); failed: r09" in rendered(record, workdir=tmp_path)


# --- runs list / runs show ------------------------------------------------------------------


VALIDATION = {"people_ok": {"name": "people_ok", "table": "people", "on_failure": "warn", "success": False, "rows": 3, "expectations": [
    {"type": "expect_column_values_to_be_between", "kwargs": {"column": "age", "min_value": 0, "max_value": 50},
     "success": False, "observed_value": None, "unexpected_count": 1, "element_count": 3},
    {"type": "expect_table_row_count_to_be_between", "kwargs": {"min_value": 1},
     "success": True, "observed_value": 3, "unexpected_count": None, "element_count": None},
]}}


def write_run(workdir: Path, record: dict) -> None:
    folder = workdir / "runs" / record["run_id"]
    folder.mkdir(parents=True)
    (folder / "run.json").write_text(json.dumps(record))


def test_runs_show_lists_every_expectation_with_its_result(capsys, tmp_path):
    record = record_of(validation=VALIDATION, started="2026-11-25T10:15:00+00:00")
    write_run(tmp_path, record)
    code, out, _ = run(capsys, "runs", "show", record["run_id"], "--workdir", str(tmp_path))
    assert code == 0
    assert "validation people_ok on people (on_failure: warn): 1 of 2 failed" in out
    assert "FAIL  expect_column_values_to_be_between(column=age, min_value=0, max_value=50): 1 unexpected row of 3" in out
    assert "ok    expect_table_row_count_to_be_between(min_value=1): observed 3" in out
    assert "validation warning" in out


def test_runs_list_has_a_header_and_a_missing_workdir_is_an_error(capsys, tmp_path):
    write_run(tmp_path, record_of(started="2026-11-25T10:15:00+00:00"))
    code, out, _ = run(capsys, "runs", "list", "--workdir", str(tmp_path))
    lines = out.splitlines()
    assert code == 0 and lines[0].split() == ["RUN_ID", "PIPELINE", "STATUS", "STARTED"]
    assert lines[1].split() == ["20261125-101500-a1b2c3", "churn-model", "succeeded", "2026-11-25T10:15:00+00:00"]
    code, out, err = run(capsys, "runs", "list", "--workdir", str(tmp_path / "nope"))
    assert code == 2 and out == "" and f"--workdir {tmp_path / 'nope'}: no such folder" in err
    code, out, err = run(capsys, "runs", "show", "x", "--workdir", str(tmp_path / "nope"))
    assert code == 2 and out == "" and "no such folder" in err
    empty = tmp_path / "empty"
    empty.mkdir()
    code, out, err = run(capsys, "runs", "list", "--workdir", str(empty))
    assert code == 0 and out.split() == ["RUN_ID", "PIPELINE", "STATUS", "STARTED"] and "no runs in" in err


# --- scripts/install-horovod.sh ---------------------------------------------------------------


def _tools(folder: Path, *names: str) -> str:
    """A PATH folder holding only stand-ins for NAMES (nothing real is built or run)."""
    folder.mkdir()
    for name in names:
        (folder / name).write_text("#!/bin/sh\nexit 0\n")
        (folder / name).chmod(0o755)
    return str(folder)


@pytest.mark.parametrize("present,missing,packages", [
    ((), "cmake and a C++ compiler (g++)", "cmake g++"),
    (("g++",), "cmake", "cmake"),
    (("cmake",), "a C++ compiler (g++)", "g++"),
])
def test_install_horovod_names_the_missing_build_tools_first(tmp_path, present, missing, packages):
    bash = shutil.which("bash")
    result = subprocess.run([bash, str(REPO / "scripts" / "install-horovod.sh")], capture_output=True, text=True, timeout=30,
                            env={"PATH": _tools(tmp_path / "bin", *present), "HOME": str(tmp_path)})
    assert result.returncode == 1 and result.stdout == ""
    assert result.stderr.splitlines() == [
        f"install-horovod: building horovod needs {missing}, not found on PATH: install with 'apt-get install {packages}' (Debian/Ubuntu, as root)"
    ]


def test_install_horovod_goes_past_the_check_when_the_tools_are_there(tmp_path):
    """With cmake and g++ present the next check speaks (torch, through a "python" that is bash's
    `false`: nothing is downloaded or built)."""
    bash = shutil.which("bash")
    path = _tools(tmp_path / "bin", "cmake", "g++")
    result = subprocess.run([bash, str(REPO / "scripts" / "install-horovod.sh")], capture_output=True, text=True, timeout=30,
                            env={"PATH": path, "HOME": str(tmp_path), "PYTHON": "false"})
    assert result.returncode == 1 and "install torch first" in result.stderr and "cmake" not in result.stderr


def test_readme_says_make_test_needs_cmake_and_a_compiler():
    text = " ".join((REPO / "README.md").read_text().split())
    assert "Both work on a fresh machine with only Python 3.11 and pip" not in text
    assert "needs cmake and a C++17 compiler" in text and "apt-get install cmake g++" in text
