"""A pool of long-lived worker processes that run steps through the step runtime.

Workers import the runtime once and run many steps, so a no-op step costs a message round
trip, not a Python start-up. A task past its timeout is killed with its worker (the only way to
stop arbitrary user code), and a fresh worker takes its place. Workers start from a
forkserver: never forked from the runner while its progress thread runs.

The libraries the IR's steps import (Great Expectations for validation, scikit-learn for
training, DuckDB and pyarrow for sources and features: `preload_modules`) are imported once per
run, in the fork server, before it forks the first worker: every worker, and every replacement
of a killed one, starts with them loaded, and no step pays for them. The runner asks for them
through an environment variable the fork server reads when it imports this module (its preload
list names it); only the fork server that runner started acts on it. `dagsmith run` starts the
fork server before it compiles the spec (`start_fork_server_early`), asking it to import what
the spec's sections suggest (`guess_preload`) meanwhile; then it imports what the pool's request
(written to a file once the IR is known) adds, usually nothing, and says it is ready.

That import takes seconds on one core. Meanwhile, when the IR has steps that need it and the
machine has another core, a "bridge" worker (a fresh interpreter, not a fork) runs the steps
that need none of it: sources, features, custom steps, and the tasks marked `on_bridge`
(executor.py: a speculative training, which may start before the validations it waits for; the
bridge imports its libraries itself rather than wait for Great Expectations). The fork server
says when it is ready (a
datagram on a socket of the pool's); then the preloaded workers start, and the bridge is retired
as soon as it is idle.
"""

from __future__ import annotations

import atexit
import contextlib
import importlib
import json
import multiprocessing
import multiprocessing.forkserver
import os
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import threading
import time
import traceback
import warnings
from dataclasses import dataclass, field
from multiprocessing.connection import Connection, wait

# --- what the workers load before their first task ------------------------------------------

# Reading a step's table (pyarrow.parquet.read_table, then to_pandas) imports these on first use.
_TABLES = ("pyarrow.parquet", "pyarrow.dataset", "pandas", "pyarrow.pandas_compat")
_TRAINING = ("dagsmith.runtime.train", "dagsmith.runtime.evaluate", *_TABLES, "sklearn", "sklearn.model_selection",
             "sklearn.metrics", "joblib")

# The modules a step of each kind imports when it runs: its runtime module and the libraries that
# one imports. Libraries and dagsmith's own modules only, never user code. (Only imports: a
# library that has run in the fork server may have made locks or threads its children share.)
KIND_MODULES: dict[str, tuple[str, ...]] = {
    "source": ("dagsmith.runtime.sources", "pyarrow.parquet", "duckdb"),
    "feature": ("dagsmith.runtime.features", "pyarrow.parquet", "duckdb"),
    "validate": ("dagsmith.runtime.validate", *_TABLES, "great_expectations"),
    "plan": _TRAINING,
    "train": _TRAINING,
    "select": _TRAINING,
    "evaluate": _TRAINING,
    "gate": _TRAINING,
    "deploy": ("dagsmith.runtime.deploy", "joblib", "networkx"),
    "custom": ("dagsmith.runtime.custom",),
    "predict": ("dagsmith.runtime.predict", "dagsmith.runtime.scoring", *_TABLES, "joblib", "sklearn"),
}

# What a bridge worker runs while the fork server imports: the steps that need none of the slow
# libraries (a custom step imports what its own code imports, wherever it runs); and the tasks
# marked `on_bridge` (see `bridge_can_run`).
BRIDGE_KINDS = frozenset({"source", "feature", "custom"})

# A train step's estimator is preloaded too when it comes from one of these libraries.
LIBRARY_ESTIMATORS = ("sklearn.",)

PRELOAD_VARIABLE = "DAGSMITH_FORKSERVER_PRELOAD"  # set only while the runner starts its fork server
WARM_UP_PATIENCE = 300.0  # seconds without the fork server's "ready": start its workers anyway

_fork_server_started = False  # by a pool of this process: later pools use it as it is
_early_request: str | None = None  # where a fork server started early waits for its request
REQUEST_POLL = 0.002  # seconds between a waiting fork server's looks for its request
PARENT_POLL = 0.02  # seconds between its looks for its runner while it imports a guess


