"""`min_interval`: one meaning on every backend and in `dagsmith watch`.

    At most one run per interval, however much data lands: new data that comes within
    `min_interval` of the start of the last run is HELD (not dropped) until the interval has
    passed, and then starts ONE run, which consumes every data arrival before its start.

So a data-triggered run is, at its start:
  admit    the interval since the last run's start has passed for one of its sources;
  hold     it has not: wait `wait_seconds`, then decide again;
  covered  its data landed before the last run started: that run read it, nothing to do
           (the orchestrator skips this run whole).

`decide` is the rule, pure. `admit` applies it to a run of an orchestrator, with the time of the
last admitted run kept in the artifact store (so it holds across schedulers and restarts);
`dagsmith watch` applies `decide` to its own state file. Runs that are not data-triggered
(scheduled, manual) are always admitted, and count as "the last run" too: they read the data
that was there when they started.
"""

from __future__ import annotations

import datetime as _dt
import json
from dataclasses import dataclass

from .context import StepFailed
from .environment import DEFAULT_RUN_ID
from .store import Store


@dataclass(frozen=True)
class Decision:
    action: str  # "admit" | "hold" | "covered"
    wait_seconds: float = 0.0
    reason: str = ""

    def to_json(self) -> dict:
        return {"action": self.action, "admitted": self.action == "admit", "wait_seconds": round(self.wait_seconds, 3), "reason": self.reason}


def decide(last_started: float | None, pending: dict[str, float], intervals: dict[str, float], now: float) -> Decision:
    """`pending`: source -> when its new data landed (epoch seconds); `intervals`: source ->
    min_interval seconds. Empty `pending` means a run that new data did not start: admitted."""
    if not pending or last_started is None:
        return Decision("admit", reason="first run" if last_started is None else "not started by new data")
    fresh = {source: at for source, at in pending.items() if at >= last_started}
    if not fresh:
        return Decision("covered", reason=f"its data landed before the last run started ({_iso(last_started)}), which read it")
    due = min(last_started + float(intervals.get(source) or 0) for source in fresh)
    if now >= due:
        return Decision("admit", reason=f"min_interval passed since the last run ({_iso(last_started)})")
    return Decision("hold", wait_seconds=due - now, reason=f"min_interval holds new data in {', '.join(sorted(fresh))} until {_iso(due)}")


ADMIT_ATTEMPTS = 20  # decisions per admission when other runs keep winning the write


def state_key(pipeline: str) -> str:
    return f"triggers/{pipeline}/last_run.json"


def admit(store: Store, pipeline: str, intervals: dict[str, float], trigger: dict | None, run_id: str, now: float) -> Decision:
    """Decide for one run; an admitted run is recorded as the last one. `trigger`, from
    DAGSMITH_TRIGGER: {"sources": [NAME, ...], "at": ISO time the data landed} (None: the run
    was not started by new data)."""
    pending = {}
    if trigger:
        unknown = sorted(set(trigger.get("sources") or []) - set(intervals))
        if unknown:
            raise StepFailed(f"DAGSMITH_TRIGGER names sources without on_new_data: {unknown} (known: {sorted(intervals)})")
        at = _epoch(trigger["at"]) if trigger.get("at") else now
        pending = {source: at for source in trigger.get("sources") or intervals}
    # Runs decide concurrently (Sensor-started workflows, held runs waking at once): the state is
    # written only if no other run wrote it since it was read (the store's compare-and-swap), and a
    # run that lost decides again on what the winner wrote (then: covered, or held).
    for _ in range(ADMIT_ATTEMPTS):
        last, version = store.read_versioned(state_key(pipeline))
        if last and run_id not in ("", DEFAULT_RUN_ID) and last.get("run_id") == run_id:
            # This run wrote the state already: its admission is being retried (a pod evicted or
            # failed after the write; "adhoc", the id of runs given none, names no one run). Deciding anew would call its own start "the last run" and
            # skip the data as covered.
            return Decision("admit", reason="admitted already: a retried admission of this run")
        last_started = _epoch(last["started"]) if last else None
        decision = decide(last_started, pending, intervals, now)
        if decision.action != "admit" or store.write_if(state_key(pipeline), {"started": _iso(now), "run_id": run_id}, version):
            return decision
    raise StepFailed(f"admission: the state at {state_key(pipeline)} changed {ADMIT_ATTEMPTS} times while this run decided: try again")


def parse_trigger(text: str | None) -> dict | None:
    """DAGSMITH_TRIGGER's JSON, checked (a run that is not data-triggered: empty, unset, or
    {"sources": [""], "at": ""}: what a template of the value gives with its variables empty)."""
    if not text or not text.strip():
        return None
    try:
        value = json.loads(text)
    except ValueError:
        raise StepFailed(f"DAGSMITH_TRIGGER is not JSON: {text[:80]!r}") from None
    if not isinstance(value, dict) or not isinstance(value.get("sources", []), list) or not isinstance(value.get("at", ""), (str, type(None))):
        raise StepFailed('DAGSMITH_TRIGGER must be {"sources": [NAME, ...], "at": "ISO time"}')
    if value.get("sources") == [""] and not value.get("at"):
        return None  # a run not started by data, from a template filled in by variables (Argo)
    if value.get("at"):
        _epoch(value["at"])
    return value


def _iso(epoch: float) -> str:
    return _dt.datetime.fromtimestamp(epoch, _dt.timezone.utc).isoformat(timespec="seconds")


def _epoch(text: str) -> float:
    try:
        moment = _dt.datetime.fromisoformat(text.replace("Z", "+00:00"))
    except (ValueError, AttributeError):
        raise StepFailed(f"not an ISO 8601 time: {str(text)[:40]!r}") from None
    if moment.tzinfo is None:
        moment = moment.replace(tzinfo=_dt.timezone.utc)
    return moment.timestamp()
