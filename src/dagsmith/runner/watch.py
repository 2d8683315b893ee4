"""`dagsmith watch`: continuous training on this machine (triggers.on_new_data, run locally).

Every `on_new_data` source is polled: local files / folders / globs by (path, size, mtime),
s3:// prefixes by listing (key, size, ETag). Anything added or changed since the last snapshot
is new data; it marks its trigger pending, and a pending trigger starts ONE run as soon as its
`min_interval` has passed since the last run's start (a run consumes every pending trigger).
Runs are synchronous: the loop never starts a run while one is going.

State: <workdir>/watch/<pipeline>.json (written atomically) keeps the snapshot per source, the
pending triggers and the last run (start time, id, status), so a restart does not retrain on
data it has seen. With no state file at all, the current data counts as new: one initial run.

Lock: <workdir>/watch/<pipeline>.lock holds the watcher's PID under an OS file lock (flock), so
a second watcher of the same pipeline is refused; the lock of a dead process is taken over.
See docs/watch.md.
"""

from __future__ import annotations

import datetime as _dt
import json
import os
import time
from dataclasses import dataclass
from pathlib import Path
from collections.abc import Callable

from ..errors import DagsmithError
from ..ir import IR
from ..runtime.admission import Decision, decide
from ..runtime.store import atomic_write_bytes

STATE_VERSION = 1
DEFAULT_INTERVAL = 30.0


class WatchError(DagsmithError):
    """A pipeline that cannot be watched (no on_new_data, a source that cannot be listed)."""


class WatchLocked(DagsmithError):
    """Another watcher holds the pipeline's lock."""


@dataclass(frozen=True)
class Trigger:
    source: str
    type: str
    uri: str  # resolved: ${...} substituted, relative paths under the spec's folder
    fmt: str
    min_interval: float  # seconds; 0 when the spec gives none


def _iso(seconds: float | None) -> str | None:
    if seconds is None:
        return None
    return _dt.datetime.fromtimestamp(seconds, _dt.UTC).isoformat(timespec="seconds")


def triggers_of(ir: IR, root: str | os.PathLike = ".") -> list[Trigger]:
    """The IR's on_new_data triggers with their URIs resolved (relative ones under `root`, the
    spec's folder); WatchError when there are none."""
    from ..runtime.context import RunValues
    from ..runtime.environment import run_environment
    from ..runtime.sources import source_format

    entries = (ir.triggers or {}).get("on_new_data") or []
    if not entries:
        raise WatchError(
            f"pipeline {ir.name!r} has no triggers.on_new_data: nothing to watch "
            "(add `triggers: {on_new_data: [{source: NAME, min_interval: 1h}]}` to the spec, "
            "or use `dagsmith run` / a schedule)"
        )
    steps = {step.id: step for step in ir.steps}
    root = Path(root).resolve()
    try:
        values = RunValues.from_env(ir, run_environment("watch", None, {}))
    except DagsmithError:
        values = None
    out = []
    for entry in entries:
        if entry.get("type") == "sql":
            raise WatchError(f"on_new_data source {entry['source']!r} is a sql query: only files and s3 prefixes can be watched")
        step = steps.get(entry["source"])
        config = dict(step.config) if step is not None else {}
        config.setdefault("type", entry["type"])
        uri = entry["uri"]
        if values is not None:
            try:
                uri = values.resolve(uri)
            except DagsmithError:
                pass
        if "://" not in uri and not os.path.isabs(uri):
            uri = str(root / uri)
        out.append(Trigger(entry["source"], entry["type"], uri, source_format(config), float(entry.get("min_interval") or 0)))
    return out


def snapshot(trigger: Trigger) -> dict[str, list]:
    """What the source holds now: {path or key: [size, mtime_ns or ETag]}."""
    from ..runtime.sources import list_local, list_s3

    try:
        if trigger.uri.startswith("s3://"):
            return {o["Key"]: [o["Size"], o["ETag"]] for o in list_s3(trigger.uri, trigger.fmt)}
        out = {}
        for path in list_local(trigger.uri, trigger.fmt):
            try:
                stat = path.stat()
            except FileNotFoundError:  # removed while listing
                continue
            out[str(path)] = [stat.st_size, stat.st_mtime_ns]
        return out
    except DagsmithError:
        raise
    except Exception as exc:  # botocore / OS errors: one line, the watcher keeps its state
        raise WatchError(f"cannot list source {trigger.source!r} at {trigger.uri}: {type(exc).__name__}: {exc}") from None


def changed(old: dict | None, new: dict) -> list[str]:
    """Keys added or changed since `old` (None: no snapshot yet, everything is new)."""
    if old is None:
        return sorted(new)
    return sorted(key for key, value in new.items() if old.get(key) != value)


