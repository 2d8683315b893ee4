"""Every scenario on every backend that can execute here, each compared with the local run."""

from __future__ import annotations

import pytest

from .adapters import STATES, discover
from .scenarios import SCENARIOS

ADAPTERS = discover()
REFERENCE = ADAPTERS[0]  # the local runner
assert REFERENCE.name == "local"


# Differences from the local run that are dagsmith bugs, reported and not fixed yet:
# (scenario, backend, compared name) -> (why, shows_here). A name is an Outcome.COMPARED field or
# "observed <name>" of Scenario.observe. Where the bug shows on this machine (shows_here()), the
# name is still compared: the test xfails while it differs and FAILS once it is equal (then remove
# the entry); elsewhere it must be equal. Everything else must be equal as usual.
KNOWN_DIFFERENCES = {
}


def cases():
    for scenario in SCENARIOS:
        for adapter in ADAPTERS:
            marks = [pytest.mark.slow] if adapter.slow or scenario.slow else []
            yield pytest.param(scenario, adapter, id=f"{scenario.name}-{adapter.name}", marks=marks)


@pytest.mark.parametrize("scenario, adapter", list(cases()))
def test_conformance(scenario, adapter, conformance_runs):
    reason = adapter.unavailable()
    if reason:
        pytest.skip(reason)
    got = conformance_runs.outcome(scenario, adapter)
    assert set(got.steps.values()) <= set(STATES) and got.status in ("succeeded", "gated", "failed"), got.native
    scenario.check(got, adapter)  # what must hold on every backend, the local runner included
    if adapter is REFERENCE:
        return
    local = conformance_runs.outcome(scenario, REFERENCE)
    expected = {**local.compared(), **{f"observed {k}": v for k, v in scenario.observe(local).items()}}
    actual = {**got.compared(), **{f"observed {k}": v for k, v in scenario.observe(got).items()}}
    assert actual.keys() == expected.keys()
    known = []
    for name, value in actual.items():
        why, shows_here = KNOWN_DIFFERENCES.get((scenario.name, adapter.name, name), (None, None))
        if why is not None and shows_here():
            assert value != expected[name], f"{name!r} now equals the local run's: remove {(scenario.name, adapter.name, name)} from KNOWN_DIFFERENCES"
            known.append(f"{name}: {why}")
            continue
        assert value == expected[name], f"{adapter.name} differs from the local run in {name!r} (raw states: {got.native})"
    if known:
        pytest.xfail("known dagsmith bug: " + "; ".join(known))
