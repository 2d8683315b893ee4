"""Speculation in the local runner (runner/executor.py): a training that waits only for the
validations of the table it reads starts before they pass (here on a bridge too, whatever the
machine's load: DAGSMITH_SPECULATE_ON_BRIDGE=1), and nothing of it shows until they do. Each
scenario runs twice, with speculation and without (SPECULATIVE_KINDS emptied), and the records
must be the same; what the speculative run did is told by the progress lines and by marker files
the model's code writes outside the store.
"""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
from dataclasses import replace
from pathlib import Path

import pytest

from dagsmith.runner.executor import SPECULATE_ON_BRIDGE, SPECULATIVE_KINDS, Executor, speculate_on_bridge
from dagsmith.runner.pool import BRIDGE_KINDS, Task, bridge_can_run
from dagsmith.runtime.store import LocalStore
from dagsmith_testing import compile_path

DAGSMITH = str(Path(sys.executable).parent / "dagsmith")
WITHOUT_SPECULATION = [sys.executable, "-c", "import sys; import dagsmith.runner.executor as e; e.SPECULATIVE_KINDS = frozenset(); "
                       "from dagsmith.cli import main; sys.argv[0] = 'dagsmith'; sys.exit(main())"]

HELPERS = '''
import json, os, pathlib, sys, time

class Constant:
    """Predicts one class; enough for accuracy."""
    def __init__(self, value):
        self.value = value

    def predict(self, frame):
        return [self.value] * len(frame)

def fit(train, test, params, context):
    flags = pathlib.Path(os.environ["FLAGS"])
    marker = flags / f"fit-{context.trial}-{time.time_ns()}"
    marker.write_text(json.dumps({"pid": os.getpid(), "gx": "great_expectations" in sys.modules, "trial": context.trial}))
    if os.environ.get("SLEEP"):
        time.sleep(float(os.environ["SLEEP"]))
    once = flags / "failed-once"
    if os.environ.get("FAIL_ONCE") and not once.exists():
        once.write_text("x")
        raise RuntimeError("the first fit fails")
    return Constant(int(train[context.target].mode()[0]))
'''

SPEC = """
dagsmith: 1
pipeline: {{name: spec}}
sources:
  people: {{type: csv, uri: people.csv}}
validation:
  - name: must_pass
    on: people
    on_failure: fail
    expectations:
      - expect_column_values_to_not_be_null: {{column: {must_column}}}
  - name: may_warn
    on: people
    on_failure: warn
    expectations: [{{expect_column_values_to_be_between: {{column: age, min_value: 0, max_value: 50}}}}]
training:
  inputs: [people]
  target: label
  split: {{test_size: 0.3, seed: 1}}
  model: {{entrypoint: "helpers:fit"}}
  {sweep}
  {retries}
evaluation:
  metrics: [accuracy]
"""
SWEEP = "sweep: {method: grid, parameters: {k: [1, 2, 3]}, select: {metric: accuracy, goal: max}}"