class Lock:
    """<workdir>/watch/<pipeline>.lock: the PID of the watcher, under flock where available."""

    def __init__(self, path: Path):
        self.path = Path(path)
        self.fd: int | None = None

    def holder(self) -> int | None:
        try:
            return int(self.path.read_text(encoding="utf-8").split()[0])
        except (OSError, ValueError, IndexError):
            return None

    def acquire(self) -> None:
        self.path.parent.mkdir(parents=True, exist_ok=True)
        try:
            import fcntl
        except ImportError:  # no flock (Windows): PID files only
            return self._acquire_pid_only()
        for _ in range(10):
            fd = os.open(self.path, os.O_RDWR | os.O_CREAT, 0o644)
            try:
                fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
            except OSError:
                os.close(fd)
                raise self._refused() from None
            try:  # the file we locked may have been removed and recreated meanwhile: retry
                if os.fstat(fd).st_ino != os.stat(self.path).st_ino:
                    os.close(fd)
                    continue
            except FileNotFoundError:
                os.close(fd)
                continue
            # Locked: whatever PID the file held is dead (or not a watcher): take it over.
            os.ftruncate(fd, 0)
            os.write(fd, f"{os.getpid()}\n".encode())
            os.fsync(fd)
            self.fd = fd
            return
        raise self._refused()

    def _acquire_pid_only(self) -> None:
        for _ in range(3):
            try:
                fd = os.open(self.path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o644)
            except FileExistsError:
                pid = self.holder()
                if pid is not None and _alive(pid):
                    raise self._refused() from None
                self.path.unlink(missing_ok=True)  # stale: its process is gone
                continue
            os.write(fd, f"{os.getpid()}\n".encode())
            self.fd = fd
            return
        raise self._refused()

    def _refused(self) -> WatchLocked:
        pid = self.holder()
        who = f"process {pid}" if pid else "another process"
        return WatchLocked(f"{self.path}: {who} is already watching this pipeline; stop it first (one watcher per pipeline and workdir)")

    def release(self) -> None:
        if self.fd is None:
            return
        try:
            self.path.unlink(missing_ok=True)
        finally:
            os.close(self.fd)  # closing drops the flock
            self.fd = None


def _alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    except OSError:
        return False
    return True


def _objects(count: int) -> str:
    return f"{count} object" + ("" if count == 1 else "s")


def _stderr(line: str) -> None:
    import sys

    print(line, file=sys.stderr, flush=True)