def preload_modules(ir) -> list[str]:
    """The modules the IR's steps import, in the order they are needed."""
    modules = ["dagsmith.runtime", "dagsmith.runtime.store"]
    for step in ir.steps:
        modules += KIND_MODULES.get(step.kind, ())
        estimator = ((step.config or {}).get("model") or {}).get("estimator") if step.kind == "train" else None
        if isinstance(estimator, str) and estimator.startswith(LIBRARY_ESTIMATORS):
            module, sep, _ = estimator.partition(":")
            modules.append(module if sep else estimator.rpartition(".")[0])
    return list(dict.fromkeys(modules))


# A spec's top-level sections -> the kinds of the steps they make (for `guess_preload`).
SECTION_KINDS = {"sources": ("source",), "features": ("feature",), "validation": ("validate",),
                 "training": ("train",), "evaluation": ("evaluate", "gate"), "deployment": ("deploy",),
                 "steps": ("custom",), "predict": ("predict",)}


def guess_preload(spec_text: str) -> list[str]:
    """What `preload_modules` will likely say of the IR of this spec, from its top-level section
    names alone (no YAML parse, no compile): the fork server starts on it while the spec compiles.
    A guess: what it misses is imported once the IR is known, and what it names in vain costs
    only time on a core."""
    sections = {line.split(":", 1)[0] for line in spec_text.splitlines() if line[:1].isalpha() and ":" in line}
    modules = ["dagsmith.runtime", "dagsmith.runtime.store"]
    for section, kinds in SECTION_KINDS.items():
        if section in sections:
            modules += [m for kind in kinds for m in KIND_MODULES[kind]]
    return list(dict.fromkeys(modules))


def preload_environ() -> dict:
    """The environment the fork server imports with: the thread count the tasks get (BLAS reads
    it when it loads), and Great Expectations' analytics off unless asked for."""
    return {"OMP_NUM_THREADS": os.environ.get("OMP_NUM_THREADS", "1"),
            "GX_ANALYTICS_ENABLED": os.environ.get("GX_ANALYTICS_ENABLED", "false")}


def needs_bridges(ir) -> bool:
    """Whether the IR has steps a bridge does not run: then the preload is worth waiting for
    on the side (an IR of sources, features and custom steps preloads little)."""
    return any(step.kind not in BRIDGE_KINDS for step in ir.steps)


def preload(modules, environ: dict | None = None, keep_going=None) -> list[str]:
    """Import `modules` now, quietly, with `environ` set meanwhile; returns the modules that
    failed. A failure is not an error here: the step that needs the module imports it, and
    reports it. Quietly: warnings are ignored, and file descriptors 1 and 2 point at /dev/null
    meanwhile (sys.stdout and sys.stderr stay the same objects: a library may keep them).
    `keep_going()`, asked before each module, stops it early when false."""
    failed = []
    saved_environ = {name: os.environ.get(name) for name in environ or {}}
    os.environ.update(environ or {})
    saved_fds = _redirect_output(os.devnull)
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            for name in modules:
                if keep_going is not None and not keep_going():
                    break
                try:
                    importlib.import_module(name)
                except (Exception, SystemExit):  # noqa: BLE001 - see above
                    failed.append(name)
    finally:
        _restore_output(saved_fds)
        for name, value in saved_environ.items():
            if value is None:
                os.environ.pop(name, None)
            else:
                os.environ[name] = value
    return failed


def _alive(pid) -> bool:
    """Whether process `pid` (an int) exists."""
    if not isinstance(pid, int) or isinstance(pid, bool) or pid <= 0:
        return False
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except OSError:  # e.g. not ours to signal: it exists
        return True
    return True


