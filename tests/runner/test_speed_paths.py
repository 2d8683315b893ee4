"""The local runner's fast paths, asserted by what they do, not by how long they take
(benchmarks/local_run.py measures that):

- the fork server imports what the IR's steps need (Great Expectations only when the IR
  validates), once, and every worker forked from it, a replacement of a killed one included,
  has it loaded;
- while it imports, a bridge worker runs the steps that need none of it (on a machine with a
  core to spare for it);
- a worker's validations share one Great Expectations context;
- a killed worker is replaced and the run goes on.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
import time
from pathlib import Path

import pytest

from dagsmith.runner.pool import BRIDGE_KINDS, needs_bridges, preload, preload_modules
from dagsmith_testing import compile_path

DAGSMITH = str(Path(sys.executable).parent / "dagsmith")

HELPERS = '''
import json, os, pathlib, signal, sys

def where():
    """Which process ran this step, and what was imported before it started."""
    return json.dumps({"pid": os.getpid(), "gx": "great_expectations" in sys.modules, "sklearn": "sklearn" in sys.modules})

def die_once():
    """The first attempt kills its own worker process (as a segfault would); the next one passes."""
    flag = pathlib.Path(os.environ["FLAGS"]) / "died"
    if not flag.exists():
        flag.write_text(str(os.getpid()))
        os.kill(os.getpid(), signal.SIGKILL)
    return json.dumps({"pid": os.getpid()})
'''

SOURCE = """
dagsmith: 1
pipeline: {name: speed}
sources:
  people: {type: csv, uri: people.csv}
"""

VALIDATIONS = """
validation:
  - name: first_check
    on: people
    on_failure: fail
    expectations:
      - expect_column_values_to_not_be_null: {column: name}
      - expect_table_row_count_to_be_between: {min_value: 1, max_value: 10}
  - name: second_check
    on: people
    on_failure: warn
    expectations: [{expect_column_values_to_be_between: {column: age, min_value: 0, max_value: 50}}]
"""


@pytest.fixture
def project(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    (tmp_path / "helpers.py").write_text(HELPERS)
    (tmp_path / "people.csv").write_text("name,age\nann,10\nbob,60\ncid,30\n")
    (tmp_path / "flags").mkdir()
    return tmp_path


def run(project: Path, spec: str, *args: str) -> dict:
    (project / "pipeline.yaml").write_text(spec)
    result = subprocess.run([DAGSMITH, "run", "pipeline.yaml", "--format", "json", *args], capture_output=True, text=True,
                            env={**os.environ, "FLAGS": str(project / "flags")}, timeout=300)
    record = json.loads(result.stdout)
    assert result.returncode == 0 and record["status"] == "succeeded", result.stderr[-3000:]
    return record


def result(project: Path, record: dict, step: str) -> dict:
    return json.loads((project / ".dagsmith" / "runs" / record["run_id"] / "steps" / step / "result.json").read_text())


def returned(project: Path, record: dict, step: str) -> dict:
    return json.loads(result(project, record, step)["returned"])


def test_one_worker_runs_both_validations_with_one_preloaded_context(project):
    record = run(project, SOURCE + VALIDATIONS, "--max-parallel", "1")
    first, second = (result(project, record, step)["gx"] for step in ("first_check", "second_check"))
    assert first["pid"] == second["pid"] != os.getpid()  # the same worker process ran both
    assert first["contexts"] == second["contexts"] == 1  # ... with the one context it made
    assert sorted([first["validations"], second["validations"]]) == [1, 2]
    assert first["preloaded"] and second["preloaded"]  # Great Expectations came with the worker
    assert record["validation"]["second_check"]["success"] is False  # results are still each step's own
    assert record["validation"]["first_check"]["success"] is True
    logs = project / ".dagsmith" / "runs" / record["run_id"] / "logs"
    assert {p.name for p in logs.iterdir()} >= {"people.log", "first_check.log", "second_check.log"}


@pytest.mark.skipif((os.cpu_count() or 1) < 2, reason="no core to spare for a bridge")
def test_a_bridge_runs_early_steps_while_the_fork_server_imports(project):
    spec = SOURCE + VALIDATIONS + """