class Watcher:
    """Polls the IR's on_new_data sources and starts runs. `now`, `run` and `log` are injectable
    (tests drive time with a fake clock); `run(ir, workdir)` returns the final run record."""

    def __init__(self, ir: IR, workdir: Path, *, now: Callable[[], float] = time.time,
                 run: Callable[[IR, Path], dict] | None = None, log: Callable[[str], None] = _stderr,
                 root: str | os.PathLike = "."):
        self.ir = ir
        self.workdir = Path(workdir)
        self.root = Path(root)
        self.triggers = triggers_of(ir, root)
        self.now = now
        self.run = run or self._default_run
        self.log = log
        folder = self.workdir / "watch"
        self.state_path = folder / f"{ir.name}.json"
        self.lock = Lock(folder / f"{ir.name}.lock")
        self._held_logged: float | None = None  # a held decision is logged once, not every poll
        self._idle_logged = False  # "no new data" likewise: once, then again after a change or a run

    def _default_run(self, ir: IR, workdir: Path) -> dict:
        from . import start

        return start(ir, workdir, root=self.root)

    # --- lock ------------------------------------------------------------------------------

    def __enter__(self) -> Watcher:
        self.lock.acquire()
        return self

    def __exit__(self, *exc) -> None:
        self.lock.release()

    # --- state -----------------------------------------------------------------------------

    def load_state(self) -> dict | None:
        try:
            data = json.loads(self.state_path.read_text(encoding="utf-8"))
        except FileNotFoundError:
            return None
        except (OSError, ValueError) as exc:
            raise WatchError(f"{self.state_path}: unreadable watch state ({exc}); move it away to start afresh (the current data then counts as new)") from None
        if not isinstance(data, dict) or data.get("version") != STATE_VERSION:
            raise WatchError(f"{self.state_path}: unknown watch state format; move it away to start afresh")
        return data

    def save_state(self, state: dict) -> None:
        atomic_write_bytes(self.state_path, (json.dumps(state, indent=2, sort_keys=True) + "\n").encode("utf-8"))

    def _fresh_state(self) -> dict:
        return {"version": STATE_VERSION, "pipeline": self.ir.name, "sources": {}, "pending": {}, "last_run": None}

    # --- one check ---------------------------------------------------------------------------

    def decide(self, state: dict, now: float) -> Decision:
        """min_interval's one rule (runtime/admission.py) on the pending triggers. A run the
        watcher was killed in did not consume its data: that data stays fresh."""
        last = state.get("last_run") or {}
        started = last.get("started_at")
        pending = dict(state.get("pending") or {})
        if last.get("status") == "running" and started is not None:
            pending = {source: max(at, started) for source, at in pending.items()}
        if not pending:
            return Decision("none")
        return decide(started, pending, {t.source: t.min_interval for t in self.triggers}, now)

    def check(self) -> dict:
        """Look once; run if new data is due. Returns what happened:
        {"checked_at", "new": {source: [keys]}, "action": "none" | "held" | "run", "held_until", "run"}."""
        state = self.load_state()
        first = state is None
        state = state or self._fresh_state()
        now = self.now()
        new: dict[str, list[str]] = {}
        listed = 0
        for trigger in self.triggers:
            current = snapshot(trigger)
            listed += len(current)
            old = state["sources"].get(trigger.source)
            keys = changed(old, current)
            state["sources"][trigger.source] = current
            if keys:
                new[trigger.source] = keys
                state["pending"].setdefault(trigger.source, now)
                if old is None:
                    verb = "counts" if len(keys) == 1 else "count"
                    self.log(f"watch {self.ir.name}: first check (no watch state yet): the {_objects(len(keys))} in "
                             f"{trigger.source} {verb} as new data")
                else:
                    self.log(f"watch {self.ir.name}: new data in {trigger.source}: {_objects(len(keys))} added or changed")
        state["checked_at"] = now
        self.save_state(state)  # seen data is remembered even if what follows fails
        outcome = {"pipeline": self.ir.name, "checked_at": _iso(now), "first_start": first, "new": new,
                   "pending": sorted(state["pending"]), "action": "none", "held_until": None, "run": None}
        if new:
            self._idle_logged = False
        decision = self.decide(state, now)
        if decision.action == "none":
            if not new and not self._idle_logged:  # once, not at every poll: again after something happens
                self._idle_logged = True
                sources = ", ".join(t.source for t in self.triggers)
                self.log(f"watch {self.ir.name}: no new data in {sources} (checked {_objects(listed)})")
            return outcome
        if decision.action == "covered":  # an earlier run read it: nothing left to do
            state["pending"] = {}
            self.save_state(state)
            self.log(f"watch {self.ir.name}: {decision.reason}")
            return outcome
        if decision.action == "hold":
            due = round(now + decision.wait_seconds, 3)
            outcome.update(action="held", held_until=_iso(due))
            if new or self._held_logged != due:
                self._held_logged = due
                self.log(f"watch {self.ir.name}: new data in {', '.join(sorted(state['pending']))} held back by min_interval until {_iso(due)}")
            return outcome
        return self._run(state, outcome)

    def _run(self, state: dict, outcome: dict) -> dict:
        started = self.now()
        sources = sorted(state["pending"])
        # Recorded before the run: if the watcher dies mid-run, the triggers are still pending
        # and min_interval counts from this start.
        state["last_run"] = {"started_at": started, "started": _iso(started), "run_id": None, "status": "running", "sources": sources}
        self.save_state(state)
        self.log(f"watch {self.ir.name}: run started (new data in {', '.join(sources)})")
        try:
            record = self.run(self.ir, self.workdir)
            status, run_id = record.get("status", "failed"), record.get("run_id")
        except KeyboardInterrupt:
            raise
        except Exception as exc:
            status, run_id = "failed", None
            self.log(f"watch {self.ir.name}: run could not start: {type(exc).__name__}: {exc}")
        # A run consumes every pending trigger, whatever its status: a failed run is not retried
        # on the same data (fix and `dagsmith run --resume`, or wait for new data).
        state["pending"] = {}
        self._idle_logged = False
        state["last_run"].update(run_id=run_id, status=status, ended=_iso(self.now()))
        self.save_state(state)
        self.log(f"watch {self.ir.name}: run {run_id or '-'} finished: {status}")
        outcome.update(action="run", run={"run_id": run_id, "status": status, "sources": sources})
        return outcome

    # --- the loop ----------------------------------------------------------------------------

    def loop(self, interval: float = DEFAULT_INTERVAL, *, on_check: Callable[[dict], None] | None = None,
             sleep: Callable[[float], None] = time.sleep, max_checks: int | None = None) -> None:
        """Check every `interval` seconds until Ctrl-C (KeyboardInterrupt is the caller's to catch).
        A source that cannot be listed is reported and retried at the next check."""
        checks = 0
        while True:
            try:
                outcome = self.check()
            except WatchError as exc:
                self.log(f"watch {self.ir.name}: {exc}")
                outcome = None
            if outcome is not None and on_check is not None:
                on_check(outcome)
            checks += 1
            if max_checks is not None and checks >= max_checks:
                return
            sleep(interval)
