"""`dagsmith watch`: continuous training locally (triggers.on_new_data).

Time is driven by an injected clock (no sleeping); most tests inject a recording `run` so they
stay fast, and a few go through the real runner and the real CLI in a subprocess. S3 is moto's
server on 127.0.0.1 (the only local stand-in for S3), listed through boto3 as in production.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

from dagsmith.compiler import compile_spec
from dagsmith.runner.watch import Watcher, WatchError, WatchLocked
from dagsmith.spec import load_spec

DAGSMITH = str(Path(sys.executable).parent / "dagsmith")
HOUR = 3600.0
T0 = 1_800_000_000.0

SPEC = """
dagsmith: 1
pipeline: {name: watchdemo}
sources:
  events: {type: csv, uri: data/}
features:
  per_user:
    inputs: [events]
    sql: SELECT user_id, count(*) AS n FROM events GROUP BY ALL ORDER BY user_id
triggers:
  on_new_data:
    - source: events
      min_interval: 1h
"""


class Clock:
    def __init__(self, t: float = T0):
        self.t = t

    def __call__(self) -> float:
        return self.t

    def advance(self, seconds: float) -> None:
        self.t += seconds


class Runs:
    """A stand-in for runner.start: records each run, returns a finished run record."""

    def __init__(self, status: str = "succeeded"):
        self.calls: list[str] = []
        self.status = status

    def __call__(self, ir, workdir) -> dict:
        run_id = f"run-{len(self.calls) + 1}"
        self.calls.append(run_id)
        return {"run_id": run_id, "status": self.status}


@pytest.fixture
def project(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    (tmp_path / "data").mkdir()
    (tmp_path / "pipeline.yaml").write_text(SPEC)
    return tmp_path


def compiled(spec: str = "pipeline.yaml"):
    return compile_spec(load_spec(spec, None, {}))


def land(project: Path, name: str, rows: str = "1,a\n") -> None:
    (project / "data" / name).write_text("user_id,kind\n" + rows)


def watcher(clock: Clock, runs: Runs, log: list | None = None, workdir: str = ".dagsmith") -> Watcher:
    return Watcher(compiled(), Path(workdir), now=clock, run=runs, log=(log.append if log is not None else lambda line: None))


def test_burst_then_min_interval_holds_then_one_more_run(project):
    clock, runs, log = Clock(), Runs(), []
    w = watcher(clock, runs, log)
    with w:
        assert w.check()["action"] == "none"  # an empty folder: nothing to do
        for i in range(5):
            land(project, f"part-{i}.csv")
        outcome = w.check()
        assert outcome["action"] == "run" and len(outcome["new"]["events"]) == 5
        assert runs.calls == ["run-1"]
        clock.advance(60)
        assert w.check()["action"] == "none" and runs.calls == ["run-1"]  # nothing new: no run

        clock.advance(10 * 60)
        for i in range(5, 8):
            land(project, f"part-{i}.csv")
        held = w.check()
        assert held["action"] == "held" and runs.calls == ["run-1"]
        assert held["held_until"].startswith("2027-01-15T09:00:00")  # T0 + 1h (the last run's start)
        clock.advance(20 * 60)
        land(project, "part-8.csv")
        assert w.check()["action"] == "held"
        clock.advance(28 * 60)  # 59 min after the run: still held
        assert w.check()["action"] == "held" and runs.calls == ["run-1"]
        clock.advance(61)
        outcome = w.check()
        assert outcome["action"] == "run" and runs.calls == ["run-1", "run-2"]  # ONE run for 4 files
        assert w.check()["action"] == "none" and runs.calls == ["run-1", "run-2"]
    assert any("held back by min_interval until" in line for line in log)
    assert any("run run-2 finished: succeeded" in line for line in log)
    assert sum("held back" in line for line in log) == 2  # logged when data lands, not every poll


def test_first_start_counts_existing_data_and_restart_does_not_rerun(project):
    land(project, "a.csv")
    land(project, "b.csv")
    clock, runs = Clock(), Runs()
    with watcher(clock, runs) as w:
        outcome = w.check()
    assert outcome["first_start"] and outcome["action"] == "run" and runs.calls == ["run-1"]
    state = json.loads((project / ".dagsmith" / "watch" / "watchdemo.json").read_text())
    assert state["last_run"]["run_id"] == "run-1" and state["pending"] == {}
    assert sorted(Path(k).name for k in state["sources"]["events"]) == ["a.csv", "b.csv"]

    clock.advance(2 * HOUR)
    with watcher(clock, runs) as again:  # a new watcher on the same workdir: a restart
        assert again.check()["action"] == "none"
    assert runs.calls == ["run-1"]


def test_log_lines_read_well_and_nothing_new_is_said_once(project):
    land(project, "a.csv")
    clock, runs, log = Clock(), Runs(), []
    with watcher(clock, runs, log) as w:
        w.check()
        assert log[0] == "watch watchdemo: first check (no watch state yet): the 1 object in events counts as new data"
        del log[:]
        for _ in range(3):  # polls with nothing new: one line, not one per poll
            clock.advance(60)
            assert w.check()["action"] == "none"
        assert log == ["watch watchdemo: no new data in events (checked 1 object)"]
        land(project, "b.csv")
        land(project, "c.csv")
        clock.advance(2 * HOUR)
        w.check()
        assert log[1] == "watch watchdemo: new data in events: 2 objects added or changed"
        clock.advance(60)
        w.check()  # after a run, nothing new is said again (once)
        clock.advance(60)
        w.check()
        assert log[-1] == "watch watchdemo: no new data in events (checked 3 objects)"
        assert sum("no new data" in line for line in log) == 2
    del log[:]
    with watcher(clock, runs, log) as again:  # a new process (`--once` each time): says it at once
        again.check()
    assert log == ["watch watchdemo: no new data in events (checked 3 objects)"]


def test_changed_file_is_new_data_and_deleted_file_is_not(project):
    land(project, "a.csv")
    land(project, "b.csv")
    clock, runs = Clock(), Runs()
    with watcher(clock, runs) as w:
        w.check()
        clock.advance(2 * HOUR)
        (project / "data" / "b.csv").unlink()
        assert w.check()["action"] == "none"
        land(project, "a.csv", rows="1,a\n2,b\n")  # same name, new content
        outcome = w.check()
    assert outcome["action"] == "run" and [Path(k).name for k in outcome["new"]["events"]] == ["a.csv"]
    assert runs.calls == ["run-1", "run-2"]


def test_pending_data_survives_a_watcher_killed_mid_run(project):
    land(project, "a.csv")
    clock = Clock()

    def killed(ir, workdir):
        raise KeyboardInterrupt

    with pytest.raises(KeyboardInterrupt), watcher(clock, killed) as w:
        w.check()
    state = json.loads((project / ".dagsmith" / "watch" / "watchdemo.json").read_text())
    assert state["pending"] and state["last_run"]["status"] == "running"
    assert not (project / ".dagsmith" / "watch" / "watchdemo.lock").exists()
    runs = Runs()
    with watcher(clock, runs) as w:
        assert w.check()["action"] == "held"  # min_interval counts from the interrupted start
        clock.advance(HOUR)
        assert w.check()["action"] == "run" and runs.calls == ["run-1"]


def test_failed_run_consumes_the_data(project):
    land(project, "a.csv")
    clock, runs = Clock(), Runs(status="failed")
    with watcher(clock, runs) as w:
        assert w.check()["run"]["status"] == "failed"
        clock.advance(2 * HOUR)
        assert w.check()["action"] == "none" and runs.calls == ["run-1"]  # not retried on the same data


def test_loop_polls_with_an_injected_sleep(project):
    clock, runs, naps = Clock(), Runs(), []

    def sleep(seconds):
        naps.append(seconds)
        clock.advance(seconds)
        if len(naps) == 2:
            for i in range(5):
                land(project, f"late-{i}.csv")

    with watcher(clock, runs) as w:
        w.loop(30, sleep=sleep, max_checks=5)
    assert naps == [30, 30, 30, 30] and runs.calls == ["run-1"]


def test_second_watcher_is_refused_and_a_stale_lock_is_taken_over(project):
    clock = Clock()
    first = watcher(clock, Runs())
    lock = project / ".dagsmith" / "watch" / "watchdemo.lock"
    with first:
        assert lock.read_text().split() == [str(os.getpid())]
        with pytest.raises(WatchLocked, match="already watching"):
            watcher(clock, Runs()).__enter__()
        result = subprocess.run([DAGSMITH, "watch", "pipeline.yaml", "--once"], capture_output=True, text=True, timeout=60)
        assert result.returncode == 2 and f"process {os.getpid()} is already watching" in result.stderr
    assert not lock.exists()  # released on exit

    dead = subprocess.Popen([sys.executable, "-c", "pass"])
    dead.wait()
    lock.write_text(f"{dead.pid}\n")  # a watcher that died without cleaning up
    with watcher(clock, Runs()):
        assert lock.read_text().split() == [str(os.getpid())]


def test_spec_without_on_new_data_is_an_error(project):
    (project / "plain.yaml").write_text(SPEC.split("triggers:")[0])
    with pytest.raises(WatchError, match="no triggers.on_new_data"):
        Watcher(compiled("plain.yaml"), Path(".dagsmith"))
    result = subprocess.run([DAGSMITH, "watch", "plain.yaml", "--once"], capture_output=True, text=True, timeout=60)
    assert result.returncode == 2 and "has no triggers.on_new_data: nothing to watch" in result.stderr


def test_cli_once_runs_the_real_pipeline_once_then_nothing(project):
    """New process each time: the state file, not memory, prevents a rerun on old data."""
    land(project, "a.csv", rows="1,a\n2,b\n")
    land(project, "b.csv", rows="1,c\n")
    first = subprocess.run([DAGSMITH, "watch", "pipeline.yaml", "--once", "--format", "json"], capture_output=True, text=True, timeout=120)
    assert first.returncode == 0, first.stderr
    outcome = json.loads(first.stdout)
    assert outcome["action"] == "run" and outcome["run"]["status"] == "succeeded"
    assert "watch watchdemo: first check (no watch state yet): the 2 objects in events count as new data\n" in first.stderr
    assert "run started" in first.stderr
    import pyarrow.parquet as pq

    table = pq.read_table(project / ".dagsmith" / "runs" / outcome["run"]["run_id"] / "steps" / "per_user" / "table.parquet")
    assert table.to_pydict() == {"user_id": [1, 2], "n": [2, 1]}

    second = subprocess.run([DAGSMITH, "watch", "pipeline.yaml", "--once", "--format", "json"], capture_output=True, text=True, timeout=60)
    assert second.returncode == 0 and json.loads(second.stdout)["action"] == "none"
    assert second.stderr == "watch watchdemo: no new data in events (checked 2 objects)\n"  # one line, not silence
    land(project, "c.csv", rows="3,a\n")
    third = subprocess.run([DAGSMITH, "watch", "pipeline.yaml", "--once", "--format", "json"], capture_output=True, text=True, timeout=60)
    assert third.returncode == 0 and json.loads(third.stdout)["action"] == "held"
    assert "held back by min_interval until" in third.stderr
    assert len(list((project / ".dagsmith" / "runs").iterdir())) == 1


def test_cli_once_exits_1_when_the_run_fails(project):
    (project / "pipeline.yaml").write_text(SPEC.replace("count(*) AS n", "count(no_such_column) AS n"))
    land(project, "a.csv")
    result = subprocess.run([DAGSMITH, "watch", "pipeline.yaml", "--once", "--format", "json"], capture_output=True, text=True, timeout=120)
    assert result.returncode == 1, result.stderr
    assert json.loads(result.stdout)["run"]["status"] == "failed"
    assert "finished: failed" in result.stderr


# --- S3 --------------------------------------------------------------------------------------


@pytest.fixture
def s3(aws_s3, monkeypatch):
    bucket = "watch-lake"
    aws_s3.create_bucket(Bucket=bucket)
    return aws_s3, bucket


S3_SPEC = """
dagsmith: 1
pipeline: {{name: s3watch}}
sources:
  events: {{type: s3, format: csv, uri: "s3://{bucket}/events/"}}