steps:
  early: {run: {python: "helpers:where"}}
"""
    record = run(project, spec, "--max-parallel", "1")
    early = returned(project, record, "early")
    validated = result(project, record, "first_check")["gx"]
    assert not early["gx"] and early["pid"] != validated["pid"]  # a bridge: not the preloaded worker
    assert validated["preloaded"]


def test_a_killed_worker_is_replaced_by_a_preloaded_one_and_the_run_goes_on(project):
    spec = SOURCE + VALIDATIONS + """
steps:
  crash: {after: [first_check, second_check], run: {python: "helpers:die_once"}, retries: 1, retry_delay: 1s}
  after_crash: {after: [crash], run: {python: "helpers:where"}}
"""
    record = run(project, spec, "--max-parallel", "1")
    assert {entry["state"] for entry in record["steps"].values()} == {"succeeded"}
    assert record["steps"]["crash"]["attempts"] == 2
    killed = int((project / "flags" / "died").read_text())
    assert result(project, record, "first_check")["gx"]["pid"] == killed  # the one worker, killed by the step
    after = returned(project, record, "after_crash")
    assert after["pid"] != killed and returned(project, record, "crash")["pid"] == after["pid"]
    assert after["gx"] and after["sklearn"] is False  # forked from the fork server: what the IR needs, loaded


def test_what_is_preloaded_follows_the_ir(project):
    record = run(project, SOURCE + """
steps:
  plain: {after: [people], run: {python: "helpers:where"}}
""")
    assert returned(project, record, "plain")["gx"] is False  # no validation: no Great Expectations

    (project / "pipeline.yaml").write_text(SOURCE + VALIDATIONS)
    validating = preload_modules(compile_path(project / "pipeline.yaml"))
    assert {"great_expectations", "duckdb", "pyarrow.parquet"} <= set(validating) and "sklearn" not in validating
    assert needs_bridges(compile_path(project / "pipeline.yaml"))
    (project / "pipeline.yaml").write_text(SOURCE + """
training:
  inputs: [people]
  target: age
  model: {estimator: sklearn.ensemble.RandomForestRegressor}