def _preload_in_fork_server() -> None:
    """Run when the fork server imports this module: the imports the runner asked for, then a
    datagram to the runner's socket, if it gave one, saying the workers can start."""
    text = os.environ.pop(PRELOAD_VARIABLE, None)
    if not text:
        return
    try:
        request = json.loads(text)
    except ValueError:
        return
    if not isinstance(request, dict):
        return
    if request.get("parent") != os.getppid():
        # Not the fork server that runner started, or its runner ended before the fork server
        # got here (a spec error on a busy machine): then nobody removes the folder it was to
        # wait in but this.
        if isinstance(request.get("await"), str) and not _alive(request.get("parent")):
            shutil.rmtree(os.path.dirname(request["await"]), ignore_errors=True)
        return
    parent = request["parent"]
    # ^C is the runner's to handle (the fork server's own loop ignores it too); if the runner
    # dies meanwhile, the imports stop, and the fork server sees it gone and exits.
    previous = signal.signal(signal.SIGINT, signal.SIG_IGN)
    try:
        if request.get("await"):  # started early: its guess now, what else the IR needs once the runner knows
            with _exit_with(parent, os.path.dirname(request["await"])):
                preload(request.get("modules") or [], request.get("environ") or {}, keep_going=lambda: os.getppid() == parent)
                request = _await_request(request["await"], parent) or {}
        preload(request.get("modules") or [], request.get("environ") or {}, keep_going=lambda: os.getppid() == parent)
    finally:
        signal.signal(signal.SIGINT, previous)  # what the fork server gives its children back
        atexit.register(_exit_now, os.getpid())  # registered last, so it runs first
        if isinstance(request, dict) and request.get("ready"):
            try:
                with socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM) as ready:
                    ready.sendto(b"ready", request["ready"])
            except OSError:
                pass  # the runner is gone, or no longer waits


@contextlib.contextmanager
def _exit_with(parent: int, folder: str):
    """Meanwhile, a thread ends this process (removing `folder`) as soon as `parent` is gone: a
    runner that stops before it makes a pool (a spec error) must not leave its fork server
    importing a guess for seconds, holding the runner's stdout and stderr open. The thread is
    gone when this returns: the fork server forks only later."""
    stop = threading.Event()

    def watch():
        while not stop.wait(PARENT_POLL):
            if os.getppid() != parent:
                shutil.rmtree(folder, ignore_errors=True)
                os._exit(0)

    thread = threading.Thread(target=watch, name="dagsmith-parent-watch", daemon=True)
    thread.start()
    try:
        yield
    finally:
        stop.set()
        thread.join()


def _await_request(path: str, parent: int) -> dict | None:
    """A fork server started early: the request its runner writes at `path` (then removed,
    with its folder), or None when the runner is gone first (or wrote no request)."""
    try:
        while True:
            try:
                with open(path, encoding="utf-8") as file:
                    request = json.load(file)
                return request if isinstance(request, dict) else None
            except FileNotFoundError:
                pass
            except (OSError, ValueError):
                return None
            if os.getppid() != parent:
                return None
            time.sleep(REQUEST_POLL)
    finally:
        shutil.rmtree(os.path.dirname(path), ignore_errors=True)


def _exit_now(fork_server: int) -> None:
    """The fork server's exit (when the runner is gone): at once. Tearing down the preloaded
    libraries module by module takes most of a second, and meanwhile the fork server holds the
    runner's stdout and stderr open, so whoever reads them (a pipe, a test) waits. It has no
    state worth saving, and its children (the workers) end with os._exit anyway. A process
    forked later from a worker inherits this handler: there it does nothing."""
    if os.getpid() != fork_server:
        return
    for stream in (sys.stdout, sys.stderr):
        try:
            stream.flush()
        except (OSError, ValueError):
            pass
    os._exit(0)


def _start_fork_server(context, modules: list[str], environ: dict, ready: str | None = None) -> bool:
    """Start the fork server, asking it to preload `modules` with `environ` set, and to say so
    on the datagram socket at `ready`. Once per process: False when a pool of this process
    started it before (a later pool, e.g. of `dagsmith watch`, uses it as it is, with what the
    first asked for; its workers import anything else themselves, as steps need it)."""
    global _early_request
    request = {"parent": os.getpid(), "modules": modules, "environ": environ, "ready": ready}
    if _early_request is not None:  # started early, and waiting for this
        path, _early_request = _early_request, None
        staged = f"{path}.{os.getpid()}.tmp"
        with open(staged, "w", encoding="utf-8") as file:
            json.dump(request, file)
        os.replace(staged, path)  # all at once: it reads a whole request or none
        return True
    if _fork_server_started:
        context.set_forkserver_preload(_FORK_SERVER_IMPORTS)
        return False
    _launch(context, request)
    return True