features:
  per_user:
    inputs: [events]
    sql: SELECT user_id, count(*) AS n FROM events GROUP BY ALL
triggers:
  on_new_data:
    - source: events
"""


def test_s3_prefix_new_object_triggers_a_run_unchanged_listing_does_not(s3, tmp_path, monkeypatch):
    client, bucket = s3
    monkeypatch.chdir(tmp_path)
    (tmp_path / "pipeline.yaml").write_text(S3_SPEC.format(bucket=bucket))
    client.put_object(Bucket=bucket, Key="events/2026-11-01.csv", Body=b"user_id,kind\n1,a\n")
    clock, runs = Clock(), Runs()
    with watcher(clock, runs) as w:
        assert w.check()["action"] == "run"  # first start: existing data counts as new
        clock.advance(60)
        assert w.check()["action"] == "none"  # unchanged listing
        client.put_object(Bucket=bucket, Key="events/_SUCCESS", Body=b"")  # not a csv: ignored
        assert w.check()["action"] == "none"
        client.put_object(Bucket=bucket, Key="events/2026-11-02.csv", Body=b"user_id,kind\n2,a\n")
        outcome = w.check()  # no min_interval: runs at once
        assert outcome["action"] == "run" and outcome["new"] == {"events": ["events/2026-11-02.csv"]}
        client.put_object(Bucket=bucket, Key="events/2026-11-02.csv", Body=b"user_id,kind\n2,b\n3,c\n")  # new ETag
        assert w.check()["action"] == "run"
        assert w.check()["action"] == "none"
    assert runs.calls == ["run-1", "run-2", "run-3"]
    state = json.loads((tmp_path / ".dagsmith" / "watch" / "s3watch.json").read_text())
    assert list(state["sources"]["events"]) == ["events/2026-11-01.csv", "events/2026-11-02.csv"]


def test_ctrl_c_stops_the_loop_cleanly(project):
    import signal
    import threading

    land(project, "a.csv")
    # Started as a terminal starts it: Ctrl-C not ignored. An ignored signal is inherited, and
    # something earlier in this test process (a library's handler) may ignore it here: the
    # wrapper restores the default before it execs dagsmith. PYTHONFAULTHANDLER: if it hangs,
    # SIGABRT makes it print every thread's stack (below).
    restore = "import os, signal, sys; signal.signal(signal.SIGINT, signal.SIG_DFL); os.execv(sys.argv[1], sys.argv[1:])"
    watching = subprocess.Popen([sys.executable, "-c", restore, DAGSMITH, "watch", "pipeline.yaml", "--interval", "0.2"],
                                stderr=subprocess.PIPE, text=True, env={**os.environ, "PYTHONFAULTHANDLER": "1"})
    lines: list[str] = []
    finished = threading.Event()

    def read() -> None:  # Ctrl-C once the run's last line is out (the state file is written just before it)
        for line in watching.stderr:
            lines.append(line)
            if "finished:" in line:
                finished.set()

    reader = threading.Thread(target=read, daemon=True)
    reader.start()
    assert finished.wait(300), "the run did not finish: " + "".join(lines)[-2000:]  # a busy CI machine is slow
    ignored = _ignored_signals(watching.pid)
    assert signal.SIGINT not in ignored, f"watch ignores SIGINT (this test process: {signal.getsignal(signal.SIGINT)!r})"
    watching.send_signal(signal.SIGINT)
    try:
        watching.wait(timeout=30)
    except subprocess.TimeoutExpired:
        tree = subprocess.run(["ps", "-o", "pid,ppid,stat,etime,args", "--forest", "-g", str(os.getpgid(watching.pid))],
                              capture_output=True, text=True).stdout
        watching.send_signal(signal.SIGABRT)
        watching.wait(30)
        reader.join(10)
        pytest.fail("watch did not stop within 30 s of Ctrl-C; its processes:\n" + tree + "\nits stderr, with its stacks:\n"
                    + "".join(lines)[-8000:])
    reader.join(10)
    stderr = "".join(lines)
    assert watching.returncode == 0, stderr
    assert "finished: succeeded" in stderr and stderr.rstrip().endswith("stopped")
    assert not (project / ".dagsmith" / "watch" / "watchdemo.lock").exists()


def _ignored_signals(pid: int) -> set[int]:
    """The signals process `pid` ignores (SigIgn in /proc/PID/status); empty where there is no /proc."""
    try:
        status = Path(f"/proc/{pid}/status").read_text()
    except OSError:
        return set()
    mask = int(next(line.split()[1] for line in status.splitlines() if line.startswith("SigIgn:")), 16)
    return {bit + 1 for bit in range(64) if mask >> bit & 1}
