"""The orchestrator-neutral step commands, run as a container would run them (a process):
`dagsmith ranges`, `dagsmith admit` and `dagsmith step --outcome`."""

from __future__ import annotations

import datetime as dt
import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

from dagsmith.runtime import admission
from dagsmith.runtime.commands import split_ranges

DAGSMITH = str(Path(sys.executable).parent / "dagsmith")


def dagsmith(*args, env=None, cwd=None):
    return subprocess.run([DAGSMITH, *map(str, args)], capture_output=True, text=True, env={**os.environ, **(env or {})}, cwd=cwd)


def compiled(tmp_path, text: str) -> Path:
    spec = tmp_path / "pipeline.yaml"
    spec.write_text(text)
    result = dagsmith("compile", spec, "--target", "ir", "-o", tmp_path / "build")
    assert result.returncode == 0, result.stderr
    (ir,) = (tmp_path / "build").glob("*.ir.json")
    return ir


@pytest.mark.parametrize("total,limit", [(0, 3), (1, 3), (6, 4), (7, 3), (20000, 1024), (5, 5), (5, 1)])
def test_split_ranges_cover_every_item_once_within_the_limit(total, limit):
    ranges = split_ranges(total, limit)
    assert len(ranges) <= limit
    assert [i for a, b in ranges for i in range(a, b)] == list(range(total))
    if total <= limit:
        assert all(b - a == 1 for a, b in ranges)  # one item per range whenever they fit


def test_ranges_prints_item_ranges_each_a_valid_item(tmp_path):
    ir = compiled(tmp_path, """dagsmith: 1
pipeline: {name: p}
sources: {t: {type: csv, uri: t.csv}}
training:
  inputs: [t]
  target: y
  model: {estimator: sklearn.linear_model.Ridge}
  sweep: {method: grid, parameters: {alpha: [1, 2, 3, 4, 5, 6]}, select: {metric: r2, goal: max}}
""")
    outcome = tmp_path / "out" / "ranges.json"
    result = dagsmith("ranges", ir, "train", "--max", 4, "--store", tmp_path / "store", "--outcome", outcome)
    assert result.returncode == 0, result.stderr
    ranges = json.loads(result.stdout)
    assert ranges == [{"start": 0, "stop": 2}, {"start": 2, "stop": 4}, {"start": 4, "stop": 6}]
    assert json.loads(outcome.read_text()) == ranges
    result = dagsmith("ranges", ir, "t", "--max", 4)
    assert result.returncode == 1 and "step 't' is not a fan-out" in result.stderr


ADMIT_SPEC = """dagsmith: 1
pipeline: {name: p}
sources: {events: {type: csv, uri: e.csv}}
triggers: {on_new_data: [{source: events, min_interval: 1h}]}
"""


def _trigger(at: dt.datetime) -> dict:
    return {"DAGSMITH_TRIGGER": json.dumps({"sources": ["events"], "at": at.isoformat()})}


def test_admit_holds_admits_and_skips_covered_runs(tmp_path):
    ir = compiled(tmp_path, ADMIT_SPEC)
    store = tmp_path / "store"
    now = dt.datetime.now(dt.timezone.utc)
    first = dagsmith("admit", ir, "--store", store, "--skip-exit-code", 99, env={"DAGSMITH_RUN_ID": "r1", **_trigger(now)})
    assert first.returncode == 0 and json.loads(first.stdout)["action"] == "admit", first.stderr
    retried = dagsmith("admit", ir, "--store", store, env={"DAGSMITH_RUN_ID": "r1", **_trigger(now)})  # r1's pod retried after it wrote
    assert retried.returncode == 0 and json.loads(retried.stdout)["action"] == "admit", retried.stderr
    outcome = tmp_path / "admit.json"
    held = dagsmith("admit", ir, "--store", store, "--outcome", outcome, env={"DAGSMITH_RUN_ID": "r2", **_trigger(now + dt.timedelta(seconds=30))})
    assert held.returncode == 75  # try again later (or --wait)
    decision = json.loads(outcome.read_text())
    assert decision["action"] == "hold" and 3500 < decision["wait_seconds"] <= 3600
    held = dagsmith("admit", ir, "--store", store, "--status", tmp_path / "held.status", env={"DAGSMITH_RUN_ID": "r2", **_trigger(now + dt.timedelta(seconds=30))})
    assert held.returncode == 75 and not (tmp_path / "held.status").exists()  # no word until decided
    covered = dagsmith("admit", ir, "--store", store, "--skip-exit-code", 99, "--status", tmp_path / "status",
                       env={"DAGSMITH_RUN_ID": "r3", **_trigger(now - dt.timedelta(minutes=5))})
    assert covered.returncode == 99 and json.loads(covered.stdout)["action"] == "covered"
    assert (tmp_path / "status").read_text() == "covered"
    scheduled = dagsmith("admit", ir, "--store", store, env={"DAGSMITH_RUN_ID": "r4", "DAGSMITH_TRIGGER": ""})
    assert scheduled.returncode == 0 and json.loads(scheduled.stdout)["admitted"] is True
    bad = dagsmith("admit", ir, "--store", store, env={"DAGSMITH_TRIGGER": '{"sources": ["nope"]}'})
    assert bad.returncode == 1 and "without on_new_data" in bad.stderr


