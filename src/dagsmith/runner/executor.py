"""Execute an IR on this machine: topological order, parallel workers, fan-outs, retries,
timeouts, caching, gates, and a run record that survives a kill -9 (see record.py).

Speculation: a step of SPECULATIVE_KINDS whose only unfinished upstream steps are validations
whose outputs it does not read (a training waits for the checks of the table it reads, not for
their results) starts early, on workers no certain task can use: preloaded ones, and, when a core
is spare (`speculate_on_bridge`), the bridge, while the fork server imports Great Expectations.
Until they pass, nothing of it is published: the record keeps it pending (no attempts, no items
done), its fan-out stays incomplete, no cache entry is written, and the outcome of each of its
tasks is held (after a failure none more starts). When they pass, it is adopted: recorded as
running since its first task started, its finished items count, its held failures count then
(retried or failing the step as they would have), and the rest goes on as usual. When one of
them fails, or the step turns out cached, it is discarded: its running tasks killed, its outputs
and logs removed from the run's folder, and it is recorded as without speculation (skipped, or
cached).
"""

from __future__ import annotations

import heapq
import itertools
import json
import os
import re
import shutil
import time
from dataclasses import dataclass, field
from pathlib import Path

from ..errors import hide_connections
from ..ir import IR, Step
from ..runtime import guards
from ..runtime.context import RunValues, StepContext
from ..runtime.environment import run_environment
from ..runtime.store import LocalStore, Store
from . import cache
from .pool import Done, Task, WorkerPool, needs_bridges, preload_environ, preload_modules
from .record import FINISHED, TERMINAL, RunRecord

# Step kinds that may start before the validations they wait for have passed: built-in, pure (what
# they write is the run's own outputs, nothing else), and costly enough to be worth it. Never
# custom steps, deploy, or anything else with effects.
SPECULATIVE_KINDS = frozenset({"train"})
SPECULATE_ON_BRIDGE = "DAGSMITH_SPECULATE_ON_BRIDGE"  # "1" always, "0" never; unset: when a core is spare


def speculate_on_bridge() -> bool:
    """Whether a bridge may run speculative tasks now. It imports their libraries itself (the
    fork server imports them too): worth it on a core nothing else wants, a loss on a machine
    already busy (it slows the fork server's import the validations wait for). Yes when the
    fork server and the bridge each get a core that no other program's runnable thread wants:
    this run's own processes (the runner asking, the fork server, bridges, workers, whatever
    threads they have) are not counted against it, so the answer does not depend on what they
    happen to be doing at the instant of asking (Linux; elsewhere: the 1-minute load average
    leaves a core)."""
    forced = os.environ.get(SPECULATE_ON_BRIDGE)
    if forced in ("0", "1"):
        return forced == "1"
    cpus = os.cpu_count() or 1
    others = others_running()
    if others is not None:
        return others + 2 <= cpus
    try:
        return os.getloadavg()[0] <= cpus - 1
    except OSError:
        return False


def others_running(samples: int = 3) -> int | None:
    """How many threads of other programs are running or ready to run now, or None without
    /proc: the machine's count (/proc/loadavg) less this process tree's, the least of a few
    samples a millisecond apart (one sample can catch a daemon's brief wake-up)."""
    counts = []
    for sample in range(samples):
        if sample:
            time.sleep(0.001)
        total, own = running_now(), own_running()
        if total is None or own is None:
            return None
        counts.append(max(0, total - own))
    return min(counts)


def running_now() -> int | None:
    """How many threads are running or ready to run on this machine now (/proc/loadavg), or None."""
    try:
        with open("/proc/loadavg", encoding="ascii") as file:
            return int(file.read().split()[3].partition("/")[0])
    except (OSError, ValueError, IndexError):
        return None


