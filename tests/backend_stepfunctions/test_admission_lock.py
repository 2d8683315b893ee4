"""The admission lock's states as emitted (the moto execution is in test_admission.py): a lease,
jittered retries, Catches that end cleanly, an Unlock that deletes only its own holder's item."""

from __future__ import annotations

import json

import pytest

from dagsmith_testing import compile_path


def states_of(**options) -> dict:
    from dagsmith.backends import get

    ir = compile_path("examples/churn/pipeline.yaml")
    files = get("stepfunctions").emit(ir, {**ir.backends.get("stepfunctions", {}), **options})
    return json.loads(next(t for n, t in files.items() if n.endswith(".asl.json")))["States"]


def test_the_lock_has_a_lease(in_repo):
    states = states_of(admission_lease_seconds=120)
    assert states["Admission"]["Parameters"] == {"holder.$": "States.Format('{} {}', $$.Execution.Id, $$.State.EnteredTime)"}
    lock, take = states["Lock admission"], states["Take over stale admission lock"]
    assert lock["Parameters"]["ConditionExpression"] == "attribute_not_exists(pipeline)"
    assert lock["Parameters"]["Item"]["holder"] == {"S.$": "$.lock.holder"}
    assert all(r["JitterStrategy"] == "FULL" for r in lock["Retry"] + take["Retry"])
    # held: read it every 15 s; the same holder for a whole lease of polls (120 s: 8) is taken over
    assert [c["Next"] for c in lock["Catch"]] == ["Read admission lock", "Admission failed"]
    assert states["Wait for the lock"]["Seconds"] == 15
    check = states["Check admission lock"]["Choices"]
    assert [c["Next"] for c in check] == ["Lock admission", "Take over stale admission lock", "Same lock holder"]
    assert check[1]["And"][-1] == {"Variable": "$.seen.polls", "NumericGreaterThanEquals": 8}
    assert states["Check admission lock"]["Default"] == "Lock holder seen"  # a new holder: the count starts again
    assert take["Parameters"]["ConditionExpression"] == "attribute_not_exists(pipeline) OR holder = :seen"
    assert take["Parameters"]["ExpressionAttributeValues"] == {":seen": {"S.$": "$.seen.holder"}}
    # Unlock: only its own item; its failure leaves the item to the lease, never a stuck execution
    for name in ("Unlock admission", "Unlock after failure"):
        assert states[name]["Parameters"]["ConditionExpression"] == "holder = :me"
        assert states[name]["Catch"][0]["ErrorEquals"] == ["States.ALL"]
    default = states_of()["Check admission lock"]["Choices"][1]["And"][-1]["NumericGreaterThanEquals"] * 15
    assert states["Admit"]["TimeoutSeconds"] < 1800 == default


def test_the_lease_option_is_checked(in_repo):
    from dagsmith.backends import get
    from dagsmith.backends.problems import BackendProblems

    ir = compile_path("examples/churn/pipeline.yaml")
    backend = get("stepfunctions")
    with pytest.raises(BackendProblems, match="admission_lease_seconds"):
        backend.emit(ir, {**ir.backends.get("stepfunctions", {}), "admission_lease_seconds": 0})
    short = [p for p in backend.check(ir, {**ir.backends.get("stepfunctions", {}), "admission_lease_seconds": 60})
             if "admission_lease_seconds" in p.path]
    assert [p.level for p in short] == ["warning"]
