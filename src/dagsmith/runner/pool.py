"""A pool of long-lived worker processes that run steps through the step runtime.

Workers import the runtime once and run many steps, so a no-op step costs a message round
trip, not a Python start-up. A task past its timeout is killed with its worker (the only way to
stop arbitrary user code), and a fresh worker takes its place. Workers start from a
forkserver: never forked from the runner while its progress thread runs.
"""

from __future__ import annotations

import multiprocessing
import os
import time
import traceback
from dataclasses import dataclass, field
from multiprocessing.connection import Connection, wait


@dataclass
class Task:
    task_id: str  # "<step>" or "<step>#<item>"
    step_id: str
    item: int | None
    timeout: int | None
    environ: dict = field(default_factory=dict)
    log_path: str | None = None  # the task's stdout and stderr (its own and its children's)


@dataclass
class Done:
    task_id: str
    ok: bool
    result: dict | None
    error: str | None
    seconds: float


def _worker(conn: Connection, ir_path: str, store_uri: str) -> None:
    """Worker loop: receive a Task, run it, send a Done. Exits when the runner goes away."""
    from ..errors import DagsmithError
    from ..runtime import load_ir, make_context, run_step
    from ..runtime.store import Store

    ir = load_ir(ir_path)
    store = Store.open(store_uri)
    base_env = dict(os.environ)
    while True:
        try:
            task: Task = conn.recv()
        except (EOFError, OSError):
            return
        started = time.perf_counter()
        os.environ.clear()
        os.environ.update(base_env)
        os.environ.update(task.environ)
        saved = _redirect_output(task.log_path)
        try:
            ctx = make_context(ir, task.step_id, store, task.item, os.environ)
            result = run_step(ctx)
            done = Done(task.task_id, True, result, None, time.perf_counter() - started)
        except DagsmithError as exc:
            done = Done(task.task_id, False, None, str(exc), time.perf_counter() - started)
        except BaseException as exc:  # user code or data: the step failed, the worker lives on
            detail = "".join(traceback.format_exception(exc)[-6:]).rstrip()
            done = Done(task.task_id, False, None, f"{type(exc).__name__}: {exc}\n{detail}", time.perf_counter() - started)
        finally:
            _restore_output(saved)
        try:
            conn.send(done)
        except (BrokenPipeError, OSError):
            return


def _redirect_output(log_path: str | None):
    """Point file descriptors 1 and 2 at the task's log: what user code and its subprocesses
    print must not reach the runner's stdout (which `--format json` keeps for the record)."""
    if log_path is None:
        return None
    import sys

    sys.stdout.flush()
    sys.stderr.flush()
    os.makedirs(os.path.dirname(log_path), exist_ok=True)
    fd = os.open(log_path, os.O_WRONLY | os.O_CREAT | os.O_APPEND, 0o644)
    saved = (os.dup(1), os.dup(2))
    os.dup2(fd, 1)
    os.dup2(fd, 2)
    os.close(fd)
    return saved


def _restore_output(saved) -> None:
    if saved is None:
        return
    import sys

    sys.stdout.flush()
    sys.stderr.flush()
    os.dup2(saved[0], 1)
    os.dup2(saved[1], 2)
    os.close(saved[0])
    os.close(saved[1])


class WorkerPool:
    def __init__(self, size: int, ir_path: str, store_uri: str):
        self.context = multiprocessing.get_context("forkserver")
        self.context.set_forkserver_preload(["dagsmith.runtime", "dagsmith.runtime.store"])
        self.ir_path = ir_path
        self.store_uri = store_uri
        self.size = size
        self.idle: list = []
        self.busy: dict = {}  # connection -> (process, task, started)
        for _ in range(size):
            self.idle.append(self._spawn())

    def _spawn(self):
        parent, child = self.context.Pipe()
        process = self.context.Process(target=_worker, args=(child, self.ir_path, self.store_uri), daemon=True)
        process.start()
        child.close()
        return parent, process

    @property
    def free(self) -> int:
        return len(self.idle)

    def submit(self, task: Task) -> None:
        conn, process = self.idle.pop()
        conn.send(task)
        self.busy[conn] = (process, task, time.monotonic())

    def poll(self, timeout: float) -> list[Done]:
        """Finished tasks, waiting at most `timeout` seconds; kills tasks past their timeout."""
        out: list[Done] = []
        if self.busy:
            for conn in wait(list(self.busy), timeout=timeout):
                process, task, started = self.busy.pop(conn)
                try:
                    out.append(conn.recv())
                    self.idle.append((conn, process))
                except (EOFError, OSError):  # the worker died (killed, segfault, os._exit)
                    code = process.exitcode if process.join(1) is None else process.exitcode
                    out.append(Done(task.task_id, False, None, f"worker process died (exit code {code})", time.monotonic() - started))
                    conn.close()
                    self.idle.append(self._spawn())
        elif timeout:
            time.sleep(timeout)
        now = time.monotonic()
        for conn, (process, task, started) in list(self.busy.items()):
            if task.timeout is not None and now - started > task.timeout:
                del self.busy[conn]
                process.kill()
                process.join(5)
                conn.close()
                out.append(Done(task.task_id, False, None, f"timed out after {task.timeout}s: killed", now - started))
                self.idle.append(self._spawn())
        return out

    def running(self) -> list[Task]:
        return [task for _, task, _ in self.busy.values()]

    def close(self) -> None:
        for conn, process in self.idle:
            conn.close()
            process.join(2)
        for conn, (process, _, _) in self.busy.items():
            process.kill()
            conn.close()
        for conn, process in self.idle:
            if process.is_alive():
                process.kill()
        self.idle.clear()
        self.busy.clear()