def own_running() -> int | None:
    """How many threads of this process and its descendants are running or ready to run (state
    R in /proc/PID/task/TID/stat, found through each thread's `children`), or None without
    /proc. Processes that end while being read are skipped."""
    if not os.path.exists(f"/proc/{os.getpid()}/task/{os.getpid()}/children"):
        return None
    count, todo = 0, [os.getpid()]
    while todo:
        pid = todo.pop()
        try:
            threads = os.listdir(f"/proc/{pid}/task")
        except OSError:
            continue
        for tid in threads:
            try:
                with open(f"/proc/{pid}/task/{tid}/stat", encoding="ascii", errors="replace") as file:
                    stat = file.read()
                with open(f"/proc/{pid}/task/{tid}/children", encoding="ascii") as file:
                    todo.extend(int(child) for child in file.read().split())
            except (OSError, ValueError):
                continue
            state = stat[stat.rfind(")") + 2:stat.rfind(")") + 3]  # the name in () may hold anything
            count += state == "R"
    return count


@dataclass
class Speculation:
    """A step started before the validations it waits for (`guards`) passed."""
    guards: tuple[str, ...]
    started: str | None = None  # when its first task was dispatched (the record's "started" once adopted)
    tasks: set = field(default_factory=set)  # task ids dispatched
    queued: list = field(default_factory=list)  # tasks not dispatched yet
    result: dict | None = None  # a step without fan-out: its task's result, held
    failures: list = field(default_factory=list)  # Done of its failed tasks, held (no more of its tasks start)


@dataclass
class FanOutState:
    total: int
    queue: list[int]
    running: int = 0
    done: int = 0
    failed: int = 0
    limit: int | None = None


