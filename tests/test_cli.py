"""The command line: exit codes, streams, formats, atomic output."""

from __future__ import annotations

import json
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

from dagsmith_testing import REPO
from dagsmith.cli import main

CHURN = "examples/churn/pipeline.yaml"
MINIMAL = "examples/minimal/pipeline.yaml"


def run(capsys, *args):
    code = main(list(args))
    out, err = capsys.readouterr()
    return code, out, err


def test_validate_ok_and_bad(capsys, in_repo, tmp_path):
    code, out, err = run(capsys, "validate", CHURN)
    assert code == 0 and out == "" and "valid" in err and "'prod'" in err
    bad = tmp_path / "bad.yaml"
    bad.write_text("dagsmith: 1\npipeline: {name: p}\ntrainig: {}\nsources: {a: {type: csvv, uri: a}}\n")
    code, out, err = run(capsys, "validate", str(bad))
    assert code == 2 and out == ""
    lines = err.splitlines()
    assert lines == [
        f"{bad}:3:1: error: trainig: unknown key 'trainig'; did you mean 'training'?",
        f"{bad}:4:21: error: sources.a.type: must be one of: csv, parquet, json, jsonl, xlsx, sql, s3; got text 'csvv'; did you mean 'csv'?",
    ]


def test_validate_checks_every_environment(capsys, tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    (tmp_path / "p.yaml").write_text(
        "dagsmith: 1\npipeline: {name: p}\nenvironments:\n  prod:\n    defaults: {retries: many}\n"
    )
    code, _, err = run(capsys, "validate", "p.yaml")
    assert code == 2 and err.startswith("p.yaml:5:25: error: defaults.retries: expected an integer, got text 'many'")
    assert run(capsys, "validate", "p.yaml", "--env", "nope")[0] == 2


def test_validate_json(capsys, in_repo, tmp_path):
    bad = tmp_path / "bad.yaml"
    bad.write_text("dagsmith: 2\npipeline: {name: p}\n")
    code, out, _ = run(capsys, "validate", str(bad), "--format", "json")
    data = json.loads(out)
    assert code == 2 and data["valid"] is False
    assert data["errors"][0] | {"file": None} == {"file": None, "line": 1, "column": 11, "path": "dagsmith", "message": "unsupported spec version 2: this dagsmith reads `dagsmith: 1`", "hint": None, "level": "error"}


def test_compile_to_stdout_and_dir(capsys, in_repo, tmp_path):
    code, out, _ = run(capsys, "compile", MINIMAL, "--target", "ir", "-o", "-")
    assert code == 0 and json.loads(out)["pipeline"]["name"] == "minimal"
    code, _, err = run(capsys, "compile", MINIMAL, "--target", "ir", "-o", str(tmp_path))
    assert code == 0 and (tmp_path / "minimal.ir.json").read_text() == out
    assert sorted(p.name for p in tmp_path.iterdir()) == ["minimal.ir.json"]  # no temp files left


def test_compile_unknown_target(capsys, in_repo):
    from dagsmith import backends

    code, out, err = run(capsys, "compile", MINIMAL, "--target", "kubeflow")
    assert (code, out, err.strip()) == (2, "", f"unknown target 'kubeflow'; available targets: {', '.join(backends.available())}")
    assert {"airflow", "argo", "ir"} <= set(backends.available())


def test_bad_spec_leaves_output_untouched(capsys, tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    out = tmp_path / "out"
    out.mkdir()
    (out / "p.ir.json").write_text("previous")
    (tmp_path / "p.yaml").write_text("dagsmith: 1\npipeline: {name: p}\nsources: {a: {type: csv}}\n")
    code, _, err = run(capsys, "compile", "p.yaml", "--target", "ir", "-o", str(out))
    assert code == 2 and "missing required key 'uri'" in err
    assert [p.name for p in out.iterdir()] == ["p.ir.json"] and (out / "p.ir.json").read_text() == "previous"


def test_graph_formats(capsys, in_repo):
    code, out, _ = run(capsys, "graph", CHURN)
    assert code == 0 and out.startswith("flowchart TD") and "train (train) x6" in out
    code, out, _ = run(capsys, "graph", CHURN, "--format", "dot")
    assert code == 0 and '"gate" -> "deploy";' in out
    code, out, _ = run(capsys, "graph", CHURN, "--format", "json")
    assert ["gate", "deploy"] in json.loads(out)["edges"]


def test_diff(capsys, in_repo, tmp_path):
    assert run(capsys, "diff", CHURN, CHURN)[:2] == (0, "no changes\n")
    new = tmp_path / "pipeline.yaml"
    shutil.copytree(REPO / "examples" / "churn", tmp_path, dirs_exist_ok=True)
    text = new.read_text().replace("max_depth: [2, 3, 4]", "max_depth: [2, 3]").replace("after: [deploy]", "after: [evaluate]")
    new.write_text(text)
    code, out, _ = run(capsys, "diff", CHURN, str(new), "--format", "json")
    data = json.loads(out)
    assert code == 1 and data["added"] == [] and data["removed"] == []
    assert set(data["changed"]) == {"train", "notify"}
    assert {"field": "depends_on", "old": ["deploy"], "new": ["evaluate"]} in data["changed"]["notify"]
    code, out, _ = run(capsys, "diff", CHURN, str(new))
    assert code == 1 and "~ step train" in out and "fanout.trials: 6 -> 4" in out


def test_every_command_has_help_with_an_example(capsys):
    for command in ("validate", "compile", "deploy", "graph", "diff", "schema", "run", "watch", "serve"):
        code, out, _ = run(capsys, command, "--help")
        assert code == 0 and "Example" in out, command


def test_console_script_end_to_end(in_repo):
    """The installed `dagsmith` executable, as CI and users call it."""
    exe = str(Path(sys.executable).parent / "dagsmith")
    result = subprocess.run([exe, "validate", "examples/nope.yaml"], capture_output=True, text=True)
    assert result.returncode == 2 and "Traceback" not in result.stderr
    assert result.stderr.startswith("examples/nope.yaml:1:1: error: <root>: cannot read file")


def test_internal_error_is_one_line(capsys, monkeypatch, in_repo):
    import dagsmith.compiler

    monkeypatch.setattr(dagsmith.compiler, "expand", lambda *a: 1 / 0)
    monkeypatch.delenv("DAGSMITH_DEBUG", raising=False)
    code, _, err = run(capsys, "compile", MINIMAL, "--target", "ir", "-o", "-")
    assert code == 3 and err.startswith("dagsmith: internal error: ZeroDivisionError") and "Traceback" not in err


def test_validate_takes_several_specs_and_reports_every_error(capsys, write_spec):
    good = write_spec("dagsmith: 1\npipeline: {name: p}\nsources: {a: {type: csv, uri: a.csv}}\n", "good.yaml")
    bad = write_spec("dagsmith: 1\npipeline: {name: q}\nsources: {a: {type: csv}}\n", "bad.yaml")
    worse = write_spec("dagsmith: 1\npipeline: {name: r}\nsourcez: {}\n", "worse.yaml")
    code, out, err = run(capsys, "validate", good, bad, worse)
    assert code == 2
    assert "good.yaml: valid" in err and "bad.yaml:3:" in err and "worse.yaml:3:" in err
    code, out, err = run(capsys, "validate", good, bad, "--format", "json")
    reports = json.loads(out)
    assert [(r["spec"], r["valid"]) for r in reports] == [(good, True), (bad, False)]
    code, out, _ = run(capsys, "validate", good, "--format", "json")
    assert code == 0 and json.loads(out)["valid"] is True and "spec" not in json.loads(out)  # one spec: as before


def test_compile_check_says_whether_committed_output_is_up_to_date(capsys, write_spec, tmp_path):
    spec = write_spec("dagsmith: 1\npipeline: {name: p}\nparams: {n: {type: integer, default: 1}}\nsources: {a: {type: csv, uri: a.csv}}\n")
    code, out, err = run(capsys, "compile", spec, "--target", "airflow", "-o", "out", "--check")
    assert code == 1 and "--- /dev/null" in out and "2 of 2 generated files are out of date" in err
    assert not (tmp_path / "out").exists()  # --check writes nothing
    assert run(capsys, "compile", spec, "--target", "airflow", "-o", "out")[0] == 0
    code, out, err = run(capsys, "compile", spec, "--target", "airflow", "-o", "out", "--check")
    assert (code, out) == (0, "") and "out: up to date" in err
    (tmp_path / spec).write_text((tmp_path / spec).read_text().replace("default: 1", "default: 2"))
    code, out, err = run(capsys, "compile", spec, "--target", "airflow", "-o", "out", "--check")
    assert code == 1 and "--- a/p.py" in out and "1 of 2" not in err and "out of date" in err


def test_compile_to_several_targets_from_one_compile(capsys, write_spec, tmp_path):
    """`-t A -t B` (or `-t all`) compiles once and writes each target to DIR/<target>; a spec one
    of them refuses writes nothing for any of them; --check covers each."""
    spec = write_spec("dagsmith: 1\npipeline: {name: p}\nsources: {a: {type: csv, uri: 's3://bucket/a.csv'}}\n"
                      "defaults: {image: 'ghcr.io/acme/p:1'}\nbackends: {argo: {store: 's3://bucket/store'}}\n")
    code, out, err = run(capsys, "compile", spec, "-t", "ir", "-t", "argo", "-t", "ir", "-o", "out")
    assert code == 0, err
    assert sorted(p.relative_to(tmp_path / "out").as_posix() for p in (tmp_path / "out").rglob("*") if p.is_file()) == [
        "argo/p.ir.json", "argo/p.prerequisites.yaml", "argo/p.workflow-template.yaml", "ir/p.ir.json"]
    alone = tmp_path / "alone"
    assert run(capsys, "compile", spec, "-t", "argo", "-o", str(alone))[0] == 0  # the same bytes as a compile of its own
    assert (alone / "p.workflow-template.yaml").read_bytes() == (tmp_path / "out/argo/p.workflow-template.yaml").read_bytes()
    code, out, err = run(capsys, "compile", spec, "-t", "all", "-o", "out", "--check")
    assert code == 1 and "out/ir: up to date" in err and "out/airflow: 2 of 2 generated files are out of date" in err
    code, out, err = run(capsys, "compile", spec, "-t", "ir", "-t", "argo", "-o", "-")
    assert code == 0 and [line for line in out.splitlines() if line.startswith("# ---- file:")] == [
        "# ---- file: argo/p.ir.json ----", "# ---- file: argo/p.prerequisites.yaml ----", "# ---- file: argo/p.workflow-template.yaml ----",
        "# ---- file: ir/p.ir.json ----"]
    # An image Argo would read as a template: Argo refuses the spec, so the IR is not written either
    (tmp_path / spec).write_text((tmp_path / spec).read_text().replace("p:1", "{{p}}:1"))
    code, out, err = run(capsys, "compile", spec, "-t", "ir", "-t", "argo", "-o", "refused")
    assert code == 2 and "Argo reads '{{'" in err and not (tmp_path / "refused").exists()


def test_the_console_script_exits_fast_and_loses_no_output(tmp_path):
    """`dagsmith compile` skips the interpreter's teardown (cli.entry): what it printed and wrote
    is complete, and the exit code is kept, also for an error (which exits the usual way)."""
    script = Path(sys.executable).parent / "dagsmith"
    spec = tmp_path / "p.yaml"
    spec.write_text("dagsmith: 1\npipeline: {name: p}\nsources: {a: {type: csv, uri: a.csv}}\n")
    done = subprocess.run([str(script), "compile", str(spec), "-t", "ir", "-o", "-"], capture_output=True, text=True, cwd=tmp_path)
    assert done.returncode == 0 and json.loads(done.stdout)["pipeline"]["name"] == "p"
    big = subprocess.run([str(script), "compile", str(spec), "-t", "airflow", "-t", "ir", "-o", "-"], capture_output=True, cwd=tmp_path)
    assert big.returncode == 0 and big.stdout.endswith(b"\n") and big.stdout.count(b"# ---- file: ") == 3
    done = subprocess.run([str(script), "compile", str(spec), "-t", "ir", "-o", "out"], capture_output=True, text=True, cwd=tmp_path)
    assert done.returncode == 0 and json.loads((tmp_path / "out/p.ir.json").read_text())["pipeline"]["name"] == "p"
    spec.write_text("dagsmith: 1\npipeline: {name: p}\nsourcs: {}\n")
    done = subprocess.run([str(script), "compile", str(spec), "-t", "ir"], capture_output=True, text=True, cwd=tmp_path)
    assert done.returncode == 2 and "unknown key 'sourcs'" in done.stderr