_FORK_SERVER_IMPORTS = ["dagsmith.runtime", "dagsmith.runtime.store", __name__]


def _launch(context, request: dict) -> None:
    global _fork_server_started
    context.set_forkserver_preload(_FORK_SERVER_IMPORTS)
    os.environ[PRELOAD_VARIABLE] = json.dumps(request)
    try:
        multiprocessing.forkserver.ensure_running()  # starts it; the imports go on in the background
    finally:
        os.environ.pop(PRELOAD_VARIABLE, None)
    _fork_server_started = True


def start_fork_server_early(modules: list[str] | None = None) -> bool:
    """Start the fork server now, before the IR is known (`dagsmith run`, before it compiles
    the spec): its interpreter starts and imports the runtime and `modules` (a guess:
    `guess_preload`) meanwhile, then waits for the first pool's request (what else to preload,
    where to say it is ready). False when this process has one already. A runner that never
    makes a pool leaves it waiting until the runner exits; then it exits too (a guess it is
    still importing stops at the next module)."""
    global _early_request
    if _fork_server_started:
        return False
    folder = tempfile.mkdtemp(prefix="dagsmith-forkserver-")
    path = os.path.join(folder, "request.json")
    try:
        _launch(multiprocessing.get_context("forkserver"),
                {"parent": os.getpid(), "await": path, "modules": list(modules or []), "environ": preload_environ()})
    except BaseException:
        shutil.rmtree(folder, ignore_errors=True)
        raise
    _early_request = path
    return True


# --- the worker side ------------------------------------------------------------------------

@dataclass
class Task:
    task_id: str  # "<step>" or "<step>#<item>"
    step_id: str
    item: int | None
    timeout: int | None
    environ: dict = field(default_factory=dict)
    log_path: str | None = None  # the task's stdout and stderr (its own and its children's)
    kind: str | None = None  # the step's kind: whether a bridge can run it
    speculative: bool = False  # started before validations it waits for passed (executor.py)
    on_bridge: bool = False  # a bridge may run it, though its kind needs the preload


def bridge_can_run(task: Task) -> bool:
    """A bridge runs the kinds that need no preloaded library, and tasks the runner marked
    `on_bridge` (speculative ones, while they are worth importing their libraries twice)."""
    return task.kind in BRIDGE_KINDS or task.on_bridge


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
            ctx = make_context(ir, task.step_id, store, task.item, os.environ, ir_path=ir_path)
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
    """Point file descriptors 1 and 2 at the task's log (or os.devnull): what user code and its
    subprocesses print must not reach the runner's stdout (which `--format json` keeps for the
    record). Returns what `_restore_output` needs."""
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


def bridge_worker(fd: int, ir_path: str, store_uri: str) -> None:
    """A bridge's main: the worker loop on the socket the pool handed over as `fd`; then out at
    once (as a forked worker does): a bridge that ran a training has scikit-learn loaded, and
    tearing it down takes a while the pool's close would wait for."""
    _worker(Connection(fd), ir_path, store_uri)
    for stream in (sys.stdout, sys.stderr):
        try:
            stream.flush()
        except (OSError, ValueError):
            pass
    os._exit(0)


class _BridgeProcess:
    """A bridge's process: a fresh interpreter (`python -c`), not a fork of the fork server, which
    is busy importing. Not multiprocessing's spawn either: that runs the runner's __main__ again
    in the child, and a script that starts a run without an `if __name__ == "__main__"` guard
    would start one more. What the pool uses of multiprocessing.Process, over subprocess.Popen."""

    def __init__(self, fd: int, ir_path: str, store_uri: str):
        code = (f"import sys; sys.path[:] = {sys.path!r}; from dagsmith.runner.pool import bridge_worker; "
                f"bridge_worker({fd}, {ir_path!r}, {store_uri!r})")
        self.popen = subprocess.Popen([sys.executable, "-c", code], pass_fds=[fd], stdin=subprocess.DEVNULL)
        self.pid = self.popen.pid

    @property
    def exitcode(self) -> int | None:
        return self.popen.poll()

    def is_alive(self) -> bool:
        return self.popen.poll() is None

    def kill(self) -> None:
        if self.popen.poll() is None:
            self.popen.kill()

    def join(self, timeout: float | None = None) -> None:
        try:
            self.popen.wait(timeout)
        except subprocess.TimeoutExpired:
            pass