def test_admit_wait_sleeps_through_the_hold(tmp_path):
    ir = compiled(tmp_path, ADMIT_SPEC.replace("min_interval: 1h", "min_interval: 2s"))
    store = tmp_path / "store"
    now = dt.datetime.now(dt.timezone.utc)
    assert dagsmith("admit", ir, "--store", store, env=_trigger(now)).returncode == 0
    waited = dagsmith("admit", ir, "--store", store, "--wait", env=_trigger(now + dt.timedelta(seconds=1)))
    assert waited.returncode == 0 and json.loads(waited.stdout)["action"] == "admit"
    assert "waiting" in waited.stderr


def test_decide_is_the_one_rule():
    assert admission.decide(None, {"a": 5.0}, {"a": 10}, 6.0).action == "admit"
    assert admission.decide(0.0, {}, {"a": 10}, 1.0).action == "admit"  # not started by data
    hold = admission.decide(0.0, {"a": 5.0}, {"a": 10}, 6.0)
    assert (hold.action, hold.wait_seconds) == ("hold", 4.0)
    assert admission.decide(0.0, {"a": 5.0, "b": 5.0}, {"a": 10, "b": 3}, 6.0).action == "admit"  # b's interval passed
    assert admission.decide(8.0, {"a": 5.0}, {"a": 10}, 9.0).action == "covered"


@pytest.mark.slow
def test_step_outcome_files_for_success_gate_and_failure(tmp_path, example_copy):
    """`dagsmith step --outcome`, after a local run made the inputs: what an Argo output
    parameter or a Step Functions task result reads."""
    minimal = example_copy("minimal")
    spec = tmp_path / "pipeline.yaml"
    spec.write_text((minimal / "pipeline.yaml").read_text().replace("data/applicants.csv", str(minimal / "data/applicants.csv"))
                    .replace("  metrics: [accuracy, roc_auc]\n", "  metrics: [accuracy, roc_auc]\n  gates: [{metric: accuracy, op: '>=', value: 1.01}]\n"))
    work = tmp_path / "work"
    run = dagsmith("run", spec, "--workdir", work, "--format", "json")
    record = json.loads(run.stdout)
    assert record["status"] == "gated", run.stderr
    ir, run_id = next((work / "runs").glob("*/*.ir.json")), record["run_id"]
    env = {"DAGSMITH_RUN_ID": run_id}
    gate = dagsmith("step", ir, "gate", "--store", work, "--outcome", tmp_path / "gate.json", "--skip-exit-code", 99, env=env)
    assert gate.returncode == 99, gate.stderr
    gate = dagsmith("step", ir, "gate", "--store", work, "--status", tmp_path / "gate.status", env=env)
    assert gate.returncode == 0 and (tmp_path / "gate.status").read_text() == "skip"  # Argo reads the word
    outcome = json.loads((tmp_path / "gate.json").read_text())
    assert outcome["status"] == "skip" and outcome["passed"] is False and outcome["results"][0]["passed"] is False
    evaluate = dagsmith("step", ir, "evaluate", "--store", work, "--outcome", tmp_path / "evaluate.json", "--status", tmp_path / "ev.status", env=env)
    assert evaluate.returncode == 0 and (tmp_path / "ev.status").read_text() == "succeeded"
    outcome = json.loads((tmp_path / "evaluate.json").read_text())
    assert outcome["status"] == "succeeded" and outcome["results"][0]["metrics"]["accuracy"] < 1.01
    failed = dagsmith("step", ir, "evaluate", "--store", work, "--outcome", tmp_path / "failed.json", env={"DAGSMITH_RUN_ID": "no-such-run"})
    assert failed.returncode == 1
    outcome = json.loads((tmp_path / "failed.json").read_text())
    assert outcome["status"] == "failed" and "has no outputs" in outcome["error"]