@dataclass
class Executor:
    ir: IR
    ir_path: Path
    store: Store
    record: RunRecord
    values: RunValues
    root: Path
    max_parallel: int
    use_cache: bool = True
    reporter: object = None
    fanouts: dict = field(default_factory=dict)
    attempts: dict = field(default_factory=dict)  # task id -> attempts so far (in this session)
    prior_attempts: dict = field(default_factory=dict)  # step id -> attempts of earlier sessions (--resume)
    ready: list = field(default_factory=list)  # heap of (not_before, sequence, task id, Task)
    cache_keys: dict = field(default_factory=dict)  # step id -> key to remember once it succeeds
    sequence: itertools.count = field(default_factory=itertools.count)
    gated: bool = False
    item_times: dict = field(default_factory=dict)  # fan-out task id -> [item, started, ended, ok] (timeline.json)
    guards: dict = field(default_factory=dict)  # step id -> validations it may start before (speculation_guards)
    speculating: dict = field(default_factory=dict)  # step id -> Speculation
    no_speculation: set = field(default_factory=set)  # steps that could not start speculatively: they start as usual
    pool: WorkerPool | None = None

    # --- setup --------------------------------------------------------------------------

    def context(self, step: Step, item: int | None = None) -> StepContext:
        return StepContext(ir=self.ir, step=step, store=self.store, values=self.values, root=self.root, item=item)

    def task_environ(self) -> dict:
        return {
            **run_environment(self.values.run_id, self.values.run_date, self.values.params, root=str(self.root)),
            # Parallel processes, each with one BLAS/OpenMP thread: no oversubscription.
            "OMP_NUM_THREADS": os.environ.get("OMP_NUM_THREADS", "1"),
        }

    # --- the loop -------------------------------------------------------------------------

    def run(self) -> dict:
        self.environ = self.task_environ()
        # The workers first: their fork server imports what the steps need, once for all of them
        # (with the thread count the tasks get: BLAS reads it when it loads), so no step's time
        # includes those imports; meanwhile a bridge worker runs the steps that need none of it.
        pool = self.pool = WorkerPool(self.max_parallel, str(self.ir_path), self.store.uri, preload=preload_modules(self.ir),
                                      bridges=needs_bridges(self.ir), environ=preload_environ())
        self.guards = self.speculation_guards()
        try:
            self.recover_finished()
            while True:
                self.start_ready_steps()
                self.speculate()
                self.record.flush()
                self.dispatch(pool)
                if not pool.busy and not self.ready and not self.speculative_queue():
                    if not self.startable():
                        break
                    continue
                wait, now = 0.2, time.monotonic()
                if self.ready and not pool.busy and self.ready[0][0] > now:
                    # Only a retry to wait for. (A task that is due but was not dispatched waits for
                    # a worker that can run it: the pool's poll returns as soon as there is one.)
                    wait = min(wait, self.ready[0][0] - now)
                for done in pool.poll(wait):
                    self.finish(done)
                # No flush here: the next turn's, after start_ready_steps, writes these outcomes
                # and the steps they start in one write, before anything is dispatched.
                self.report()
        finally:
            for step_id in list(self.speculating):  # interrupted: nothing speculative is left behind
                self.discard(step_id)
            pool.close()
        return self.close()

    def startable(self) -> list[Step]:
        out = []
        for step in self.ir.steps:
            if self.record.state(step.id) != "pending":
                continue
            if all(self.record.state(up) in FINISHED for up in step.depends_on):
                out.append(step)
        return out

    def start_ready_steps(self) -> None:
        for step in self.startable():
            if step.id in self.speculating:
                self.adopt(step)
                continue
            if self.try_cache(step):
                continue
            self.record.update(step.id, state="running")
            self.event(step.id, "started")
            if step.fanout is None:
                self.enqueue(Task(step.id, step.id, None, step.timeout))
                continue
            from ..runtime.fanout import item_count

            total = item_count(self.context(step))
            todo = [i for i in range(total) if self.store.manifest(self.store.step_key(self.values.run_id, step.id, i)) is None]
            state = FanOutState(total=total, queue=todo, done=total - len(todo), limit=step.fanout.max_parallel)
            self.fanouts[step.id] = state
            self.record.update(step.id, items={"total": total, "done": state.done, "failed": 0})
            if not todo:
                self.complete_fanout(step)
            for item in todo:
                self.enqueue(Task(f"{step.id}#{item}", step.id, item, step.timeout))

    # --- speculation ------------------------------------------------------------------------

    def speculation_guards(self) -> dict[str, tuple[str, ...]]:
        """Step id -> the validations it waits for but does not read (it may start before they
        pass), for the steps of SPECULATIVE_KINDS that have any. Only with a local store: what a
        discarded speculation wrote must be removable."""
        if not isinstance(self.store, LocalStore):
            return {}
        out = {}
        for step in self.ir.steps:
            if step.kind not in SPECULATIVE_KINDS:
                continue
            guards = tuple(up for up in step.depends_on
                           if (other := self.ir.step(up)).kind == "validate" and not set(other.outputs) & set(step.inputs))
            if guards:
                out[step.id] = guards
        return out

    def speculate(self) -> None:
        """Start the steps that may run before their guards pass: every other upstream step
        finished, and the guards still pending or running (one that failed skipped the step)."""
        for step_id, guards in self.guards.items():
            if step_id in self.speculating or step_id in self.no_speculation or self.record.state(step_id) != "pending":
                continue
            step = self.ir.step(step_id)
            if all(self.record.state(up) in FINISHED or (up in guards and self.record.state(up) in ("pending", "running"))
                   for up in step.depends_on):
                self.start_speculation(step, guards)

    def start_speculation(self, step: Step, guards: tuple[str, ...]) -> None:
        spec = Speculation(guards=tuple(g for g in guards if self.record.state(g) not in FINISHED))
        on_bridge = self.pool is not None and self.pool.warming and speculate_on_bridge()  # asked once: now
        if step.fanout is None:
            spec.queued.append(Task(step.id, step.id, None, step.timeout, speculative=True, on_bridge=on_bridge))
        else:
            from ..runtime.fanout import item_count

            try:
                total = item_count(self.context(step))
            except Exception:  # noqa: BLE001 - not now, then: the step starts as usual, and reports it
                self.no_speculation.add(step.id)
                return
            todo = [i for i in range(total) if self.store.manifest(self.store.step_key(self.values.run_id, step.id, i)) is None]
            self.fanouts[step.id] = FanOutState(total=total, queue=todo, done=total - len(todo), limit=step.fanout.max_parallel)
            spec.queued += [Task(f"{step.id}#{item}", step.id, item, step.timeout, speculative=True, on_bridge=on_bridge)
                            for item in todo]
        self.speculating[step.id] = spec
        self.event(step.id, f"started speculatively (it counts once {', '.join(spec.guards)} pass)")

    def speculative_queue(self) -> bool:
        return any(spec.queued and not spec.failures for spec in self.speculating.values())

    def adopt(self, step: Step) -> None:
        """Its guards passed: the speculation becomes the step's run (or, cached, is discarded)."""
        spec = self.speculating[step.id]
        if self.use_cache:
            key = cache.cache_key(self.context(step), self.ir)
            entry = cache.lookup(self.store, key) if key is not None else None
            if entry is not None and entry["run_id"] != self.values.run_id:
                self.discard(step.id)
                self.try_cache(step)
                return
            if key is not None:
                self.cache_keys[step.id] = key
        del self.speculating[step.id]
        attempts = self.prior_attempts.get(step.id, 0) + max((self.attempts.get(task_id, 0) for task_id in spec.tasks), default=0)
        self.record.update(step.id, state="running", attempts=attempts, **({"started": spec.started} if spec.started else {}))
        fan = self.fanouts.get(step.id)
        self.event(step.id, "started" + (f" ({fan.done}/{fan.total} items done speculatively)" if fan and fan.done else ""))
        for task in spec.queued:
            task.speculative = task.on_bridge = False
            self.enqueue(task)
        if fan is not None:
            self.record.update(step.id, items={"total": fan.total, "done": fan.done, "failed": 0})
            if fan.done == fan.total:
                self.complete_fanout(step)
        elif spec.result is not None:
            self.step_succeeded(step, spec.result)
        for done in spec.failures:
            self.outcome(done)

    def discard(self, step_id: str) -> None:
        """Undo a speculation (or what one left in the run's folder, e.g. on --resume after a
        kill): its tasks killed, its outputs and logs removed, nothing counted."""
        spec = self.speculating.pop(step_id, None)
        if spec is not None:
            if self.pool is not None:
                self.pool.cancel(lambda task: task.step_id == step_id)
            self.fanouts.pop(step_id, None)
            for task_id in spec.tasks:
                self.attempts.pop(task_id, None)
                self.item_times.pop(task_id, None)
        run_id = self.values.run_id
        shutil.rmtree(self.store.fetch(self.store.step_key(run_id, step_id)), ignore_errors=True)
        shutil.rmtree(Path(self.store.fetch(self.store.step_key(run_id, step_id, 0))).parent, ignore_errors=True)  # its items
        logs = self.record.path.parent / "logs"
        pattern = re.compile(re.escape(step_id) + r"(\.\d+)?\.log")  # log_path's names for the step and its items
        if logs.is_dir():
            for path in logs.iterdir():
                if pattern.fullmatch(path.name):
                    path.unlink(missing_ok=True)

    def enqueue(self, task: Task, not_before: float = 0.0) -> None:
        heapq.heappush(self.ready, (not_before, next(self.sequence), task.task_id, task))

    def dispatch(self, pool: WorkerPool) -> None:
        deferred = []
        now = time.monotonic()
        while pool.free and self.ready and self.ready[0][0] <= now:
            entry = heapq.heappop(self.ready)
            if not self.submit(pool, entry[3]):
                deferred.append(entry)
        for entry in deferred:
            heapq.heappush(self.ready, entry)
        # Speculative tasks last: on a worker no certain task could take now.
        for spec in self.speculating.values():
            for task in list(spec.queued) if not spec.failures else ():
                if not pool.free:
                    return
                if self.submit(pool, task):
                    spec.queued.remove(task)

    def submit(self, pool: WorkerPool, task: Task) -> bool:
        """Start `task` on a worker; False when it must wait (its fan-out's limit, or only a
        bridge is idle and the task needs the preload)."""
        fan = self.fanouts.get(task.step_id) if task.item is not None else None
        if fan is not None and fan.limit is not None and fan.running >= fan.limit:
            return False
        task.kind = self.ir.step(task.step_id).kind
        if not pool.can_take(task):  # only a bridge is idle, and this step needs the preload
            return False
        if fan is not None:
            fan.running += 1
        task.environ = self.environ
        task.log_path = self.log_path(task.task_id)
        self.attempts[task.task_id] = self.attempts.get(task.task_id, 0) + 1
        spec = self.speculating.get(task.step_id) if task.speculative else None
        if spec is not None:  # nothing in the record until it is adopted
            from .record import now as timestamp

            spec.tasks.add(task.task_id)
            spec.started = spec.started or timestamp()
        else:
            # Attempts over the run's life (earlier sessions of a resumed run included); a fan-out
            # counts its most-tried item. A step of one task: each attempt restarts its clock, so
            # its time is the final attempt's, not the span since the first one.
            attempts = self.prior_attempts.get(task.step_id, 0) + self.attempts[task.task_id]
            if task.item is None:
                from .record import now as timestamp

                self.record.update(task.step_id, attempts=attempts, started=timestamp())
            elif attempts > self.record.steps[task.step_id]["attempts"]:
                self.record.update(task.step_id, attempts=attempts)
        pool.submit(task)
        if task.item is not None:
            from .record import now as timestamp

            self.item_times[task.task_id] = [task.item, timestamp(), None, None]
        return True

    def log_path(self, task_id: str) -> str:
        return str(self.record.path.parent / "logs" / f"{task_id.replace('#', '.')}.log")

    # --- completions ----------------------------------------------------------------------

    def finish(self, done: Done) -> None:
        if done.error:  # a library's text may quote a connection: no part of one is shown or recorded
            done.error = hide_connections(done.error)
        step_id, _, item_text = done.task_id.partition("#")
        step = self.ir.step(step_id)
        item = int(item_text) if item_text else None
        fan = self.fanouts.get(step_id) if item is not None else None
        if fan is not None:
            fan.running -= 1
        if done.task_id in self.item_times:
            from .record import now as timestamp

            self.item_times[done.task_id][2:] = [timestamp(), done.ok]
        spec = self.speculating.get(step_id)
        if spec is None:
            self.outcome(done)
        elif not done.ok:  # held: replayed when adopted, as if it came then (retries and all)
            spec.failures.append(done)
            self.event(step_id, f"{f'item {item}' if item is not None else 'step'} failed while speculative "
                                f"(it counts once {', '.join(spec.guards)} pass): {_first_line(done.error)}")
        elif fan is not None:
            fan.done += 1  # published when adopted
        else:
            spec.result = done.result or {}

    def outcome(self, done: Done) -> None:
        """What a finished task means for its step: done, retried, or failed."""
        step_id, _, item_text = done.task_id.partition("#")
        step = self.ir.step(step_id)
        item = int(item_text) if item_text else None
        fan = self.fanouts.get(step_id) if item is not None else None
        if self.record.state(step_id) in TERMINAL:
            return  # another item already failed the step
        if done.ok:
            if fan is None:
                self.step_succeeded(step, done.result or {})
            else:
                fan.done += 1
                self.record.update(step_id, items={"total": fan.total, "done": fan.done, "failed": fan.failed})
                if fan.done == fan.total:
                    self.complete_fanout(step)
            return
        attempts = self.attempts.get(done.task_id, 1)
        if attempts <= step.retries:
            label = f"item {item}" if item is not None else "step"
            self.event(step_id, f"{label} failed (attempt {attempts}/{step.retries + 1}), retrying in {step.retry_delay}s: {_first_line(done.error)}")
            self.enqueue(Task(done.task_id, step_id, item, step.timeout), time.monotonic() + step.retry_delay)
            return
        if fan is not None:
            fan.failed += 1
            self.record.update(step_id, items={"total": fan.total, "done": fan.done, "failed": fan.failed})
            self.ready = [e for e in self.ready if e[3].step_id != step_id]
            heapq.heapify(self.ready)
        error = done.error if item is None else f"item {item}: {done.error}"
        self.step_failed(step, error)

    def complete_fanout(self, step: Step) -> None:
        """All items done: publish the step's own manifest, listing its items' fingerprints."""
        fingerprints = {}
        for index in range(self.fanouts[step.id].total):
            manifest = self.store.manifest(self.store.step_key(self.values.run_id, step.id, index))
            fingerprints[str(index)] = manifest.get("fingerprint") if manifest else None
        staging = self.store.stage(self.store.step_key(self.values.run_id, step.id))
        staging.write_json("items.json", fingerprints)
        self.store.commit(staging, {"items": len(fingerprints)})
        self.step_succeeded(step, {"items": len(fingerprints)})

    def step_succeeded(self, step: Step, result: dict) -> None:
        self.collect(step, result)
        self.record.update(step.id, state="succeeded", error=None)
        key = self.cache_keys.pop(step.id, None)
        if key:
            fan = self.fanouts.get(step.id)
            cache.remember(self.store, key, self.values.run_id, step.id, fan.total if fan else None)
        self.event(step.id, "succeeded" + _brief(result))
        if step.kind == "gate" and not result.get("passed", True):
            self.gated = True
            self.skip_downstream(step.id, "gated: a gate did not pass")

    def step_failed(self, step: Step, error: str | None) -> None:
        self.record.update(step.id, state="failed", error=error)
        stored = self.store.read_json(f"{self.store.step_key(self.values.run_id, step.id)}/result.json")
        if stored:
            self.collect(step, stored)
        self.event(step.id, f"failed: {_first_line(error)}")
        self.skip_downstream(step.id, f"upstream step {step.id!r} failed")

    def skip_downstream(self, step_id: str, reason: str) -> None:
        for other in sorted(self.ir.downstream(step_id)):
            if self.record.state(other) not in TERMINAL:
                if other in self.guards:  # it may have run speculatively (in this process or before a --resume)
                    self.discard(other)
                self.record.update(other, state="skipped", error=reason)
                self.event(other, f"skipped ({reason})")

    def collect(self, step: Step, result: dict) -> None:
        data = self.record.data
        if "validation" in result:
            data["validation"][step.id] = result["validation"]
        if step.kind == "evaluate" and "metrics" in result:
            data["metrics"] = result["metrics"]
        if step.kind == "gate" and "gates" in result:
            data["gates"] = result["gates"]
        if step.kind == "deploy" and "deployed" in result:
            data["deployment"] = {k: v for k, v in result.items() if k != "seconds"}
        if step.kind == "train":
            self.collect_guard_rails(step, result)

    def collect_guard_rails(self, step: Step, result: dict) -> None:
        """The train step's warnings and model input counts (runtime/guards.py) into the record:
        from its result, or from its items' results (each item's result.json) for a fan-out."""
        results = [result]
        if step.fanout is not None and isinstance(result.get("items"), int):
            results = [self.store.read_json(f"{self.store.step_key(self.values.run_id, step.id, index)}/result.json") or {}
                       for index in range(result["items"])]
        warnings, counts = guards.summarize(results)
        self.record.data["warnings"] = [{"step": step.id, "message": line} for line in warnings]
        self.record.data["model_inputs"] = counts

    # --- caching and resume -------------------------------------------------------------

    def try_cache(self, step: Step) -> bool:
        if not self.use_cache:
            return False
        key = cache.cache_key(self.context(step), self.ir)
        if key is None:
            return False
        entry = cache.lookup(self.store, key)
        if entry is None or entry["run_id"] == self.values.run_id:
            self.cache_keys[step.id] = key
            return False
        cache.reuse(self.store, entry, self.values.run_id, step.id)
        result = self.store.read_json(f"{self.store.step_key(self.values.run_id, step.id)}/result.json") or {}
        self.collect(step, result)
        self.record.update(step.id, state="cached", error=None)
        self.event(step.id, f"cached (from run {entry['run_id']})")
        return True

    def recover_finished(self) -> None:
        """On resume: steps whose outputs were committed but not yet recorded are done; anything
        not finished runs again."""
        for step in self.ir.steps:
            state = self.record.state(step.id)
            if state in FINISHED:
                continue
            key = self.store.step_key(self.values.run_id, step.id)
            manifest = self.store.manifest(key)
            if manifest is not None:
                result = self.store.read_json(f"{key}/result.json") or {}
                self.record.update(step.id, state="succeeded", error=None)
                self.collect(step, result)
                if step.kind == "gate" and not result.get("passed", True):
                    self.gated = True
            else:
                # It runs again: its attempts so far are kept (counted on), its clock starts anew.
                self.prior_attempts[step.id] = self.record.steps[step.id].get("attempts") or 0
                self.record.update(step.id, state="pending", error=None, started=None, ended=None)
        for step in self.ir.steps:
            if step.kind == "gate" and self.record.state(step.id) in FINISHED:
                result = self.store.read_json(f"{self.store.step_key(self.values.run_id, step.id)}/result.json") or {}
                if not result.get("passed", True):
                    self.gated = True
                    self.skip_downstream(step.id, "gated: a gate did not pass")
        self.record.data["status"] = "running"
        self.record.flush()

    # --- end ------------------------------------------------------------------------------

    def close(self) -> dict:
        states = [entry["state"] for entry in self.record.steps.values()]
        if "failed" in states:
            status = "failed"
        elif self.gated:
            status = "gated"
        else:
            status = "succeeded"
        self.record.data["status"] = status
        from .record import now

        self.record.data["ended"] = now()
        self.save_timeline()
        self.record.save()
        return self.record.data

    def save_timeline(self) -> None:
        """<run folder>/timeline.json: when each fan-out item ran (its last attempt), for the
        report's timeline: {"items": {step id: [[item, started, ended, ok], ...]}}. Written once
        at the end (a resumed run keeps the items of its earlier attempts)."""
        if not self.item_times:
            return
        path = self.record.path.parent / "timeline.json"
        try:
            items = json.loads(path.read_text(encoding="utf-8")).get("items", {})
        except (OSError, ValueError):
            items = {}
        merged = {step_id: {row[0]: row for row in rows} for step_id, rows in items.items()}
        for task_id, entry in self.item_times.items():
            merged.setdefault(task_id.partition("#")[0], {})[entry[0]] = entry
        items = {step_id: [rows[item] for item in sorted(rows)] for step_id, rows in merged.items()}
        from ..runtime.store import atomic_write_bytes

        atomic_write_bytes(path, json.dumps({"items": items}, separators=(",", ":")).encode("utf-8"))

    def event(self, step_id: str, text: str) -> None:
        if self.reporter is not None:
            self.reporter.event(step_id, text)

    def report(self) -> None:
        if self.reporter is not None:
            self.reporter.refresh(self.record.data)


def _first_line(text: str | None) -> str:
    return (text or "").strip().splitlines()[0] if text and text.strip() else ""


def _brief(result: dict) -> str:
    if isinstance(result.get("rows"), int):
        return f" ({result['rows']} rows)"
    if "items" in result:
        return f" ({result['items']} items)"
    if "passed" in result:
        return " (gates passed)" if result["passed"] else " (gates failed)"
    return ""