@dataclass(eq=False)
class Worker:
    conn: Connection
    process: object  # a multiprocessing.Process, or a _BridgeProcess
    bridge: bool = False


class WorkerPool:
    """`size` workers, running at most `size` tasks at once. With `preload`, the fork server
    imports those modules (with `environ` set) before it forks a worker. With `bridges` too, and
    a fork server this pool starts, bridge workers run BRIDGE_KINDS tasks until it is ready;
    without, starting the pool waits for it."""

    def __init__(self, size: int, ir_path: str, store_uri: str, *, preload=(), bridges: bool = False,
                 environ: dict | None = None):
        self.context = multiprocessing.get_context("forkserver")
        self.ir_path = ir_path
        self.store_uri = store_uri
        self.size = size
        self.idle: list[Worker] = []
        self.busy: dict = {}  # connection -> (worker, task, started)
        self.retired: list[Worker] = []  # bridges told to exit (their connection closed)
        self._ready: socket.socket | None = None  # where the fork server's "ready" datagram arrives
        self._ready_dir: str | None = None
        self._deadline = 0.0
        # One bridge per core beyond the one the fork server imports on (none on one core).
        count = min(size, (os.cpu_count() or 1) - 1) if bridges else 0
        address = self._listen() if count > 0 else None
        started = _start_fork_server(self.context, list(preload), dict(environ or {}), address)
        if self._ready is not None and started:
            self._deadline = time.monotonic() + WARM_UP_PATIENCE
            for _ in range(count):
                self.idle.append(self._spawn(bridge=True))
        else:
            self._stop_waiting()
            for _ in range(size):
                self.idle.append(self._spawn())

    # --- starting and retiring workers ----------------------------------------------------

    def _listen(self) -> str | None:
        try:
            self._ready_dir = tempfile.mkdtemp(prefix="dagsmith-pool-")
            address = os.path.join(self._ready_dir, "ready")
            self._ready = socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM)
            self._ready.bind(address)
            self._ready.setblocking(False)
            return address
        except OSError:  # e.g. a socket path too long: no bridges, the pool waits for the preload
            self._stop_waiting()
            return None

    def _stop_waiting(self) -> None:
        if self._ready is not None:
            self._ready.close()
            self._ready = None
        if self._ready_dir is not None:
            shutil.rmtree(self._ready_dir, ignore_errors=True)
            self._ready_dir = None

    @property
    def warming(self) -> bool:
        """True while bridges run and the fork server is still importing."""
        return self._ready is not None

    def _spawn(self, bridge: bool = False) -> Worker:
        if bridge:
            parent_sock, child_sock = socket.socketpair()
            try:
                process = _BridgeProcess(child_sock.fileno(), self.ir_path, self.store_uri)
            finally:
                child_sock.close()
            return Worker(Connection(parent_sock.detach()), process, bridge=True)
        parent, child = self.context.Pipe()
        process = self.context.Process(target=_worker, args=(child, self.ir_path, self.store_uri), daemon=True)
        process.start()
        child.close()
        return Worker(parent, process)

    def _check_preloaded(self) -> None:
        """Once the fork server is ready (or after WARM_UP_PATIENCE): start the preloaded
        workers; retire the idle bridges (a busy one retires when its task is done)."""
        if self._ready is None:
            return
        try:
            self._ready.recv(64)
        except BlockingIOError:
            if time.monotonic() < self._deadline:
                return
        except OSError:
            pass
        self._stop_waiting()
        for worker in [w for w in self.idle if w.bridge]:
            self._retire(worker)
        for _ in range(self.size):
            self.idle.append(self._spawn())

    def _retire(self, worker: Worker) -> None:
        if worker in self.idle:
            self.idle.remove(worker)
        worker.conn.close()  # its loop ends on EOF
        self.retired.append(worker)

    def _release(self, worker: Worker) -> None:
        """A worker finished its task: idle again, or retired (a bridge, once preloaded)."""
        if worker.bridge and not self.warming:
            self._retire(worker)
        else:
            self.idle.append(worker)

    def _replace(self, worker: Worker) -> None:
        """A worker died or was killed: another of its kind (no bridge once preloaded)."""
        if not worker.bridge:
            self.idle.append(self._spawn())
        elif self.warming:
            self.idle.append(self._spawn(bridge=True))

    # --- tasks ----------------------------------------------------------------------------

    @property
    def free(self) -> int:
        """How many more tasks could start now (at most `size` run at once)."""
        return max(0, min(self.size - len(self.busy), len(self.idle)))

    def can_take(self, task: Task) -> bool:
        """Whether an idle worker can run `task` now: a bridge runs only what `bridge_can_run`."""
        return self.free > 0 and any(not w.bridge or bridge_can_run(task) for w in self.idle)

    def submit(self, task: Task) -> None:
        suitable = [w for w in self.idle if not w.bridge or bridge_can_run(task)]
        if not suitable or self.free <= 0:
            raise RuntimeError(f"no idle worker can run task {task.task_id!r} now")
        worker = next((w for w in suitable if not w.bridge), suitable[0])
        self.idle.remove(worker)
        worker.conn.send(task)
        self.busy[worker.conn] = (worker, task, time.monotonic())

    def poll(self, timeout: float) -> list[Done]:
        """Finished tasks, waiting at most `timeout` seconds; kills tasks past their timeout.
        While the fork server imports, its "ready" datagram ends the wait too."""
        out: list[Done] = []
        waitables = list(self.busy)
        if self._ready is not None:
            waitables.append(self._ready)
            timeout = max(0.0, min(timeout, self._deadline - time.monotonic()))
        if waitables:
            for conn in wait(waitables, timeout=timeout):
                if conn is self._ready:
                    continue
                worker, task, started = self.busy.pop(conn)
                try:
                    out.append(conn.recv())
                except (EOFError, OSError):  # the worker died (killed, segfault, os._exit)
                    worker.process.join(1)
                    out.append(Done(task.task_id, False, None, f"worker process died (exit code {worker.process.exitcode})",
                                    time.monotonic() - started))
                    conn.close()
                    self._replace(worker)
                else:
                    self._release(worker)
        elif timeout:
            time.sleep(timeout)
        self._check_preloaded()
        now = time.monotonic()
        for conn, (worker, task, started) in list(self.busy.items()):
            if task.timeout is not None and now - started > task.timeout:
                self._kill(conn)
                out.append(Done(task.task_id, False, None, f"timed out after {task.timeout}s: killed", now - started))
        return out

    def cancel(self, which) -> list[Task]:
        """Stop the running tasks for which `which(task)` is true: each is killed with its worker
        (dead when this returns: it writes nothing more), and another worker takes its place. No
        Done comes for them. Returns them."""
        cancelled = []
        for conn, (_, task, _) in list(self.busy.items()):
            if which(task):
                self._kill(conn)
                cancelled.append(task)
        return cancelled

    def _kill(self, conn) -> None:
        worker, _, _ = self.busy.pop(conn)
        worker.process.kill()
        worker.process.join(5)
        conn.close()
        self._replace(worker)

    def running(self) -> list[Task]:
        return [task for _, task, _ in self.busy.values()]

    def close(self) -> None:
        resting = self.idle + self.retired
        for worker in resting:
            worker.conn.close()
        for worker in resting:
            worker.process.join(2)
        for conn, (worker, _, _) in self.busy.items():
            worker.process.kill()
            conn.close()
        for worker in resting:
            if worker.process.is_alive():
                worker.process.kill()
        self.idle.clear()
        self.busy.clear()
        self.retired.clear()
        self._stop_waiting()


_preload_in_fork_server()