@pytest.fixture
def project(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    (tmp_path / "helpers.py").write_text(HELPERS)
    rows = ["name,age,label"] + [f"p{i},{10 + 2 * i},{i % 2}" for i in range(40)] + [",30,1"]  # one name missing
    (tmp_path / "people.csv").write_text("\n".join(rows) + "\n")
    return tmp_path


def spec(*, fails: bool, sweep: bool = True, retries: str = "") -> str:
    return SPEC.format(must_column="name" if fails else "label", sweep=SWEEP if sweep else "", retries=retries)


def run(project: Path, text: str, name: str, *, speculate: bool = True, env: dict | None = None, args=("--no-cache",)):
    """One run in its own workdir; returns (record, stderr, workdir, markers the model wrote)."""
    (project / "pipeline.yaml").write_text(text)
    flags = project / f"flags-{name}"
    flags.mkdir()
    workdir = project / name
    argv = ([DAGSMITH] if speculate else WITHOUT_SPECULATION) + ["run", "pipeline.yaml", "--workdir", str(workdir), "--format", "json", *args]
    started = time.monotonic()
    # On a bridge too, whatever the machine's load: what these tests look at is the bridge's work.
    env = {**os.environ, "FLAGS": str(flags), SPECULATE_ON_BRIDGE: "1", **(env or {})}
    done = subprocess.run(argv, capture_output=True, text=True, timeout=300, env=env)
    record = json.loads(done.stdout)
    assert done.returncode == (1 if record["status"] == "failed" else 0), done.stderr[-3000:]
    markers = [json.loads(p.read_text()) for p in sorted(flags.iterdir()) if p.name.startswith("fit-")]
    return record, done.stderr, workdir, markers, time.monotonic() - started


def observable(record: dict) -> dict:
    """A record without what differs from run to run (ids, times)."""
    steps = {sid: {k: v for k, v in entry.items() if k not in ("started", "ended")} for sid, entry in record["steps"].items()}
    return {"status": record["status"], "steps": steps, "validation": record["validation"], "metrics": record["metrics"],
            "gates": record["gates"]}


def outputs_of(workdir: Path, record: dict, step: str) -> list[str]:
    """What the run's folder holds of `step`: its outputs, its items' and their logs."""
    folder = workdir / "runs" / record["run_id"]
    found = [p for p in (folder / "steps" / step, folder / "items" / step) if p.exists()]
    found += [p for p in (folder / "logs").glob(f"{step}*.log")] if (folder / "logs").is_dir() else []
    return sorted(str(p.relative_to(folder)) for p in found)


def cache_entries(workdir: Path) -> list[dict]:
    return [json.loads(p.read_text()) for p in (workdir / "cache").glob("*.json")] if (workdir / "cache").is_dir() else []


def test_what_may_speculate():
    assert SPECULATIVE_KINDS == {"train"}  # never custom, deploy or anything with effects
    assert bridge_can_run(Task("t#0", "t", 0, None, kind="train", speculative=True, on_bridge=True))
    assert not bridge_can_run(Task("t#0", "t", 0, None, kind="train", speculative=True))
    assert not bridge_can_run(Task("t#0", "t", 0, None, kind="train"))
    assert not bridge_can_run(Task("v", "v", None, None, kind="validate"))
    assert all(bridge_can_run(Task("s", "s", None, None, kind=kind)) for kind in BRIDGE_KINDS)


def test_a_bridge_speculates_only_with_a_core_to_spare(monkeypatch):
    import dagsmith.runner.executor as executor

    monkeypatch.delenv(SPECULATE_ON_BRIDGE, raising=False)
    monkeypatch.setattr(os, "cpu_count", lambda: 2)
    if executor.own_running() is not None:
        own = executor.own_running
        # Only other programs' threads count: this run's own (fork server, bridge, workers) never.
        monkeypatch.setattr(executor, "own_running", lambda: 3)
        monkeypatch.setattr(executor, "running_now", lambda: 3)
        assert speculate_on_bridge()
        monkeypatch.setattr(executor, "running_now", lambda: 4)  # someone else's: no core for the bridge
        assert not speculate_on_bridge()
        monkeypatch.setattr(executor, "own_running", own)
    monkeypatch.setattr(executor, "others_running", lambda: None)  # no /proc: the load average
    monkeypatch.setattr(os, "getloadavg", lambda: (0.7, 0.5, 0.5))
    assert speculate_on_bridge()
    monkeypatch.setattr(os, "getloadavg", lambda: (3.5, 0.5, 0.5))
    assert not speculate_on_bridge()
    monkeypatch.setenv(SPECULATE_ON_BRIDGE, "1")
    assert speculate_on_bridge()
    monkeypatch.setenv(SPECULATE_ON_BRIDGE, "0")
    monkeypatch.setattr(executor, "others_running", lambda: 0)
    assert not speculate_on_bridge()


@pytest.mark.skipif(not Path(f"/proc/{os.getpid()}/task/{os.getpid()}/children").exists(), reason="needs Linux /proc")
def test_a_runs_own_busy_processes_are_not_counted_as_others():
    """A child (and its child) spinning on a CPU are this run's: counted by own_running, and not
    by others_running, however busy they are."""
    import dagsmith.runner.executor as executor

    spin = "import subprocess, sys; subprocess.Popen([sys.executable, '-c', 'while True: pass']); exec('while True: pass')"
    before = executor.own_running()
    child = subprocess.Popen([sys.executable, "-c", spin])
    try:
        deadline = time.monotonic() + 10
        while executor.own_running() < before + 2 and time.monotonic() < deadline:
            time.sleep(0.05)
        assert executor.own_running() >= before + 2  # the child and the grandchild, both runnable
        assert executor.others_running() < executor.running_now()
    finally:
        for pid in [int(p) for p in Path(f"/proc/{child.pid}/task/{child.pid}/children").read_text().split()]:
            os.kill(pid, signal.SIGKILL)
        child.kill()
        child.wait()


def test_only_a_training_waiting_for_checks_it_does_not_read_is_guarded(project, tmp_path):
    (project / "pipeline.yaml").write_text(spec(fails=False) + """
steps:
  after_checks: {after: [must_pass], run: {python: "helpers:fit"}}
""")
    ir = compile_path(project / "pipeline.yaml")
    executor = Executor(ir=ir, ir_path=Path("x"), store=LocalStore(tmp_path / "store"), record=None, values=None, root=project,
                        max_parallel=1)
    assert executor.speculation_guards() == {"train": ("may_warn", "must_pass")}
    # a step that reads a validation's result waits for it
    steps = tuple(replace(s, inputs=(*s.inputs, "validation:must_pass")) if s.id == "train" else s for s in ir.steps)
    executor.ir = replace(ir, steps=steps)
    assert executor.speculation_guards() == {"train": ("may_warn",)}


def test_a_failed_validation_discards_the_speculative_training(project):
    text = spec(fails=True)
    record, stderr, workdir, markers, _ = run(project, text, "spec", args=())  # with the cache: nothing of train gets in
    assert "train: started speculatively" in stderr, stderr
    assert markers and not all(m["gx"] for m in markers)  # it trained, on the bridge, before the check failed
    baseline, base_stderr, base_workdir, base_markers, _ = run(project, text, "plain", speculate=False, args=())
    assert "speculatively" not in base_stderr and not base_markers
    assert observable(record) == observable(baseline)
    assert record["status"] == "failed" and record["steps"]["must_pass"]["state"] == "failed"
    assert record["steps"]["train"] == {"state": "skipped", "attempts": 0, "error": "upstream step 'must_pass' failed",
                                        "started": None, "ended": record["steps"]["train"]["ended"]}
    assert outputs_of(workdir, record, "train") == [] == outputs_of(base_workdir, baseline, "train")
    assert not any(entry["step_id"] == "train" for entry in cache_entries(workdir))
    assert sorted(e["step_id"] for e in cache_entries(workdir)) == sorted(e["step_id"] for e in cache_entries(base_workdir))
    timeline = workdir / "runs" / record["run_id"] / "timeline.json"
    assert not timeline.exists() or "train" not in json.loads(timeline.read_text())["items"]


def test_a_speculative_task_still_running_is_killed_when_validation_fails(project):
    record, stderr, workdir, markers, seconds = run(project, spec(fails=True, sweep=False), "spec", env={"SLEEP": "120"})
    assert "train: started speculatively" in stderr, stderr
    assert seconds < 100  # it did not wait for the training
    assert record["steps"]["train"]["state"] == "skipped" and record["steps"]["train"]["attempts"] == 0
    assert outputs_of(workdir, record, "train") == []
    for marker in markers:  # the worker that ran it is gone
        with pytest.raises(ProcessLookupError):
            os.kill(marker["pid"], 0)


def test_speculative_training_is_adopted_when_validations_pass(project):
    text = spec(fails=False)
    record, stderr, workdir, markers, _ = run(project, text, "spec", args=())
    assert "train: started speculatively" in stderr, stderr
    assert any(not m["gx"] for m in markers)  # some trial trained before Great Expectations was there
    baseline, *_ = run(project, text, "plain", speculate=False, args=())
    assert observable(record) == observable(baseline)
    train = record["steps"]["train"]
    assert train["state"] == "succeeded" and train["items"] == {"total": 3, "done": 3, "failed": 0} and train["attempts"] == 1
    assert record["validation"]["may_warn"]["success"] is False and record["status"] == "succeeded"
    # the record says when it really started: before its checks ended
    assert train["started"] < max(record["steps"][v]["ended"] for v in ("must_pass", "may_warn"))
    timeline = json.loads((workdir / "runs" / record["run_id"] / "timeline.json").read_text())
    assert [row[0] for row in timeline["items"]["train"]] == [0, 1, 2]
    assert sorted(p.name for p in (workdir / "runs" / record["run_id"] / "logs").glob("train*")) == [
        "train.0.log", "train.1.log", "train.2.log"]
    # remembered once adopted: the next run takes it from the cache
    (project / "flags-again").mkdir()
    again = subprocess.run([DAGSMITH, "run", "pipeline.yaml", "--workdir", str(workdir), "--format", "json"], capture_output=True,
                           text=True, timeout=300, env={**os.environ, "FLAGS": str(project / "flags-again")})
    assert json.loads(again.stdout)["steps"]["train"]["state"] == "cached", again.stderr[-3000:]


def test_a_speculative_failure_counts_as_it_would_have_without_speculation(project):
    text = spec(fails=False, sweep=False, retries="retries: 1\n  retry_delay: 1s")
    record, stderr, workdir, markers, _ = run(project, text, "spec", env={"FAIL_ONCE": "1"})
    assert "train: step failed while speculative" in stderr, stderr
    baseline, *_ = run(project, text, "plain", speculate=False, env={"FAIL_ONCE": "1"})
    assert observable(record) == observable(baseline)
    assert record["steps"]["train"]["state"] == "succeeded" and record["steps"]["train"]["attempts"] == 2
    # no retries left: it fails, as without speculation
    text = spec(fails=False, sweep=False)
    record, stderr, *_ = run(project, text, "spec-once", env={"FAIL_ONCE": "1"})
    baseline, *_ = run(project, text, "plain-once", speculate=False, env={"FAIL_ONCE": "1"})
    assert observable(record) == observable(baseline)
    assert record["steps"]["train"]["state"] == "failed" and "the first fit fails" in record["steps"]["train"]["error"]