""")
    training = preload_modules(compile_path(project / "pipeline.yaml"))
    assert {"sklearn", "sklearn.ensemble"} <= set(training) and "great_expectations" not in training
    (project / "pipeline.yaml").write_text(SOURCE + "steps:\n  plain: {run: {python: 'helpers:where'}}\n")
    assert not needs_bridges(compile_path(project / "pipeline.yaml"))  # nothing slow to wait for
    assert {"source", "feature", "custom"} == BRIDGE_KINDS


def test_preload_is_quiet_and_reports_what_failed(tmp_path):
    (tmp_path / "noisy_at_import.py").write_text(
        "import os, sys, warnings\nprint('hello')\nprint('oops', file=sys.stderr)\nwarnings.warn('careful')\n"
        "SEEN = os.environ.get('DAGSMITH_TEST_PRELOAD')\n")
    code = ("import os, sys; from dagsmith.runner.pool import preload\n"
            "failed = preload(['noisy_at_import', 'no_such_module_here'], {'DAGSMITH_TEST_PRELOAD': '1'})\n"
            "print(failed, sys.modules['noisy_at_import'].SEEN, os.environ.get('DAGSMITH_TEST_PRELOAD'))\n")
    done = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, cwd=tmp_path,
                          env={**os.environ, "PYTHONPATH": str(tmp_path)}, timeout=60)
    # what the module printed and warned went nowhere; it saw the environment asked for, which
    # was put back afterwards
    assert (done.stdout, done.stderr) == ("['no_such_module_here'] 1 None\n", "")


def test_the_fork_server_starts_before_the_compile_and_leaves_nothing_behind(project):
    """`dagsmith run` starts the fork server before it compiles the spec; it waits for the
    pool's request (a file in a temporary folder), and is gone with its folder when the run ends,
    also when there never is a pool (a spec error)."""
    tmp = project / "tmp"
    tmp.mkdir()
    env = {**os.environ, "TMPDIR": str(tmp), "FLAGS": str(project / "flags")}
    (project / "bad.yaml").write_text(SOURCE.replace("type: csv", "type: nope"))
    done = subprocess.run([DAGSMITH, "run", "bad.yaml"], capture_output=True, text=True, env=env, timeout=60)
    assert done.returncode == 2 and done.stdout == ""
    lines = done.stderr.splitlines()
    assert lines and all(line.startswith("bad.yaml:") and ": error: " in line for line in lines)  # nothing from the fork server
    assert list(tmp.iterdir()) == []
    (project / "pipeline.yaml").write_text(SOURCE + VALIDATIONS)
    done = subprocess.run([DAGSMITH, "run", "pipeline.yaml", "--format", "json"], capture_output=True, text=True, env=env, timeout=300)
    record = json.loads(done.stdout)
    assert record["status"] == "succeeded" and result(project, record, "first_check")["gx"]["preloaded"]
    assert list(tmp.iterdir()) == []


def test_a_fork_server_whose_runner_ended_before_it_started_removes_its_folder(tmp_path):
    """On a busy machine a runner can stop (a spec error) before its fork server has even
    imported dagsmith: the fork server, now some other process's child, removes the folder it
    was to wait in. One whose runner is alive but not its parent leaves it alone."""
    from dagsmith.runner.pool import PRELOAD_VARIABLE

    def fork_server_of(parent: int, folder: Path) -> None:
        folder.mkdir()
        request = {"parent": parent, "await": str(folder / "request.json"), "modules": [], "environ": {}}
        subprocess.run([sys.executable, "-c", "import dagsmith.runner.pool"], check=True, timeout=60,
                       env={**os.environ, PRELOAD_VARIABLE: json.dumps(request)})

    ended = subprocess.run([sys.executable, "-c", "import os; print(os.getpid())"], capture_output=True, text=True, check=True)
    fork_server_of(int(ended.stdout), tmp_path / "gone")
    assert not (tmp_path / "gone").exists()
    alive = subprocess.Popen([sys.executable, "-c", "import time; time.sleep(60)"])
    try:
        fork_server_of(alive.pid, tmp_path / "kept")
        assert (tmp_path / "kept").is_dir()
    finally:
        alive.kill()
        alive.wait()


def test_a_fork_server_importing_a_guess_ends_with_its_runner(tmp_path):
    """Started early, the fork server imports what the spec suggests before the IR is known; a
    runner that stops first (a spec error) must not leave it importing, holding the runner's
    output open: it ends within a fraction of a second, and removes its request's folder."""
    folder = tmp_path / "request"
    folder.mkdir()
    server = ("import sys, time\nfrom dagsmith.runner.pool import _exit_with\n"
              "with _exit_with(int(sys.argv[1]), sys.argv[2]):\n    time.sleep(60)  # a long import\n")
    runner = ("import os, subprocess, sys, time\n"
              f"subprocess.Popen([sys.executable, '-c', {server!r}, str(os.getpid()), sys.argv[1]])\n"
              "time.sleep(1)\n")
    started = time.monotonic()
    done = subprocess.run([sys.executable, "-c", runner, str(folder)], capture_output=True, text=True, timeout=120)
    assert done.returncode == 0 and done.stderr == ""
    assert time.monotonic() - started < 30  # its output closed long before the 60 s "import" ended
    assert not folder.exists()


def test_the_early_guess_is_what_the_ir_will_preload(project):
    """What the fork server imports before the compile (from the spec's section names) is what
    the IR needs, but an estimator's own module (imported once the IR is known)."""
    from dagsmith.runner.pool import guess_preload

    example = Path(__file__).resolve().parents[2] / "examples" / "churn" / "pipeline.yaml"
    guess, exact = guess_preload(example.read_text()), preload_modules(compile_path(example))
    assert [m for m in exact if m not in guess] == ["sklearn.ensemble"] and set(guess) <= set(exact)
    (project / "pipeline.yaml").write_text(SOURCE + "steps:\n  plain: {run: {python: 'helpers:where'}}\n")
    assert "great_expectations" not in guess_preload((project / "pipeline.yaml").read_text())
