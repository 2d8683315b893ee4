"""min_interval on Step Functions, executed in moto: a burst of new-data executions makes ONE run,
the others end early as succeeded and skipped ("covered"), behind the DynamoDB admission lock; new
data within the interval is held (the Wait state) and then makes one more run.

Runs on the conformance suite's moto worker (tests/conformance/backend_stepfunctions.py: the
template deployed into moto's CloudFormation by dagsmith's deploy, moto's interpreter running the
state machine, and its TEST-ONLY HOOK running each task's command as a local process).
"""

from __future__ import annotations

import datetime as dt
import json
import sys
import uuid

import pytest

pytestmark = pytest.mark.slow

INTERVAL = 40  # seconds: longer than the first burst takes (its admission to the second burst), so the second is held


def write_spec(folder) -> None:
    (folder / "events.csv").write_text("id,x\n1,2\n2,3\n", encoding="utf-8")
    spec = {
        "dagsmith": 1,
        "pipeline": {"name": "burst"},
        "sources": {"events": {"type": "csv", "uri": "events.csv"}},
        "triggers": {"on_new_data": [{"source": "events", "min_interval": f"{INTERVAL}s"}]},
        "steps": {"count": {"after": ["events"], "run": {"command": [sys.executable, "-c", "open('runs.txt', 'a').write('run\\n')"]}}},
    }
    (folder / "pipeline.yaml").write_text(json.dumps(spec, indent=1), encoding="utf-8")


def at(seconds_from_now: float) -> str:
    return (dt.datetime.now(dt.timezone.utc) + dt.timedelta(seconds=seconds_from_now)).isoformat(timespec="seconds")


def test_burst_of_new_data_makes_one_run_per_interval(moto_worker, tmp_path):
    from conformance.backend_stepfunctions import compile_spec

    folder = tmp_path / "spec"
    folder.mkdir()
    write_spec(folder)
    ir_file = compile_spec(folder / "pipeline.yaml", tmp_path / "out", None)
    deployed = moto_worker.call("deploy", ir_file=str(ir_file), stack="burst", prefix="burst", root=str(folder),
                                options={"state_machine_name": "burst"})
    today = dt.date.today().isoformat()

    def inputs(landed: str, n: int) -> dict:
        return {"inputs": [{"trigger": {"sources": ["events"], "at": landed}, "run_date": today}] * n,
                "names": [f"burst-{uuid.uuid4().hex[:10]}" for _ in range(n)]}

    # 1. data landed, three notifications at once: the first admitted run reads it, the rest are covered
    burst = moto_worker.call("run_many", machine=deployed["machine"], **inputs(at(-1), 3))
    assert [r["status"] for r in burst] == ["SUCCEEDED"] * 3, burst
    outcomes = sorted(r["output"]["status"] for r in burst)
    assert outcomes == ["skipped", "skipped", "succeeded"], [r["output"] for r in burst]
    assert all(r["output"]["reason"].startswith("min_interval") for r in burst if r["output"]["status"] == "skipped")
    assert (folder / "runs.txt").read_text().count("run") == 1
    # the lock was taken by each execution (moto's DynamoDB, the conditional put retried while held)
    assert all("TaskSucceeded" in r["types"] for r in burst)

    # 2. new data right after that run started: held until the interval has passed, then ONE run
    held = moto_worker.call("run_many", machine=deployed["machine"], **inputs(at(1), 2))
    assert [r["status"] for r in held] == ["SUCCEEDED"] * 2, held
    assert sorted(r["output"]["status"] for r in held) == ["skipped", "succeeded"], [r["output"] for r in held]
    (admitted,) = [r for r in held if r["output"]["status"] == "succeeded"]
    assert "WaitStateEntered" in admitted["types"], admitted["types"]  # "Hold for min_interval"
    assert (folder / "runs.txt").read_text().count("run") == 2


LEASE = 4  # seconds (backends.stepfunctions.admission_lease_seconds; 1800 by default)


def test_a_stale_lock_is_taken_over_after_its_lease_and_a_live_one_blocks(moto_worker, tmp_path):
    """An execution stopped between Lock and Unlock leaves the lock item behind. While the lock
    keeps changing hands (live admissions), a waiting execution is held; once the same holder
    has stayed a whole lease (its execution is gone), the waiting execution takes the lock over,
    runs, and unlocks. Before leases, it retried for ~23 minutes and failed."""
    import time

    from conformance.backend_stepfunctions import compile_spec

    folder = tmp_path / "spec"
    folder.mkdir()
    write_spec(folder)
    ir_file = compile_spec(folder / "pipeline.yaml", tmp_path / "out", None)
    deployed = moto_worker.call("deploy", ir_file=str(ir_file), stack="lease", prefix="lease", root=str(folder),
                                options={"state_machine_name": "lease", "admission_lease_seconds": LEASE})

    def holder(n: int) -> dict:
        return {"pipeline": "burst", "holder": f"arn:aws:states:us-east-1:123456789012:execution:lease:other-{n} 2026-12-07T10:00:0{n}Z",
                "taken_at": f"2026-12-07T10:00:0{n}Z"}

    moto_worker.call("lock_item", stack="lease", pipeline="burst", put=holder(0))
    name = f"lease-{uuid.uuid4().hex[:10]}"
    (arn,) = moto_worker.call("start_many", machine=deployed["machine"], names=[name],
                              inputs=[{"trigger": {"sources": ["events"], "at": at(-1)}, "run_date": dt.date.today().isoformat()}])
    # live: the lock changes hands every 1.5 s for three leases; the execution must wait
    for n in range(1, 9):
        time.sleep(1.5)
        assert moto_worker.call("lock_item", stack="lease", pipeline="burst", put=holder(n))["holder"] == holder(n)["holder"]
    assert not (folder / "runs.txt").exists()
    # stale: holder 8 stays (its execution was stopped); after a lease the execution takes over
    (got,) = moto_worker.call("wait_many", arns=[arn], names=[name], timeout=120)
    assert got["status"] == "SUCCEEDED" and got["output"]["status"] == "succeeded", got
    assert {"Take over stale admission lock", "Wait for the lock", "Lock holder seen"} <= set(got["entered"]), got["entered"]
    assert (folder / "runs.txt").read_text().count("run") == 1
    assert moto_worker.call("lock_item", stack="lease", pipeline="burst") is None  # unlocked: its own item deleted