def test_a_parameter_given_as_text_is_typed_and_checked(tmp_path):
    """DAGSMITH_PARAM_<NAME>: how Argo passes a workflow parameter (always a string)."""
    from dagsmith.runtime import load_ir
    from dagsmith.runtime.context import RunValues, StepFailed

    ir = load_ir(str(compiled(tmp_path, """dagsmith: 1
pipeline: {name: p}
params:
  days: {type: integer, default: 30}
  rate: {type: number, default: 0.5}
  on: {type: boolean, default: false}
  mode: {type: string, default: a, enum: [a, 'b "q"']}
sources: {t: {type: csv, uri: t.csv}}
""")))
    env = {"DAGSMITH_PARAMS": '{"days": 7}', "DAGSMITH_PARAM_rate": "2", "DAGSMITH_PARAM_on": "true", "DAGSMITH_PARAM_mode": 'b "q"'}
    assert RunValues.from_env(ir, env).params == {"days": 7, "rate": 2, "on": True, "mode": 'b "q"'}
    assert RunValues.from_env(ir, {"DAGSMITH_PARAM_days": "45", "DAGSMITH_PARAMS": '{"days": 7}'}).params["days"] == 45
    for name, text, why in [("days", "٣", "digits 0-9 only"), ("days", "4.5", "not an integer"), ("on", "yes", "not true or false"),
                            ("mode", "c", "not one of")]:
        with pytest.raises(StepFailed, match=why):
            RunValues.from_env(ir, {f"DAGSMITH_PARAM_{name}": text})


class _ReadTogether:
    """A store whose first read in each of `n` threads waits until all have read: the race
    where every run reads the state before any writes it (as Sensor-started runs, or held runs
    waking at the same instant, do on a cluster), made certain."""

    def __init__(self, store, n: int):
        import threading

        self.store, self.barrier, self.seen = store, threading.Barrier(n, timeout=10), threading.local()

    def _together(self, result):
        if not getattr(self.seen, "once", False):
            self.seen.once = True
            self.barrier.wait()
        return result

    def read_json(self, key):
        return self._together(self.store.read_json(key))

    def read_versioned(self, key):
        return self._together(self.store.read_versioned(key))

    def __getattr__(self, name):
        return getattr(self.store, name)


def _admit_three_at_once(store, at: float, now: float, runs=("r1", "r2", "r3")) -> list[str]:
    from concurrent.futures import ThreadPoolExecutor

    racing = _ReadTogether(store, 3)
    trigger = {"sources": ["t"], "at": admission._iso(at)}
    with ThreadPoolExecutor(3) as pool:
        decisions = list(pool.map(lambda run: admission.admit(racing, "p", {"t": 60.0}, trigger, run, now), runs))
    return sorted(d.action for d in decisions)


@pytest.mark.parametrize("where", ["local", "s3"])
def test_concurrent_admissions_admit_exactly_one(tmp_path, where, request):
    """Three runs deciding at once: one admitted, the others covered by it (they read its state
    again after losing the conditional write). Then two held runs waking at the same instant:
    again one, and the held data runs once."""
    from dagsmith.runtime.store import Store

    if where == "s3":
        request.getfixturevalue("aws_s3").create_bucket(Bucket="admission")
        store = Store.open("s3://admission/p")
    else:
        store = Store.open(tmp_path / "store")
    assert _admit_three_at_once(store, at=1000.0, now=1001.0) == ["admit", "covered", "covered"]
    assert store.read_json(admission.state_key("p"))["started"] == admission._iso(1001.0)
    # data landing 10 s after that run started is held until 1061; two runs of it wake at 1061
    assert admission.admit(store, "p", {"t": 60.0}, {"sources": ["t"], "at": admission._iso(1011.0)}, "r4", 1012.0).action == "hold"
    assert _admit_three_at_once(store, at=1011.0, now=1061.0, runs=("r4", "r5", "r6")) == ["admit", "covered", "covered"]


def test_a_conditional_write_loses_to_a_newer_version(tmp_path):
    from dagsmith.runtime.store import Store

    store = Store.open(tmp_path)
    assert store.write_if("k.json", {"n": 1}, None) is True
    assert store.write_if("k.json", {"n": 2}, None) is False  # exists already
    data, version = store.read_versioned("k.json")
    assert data == {"n": 1} and store.write_if("k.json", {"n": 2}, version) is True
    assert store.write_if("k.json", {"n": 3}, version) is False  # that version is gone
    assert store.read_json("k.json") == {"n": 2}
