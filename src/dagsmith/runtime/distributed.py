"""Data-parallel training: `training.distributed: {framework, workers, gpus_per_worker}`.

The train step (one model, or one item of a fan-out) launches `workers` processes on this
machine and waits for them:

- framework torch: `python -m dagsmith.runtime.distributed JOB_DIR` once per rank, with
  MASTER_ADDR=127.0.0.1, a free MASTER_PORT, RANK, WORLD_SIZE, LOCAL_RANK, LOCAL_WORLD_SIZE;
  each worker initializes torch.distributed (gloo on CPU; NCCL when gpus_per_worker > 0 and
  CUDA GPUs are present, one per worker) before the model code runs.
- framework horovod: `horovod.run(num_proc=workers, use_gloo=True)`, in a launcher process of
  its own (`... --horovod JOB_DIR`); each worker calls hvd.init() before the model code runs.
  Without horovod importable the step fails and says how to install it
  (scripts/install-horovod.sh).

Every worker gets its shard of the training rows (rows rank, rank + W, rank + 2W, ... of the
train split, so the shards differ by at most one row) and the whole test split, and fits:
an `estimator` is constructed from model.params and fitted on the shard; an `entrypoint` is
called as `function(train_shard, test, params, context)` with context.rank / world_size and
the process group ready. Rank 0's fitted model is the step's model: the parent process scores
it and commits model.joblib + metrics.json as for single-process training, so select,
evaluate and deploy see no difference. Only rank 0's context.output_dir is committed (the
other ranks get a scratch folder).

Across nodes (docs/distributed.md, "Across nodes"): when a launcher started every rank (a Kubeflow
PyTorchJob, horovodrun / mpirun under an MPIJob, a SageMaker job of several instances: cluster.py
reads which), each `dagsmith step` process is ONE rank: `fit_as_rank` trains its shard in the
launcher's group (horovod without horovodrun: rank 0 serves horovod's gloo rendezvous), rank 0
returns the step's model, and the other ranks' store writes are dropped.

Failures: the first worker to fail (its exception, or its exit code and last log lines) fails
the step with its message; the other workers are then terminated (SIGTERM, then SIGKILL),
and all of them also on timeout ($DAGSMITH_DISTRIBUTED_TIMEOUT seconds for the whole
training, default none; collectives time out after $DAGSMITH_DISTRIBUTED_COLLECTIVE_TIMEOUT,
default 1800) and when the step itself is interrupted. A worker whose parent dies exits.
"""

from __future__ import annotations

import dataclasses
import json
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
from pathlib import Path

from . import cluster
from .context import StepFailed

INSTALL_HOROVOD = "scripts/install-horovod.sh"
LOG_TAIL = 30  # lines of a crashed worker's log in the step's error
KILL_GRACE = 3.0  # seconds between SIGTERM and SIGKILL
ERROR_GRACE = 1.0  # after a first failure, how long to wait for the other workers' errors


# --- the job: what every worker needs ----------------------------------------------------------

@dataclasses.dataclass
class Job:
    """One distributed training, as the workers see it (pickled into the job folder)."""

    framework: str
    workers: int
    gpus_per_worker: int
    model: dict  # training.model: estimator | entrypoint, params
    params: dict  # the trial's parameters (merged over model.params)
    target: str
    features: list
    partition: object = None
    trial: int | None = None
    run_id: str = "adhoc"
    root: str = "."
    output_dir: str = ""  # rank 0's (the step's) output folder
    collective_timeout: float = 1800.0


@dataclasses.dataclass
class WorkerRun:
    fitted: object  # rank 0's model
    reports: list  # per rank: {rank, world_size, pid, backend, device, fit_seconds}
    seconds: float  # launch to last exit


def _timeout(name: str, default: float | None) -> float | None:
    text = os.environ.get(name)
    if not text:
        return default
    try:
        value = float(text)
    except ValueError:
        raise StepFailed(f"${name} must be a number of seconds, got {text!r}") from None
    return value if value > 0 else None


def free_port() -> int:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


def shards(frame_or_series, world_size: int) -> list:
    """Rows rank, rank + W, ... for each rank (index kept as 0..n-1 within a shard)."""
    return [frame_or_series.iloc[rank::world_size].reset_index(drop=True) for rank in range(world_size)]


def write_job(folder: Path, job: Job, X_train, y_train, X_test, y_test) -> None:
    import joblib

    folder.mkdir(parents=True, exist_ok=True)
    (folder / "job.json").write_text(json.dumps({"sys_path": [p for p in sys.path if p], "root": job.root,
                                                      "workers": job.workers}), encoding="utf-8")
    joblib.dump({"job": job, "X_test": X_test, "y_test": y_test}, folder / "common.joblib")
    for rank, (X, y) in enumerate(zip(shards(X_train, job.workers), shards(y_train, job.workers))):
        joblib.dump({"X_train": X, "y_train": y}, folder / f"shard-{rank}.joblib")


# --- the parent: launch, watch, collect -------------------------------------------------------

def fit_distributed(ctx, config: dict, prepared, params: dict, partition, trial, output_dir: Path):
    """Train with `config["distributed"]`; returns (rank 0's fitted model, task) like train.fit."""
    dist = config["distributed"]
    framework = dist.get("framework") or "torch"
    workers = int(dist.get("workers") or 1)
    gpus = int(dist.get("gpus_per_worker") or 0)
    rows = len(prepared.y_train)
    if workers < 1:
        raise StepFailed(f"training.distributed.workers must be at least 1, got {workers}")
    if rows < workers:
        raise StepFailed(f"distributed training with {workers} workers needs at least {workers} training rows, "
                         f"got {rows}" + (f" (partition {partition!r})" if partition is not None else ""))
    model = config["model"]
    job = Job(framework=framework, workers=workers, gpus_per_worker=gpus, model=dict(model), params=dict(params),
              target=config["target"], features=list(prepared.columns), partition=partition, trial=trial,
              run_id=ctx.values.run_id, root=str(Path(ctx.root).resolve()), output_dir=str(output_dir),
              collective_timeout=_timeout("DAGSMITH_DISTRIBUTED_COLLECTIVE_TIMEOUT", 1800.0))
    launched = cluster.detect()
    if launched is not None:  # a launcher started every rank: this process is one of them
        return fit_as_rank(ctx, launched, job, prepared)
    run = run_workers(job, prepared.X_train, prepared.y_train, prepared.X_test, prepared.y_test,
                      timeout=_timeout("DAGSMITH_DISTRIBUTED_TIMEOUT", None))
    backend = run.reports[0].get("backend") if run.reports else framework
    return _step_model(ctx, job, run.fitted, backend, prepared, [r.get("note") for r in run.reports])


def _step_model(ctx, job: Job, fitted, backend: str, prepared, notes) -> tuple:
    """Rank 0's fitted model as the step's model (checked, with the run's notes)."""
    from .data import estimator_task

    model = job.model
    if fitted is None or not hasattr(fitted, "predict"):
        entry = model.get("entrypoint") or model.get("estimator")
        raise StepFailed(f"entrypoint {entry} returned {type(fitted).__name__} on rank 0: it must return a fitted model with predict()")
    lines = [f"distributed training ({job.framework}, {backend}): {job.workers} worker(s)"]
    if model.get("estimator") and not getattr(fitted, "_dagsmith_distributed", False) and job.workers > 1:
        lines.append(f"{model['estimator']} does not train across workers: each worker fitted its own shard and the "
                     f"model is rank 0's (1/{job.workers} of the training rows); use dagsmith.estimators.TorchMLP* or an entrypoint")
    for note in [*lines, *notes]:
        if note and note not in ctx.notes:
            ctx.notes.append(note)
    return fitted, estimator_task(fitted) or prepared.task


# --- one rank of a launched cluster (PyTorchJob, horovodrun / MPIJob, SageMaker) -------------------

def fit_as_rank(ctx, launched: cluster.Cluster, job: Job, prepared) -> tuple:
    """This process is rank `launched.rank` of `launched.world_size`, started by a launcher that
    started the others the same way (each runs the same step command and loads the same split).
    Train this rank's shard in the launcher's process group. Rank 0 returns the step's model, so
    the step scores and commits it as always; every other rank only trains: its store writes are
    discarded (the step's outputs and result.json are rank 0's alone) and it returns its own
    fitted model (or a stand-in when the entrypoint returned none) for the scoring nobody reads."""
    rank, world = launched.rank, launched.world_size
    head = f"distributed training ({job.framework}, rank {rank} of {world}, launched: {launched.source})"
    if job.framework == "torch" and launched.kind == "horovod":
        raise StepFailed(f"{head}: framework torch needs MASTER_ADDR, MASTER_PORT, RANK and WORLD_SIZE (a Kubeflow "
                         "PyTorchJob) or a SageMaker cluster, and this process was started by horovodrun / mpirun: "
                         "use framework: horovod, or set $DAGSMITH_CLUSTER=local to train with local workers")
    if job.framework not in ("torch", "horovod"):
        raise StepFailed(f"training.distributed.framework {job.framework!r} is not supported (torch | horovod)")
    rows = len(prepared.y_train)
    if rows < world:
        raise StepFailed(f"{head}: {world} ranks need at least {world} training rows, got {rows}")
    notes = []
    if world != job.workers:
        notes.append(f"the launcher started {world} ranks and training.distributed.workers is {job.workers}: "
                     f"the data is split {world} ways")
    job = dataclasses.replace(job, workers=world)
    if rank == 0:
        notes.append(f"ranks launched by {launched.kind} ({launched.source}); this is rank 0, which writes the outputs")
    X_shard = prepared.X_train.iloc[rank::world].reset_index(drop=True)
    y_shard = prepared.y_train.iloc[rank::world].reset_index(drop=True)
    scratch = None
    if rank == 0:
        output_dir = Path(job.output_dir)
    else:
        scratch = Path(tempfile.mkdtemp(prefix=f"dagsmith-rank-{rank}-"))
        output_dir = scratch
    output_dir.mkdir(parents=True, exist_ok=True)
    started = time.time()
    try:
        backend, note = _init_launched(job, launched)
        if note:
            notes.append(note)
        try:
            fitted = _fit_shard(job, rank, world, X_shard, y_shard, prepared.X_test, prepared.y_test, output_dir)
        finally:
            _shutdown_launched(job)
    except StepFailed as exc:
        raise StepFailed(f"{head}: {exc}") from None
    except Exception as exc:  # noqa: BLE001 - a collective or setup error, reported with this rank
        raise StepFailed(f"{head}: {type(exc).__name__}: {exc}") from None
    finally:
        if scratch is not None:
            shutil.rmtree(scratch, ignore_errors=True)
    seconds = time.time() - started
    if rank == 0:
        return _step_model(ctx, job, fitted, backend, prepared, notes)
    discard_writes(ctx.store)
    print(f"{head}: trained this shard ({len(y_shard)} rows) in {seconds:.1f}s; rank 0 writes the step's outputs",
          file=sys.stderr, flush=True)
    return _stand_in(fitted, prepared, X_shard, y_shard)


_GROUPS_FORMED = [0]  # groups this process has formed (one per item of a fan-out range)


def _init_launched(job: Job, launched: cluster.Cluster) -> tuple[str, str | None]:
    """Join the launcher's group: torch's env:// (PyTorchJob, SageMaker) or hvd.init().
    The n-th group a process forms (the n-th item of a fan-out range; every rank runs the same
    items in the same order) meets at MASTER_PORT + n, so a rank never reaches the rendezvous
    of the item before, which rank 0 may not have closed yet."""
    offset, _GROUPS_FORMED[0] = _GROUPS_FORMED[0], _GROUPS_FORMED[0] + 1
    if launched.master_port is not None and offset:
        launched = dataclasses.replace(launched, master_port=launched.master_port + offset)
    if job.framework == "torch":
        for key, value in launched.torch_env().items():
            if key.endswith("SOCKET_IFNAME"):
                os.environ.setdefault(key, value)
            else:
                os.environ[key] = value
        backend, device = _init_torch(job, launched.rank, launched.world_size, launched.local_rank, 1)
        note = None
        if job.gpus_per_worker > 0 and device == "cpu" and launched.rank == 0:
            note = f"gpus_per_worker is {job.gpus_per_worker} and no CUDA GPU is available: the ranks trained on CPU (gloo)"
        return backend, note
    try:
        import horovod.torch as hvd
    except Exception as exc:  # noqa: BLE001
        raise StepFailed(f"horovod with its PyTorch binding is not importable here ({type(exc).__name__}: {exc}); "
                         f"install it in the image with {INSTALL_HOROVOD}") from None
    if launched.kind != "horovod":  # no horovodrun: do what its gloo mode does, with rank 0 as the server
        _horovod_rendezvous(launched)
    elif "HOROVOD_RANK" not in os.environ and not hvd.mpi_built():
        # started by mpirun (an MPIJob's launcher), not horovodrun: no gloo rendezvous was set up,
        # so hvd.init() can only form the group through MPI
        raise StepFailed("this rank was started by mpirun (an MPIJob's launcher) and horovod here is built without MPI: "
                         "build horovod in the image with HOROVOD_WITH_MPI=1 (and Open MPI installed)")
    hvd.init()
    if (hvd.rank(), hvd.size()) != (launched.rank, launched.world_size):
        raise StepFailed(f"horovod says rank {hvd.rank()} of {hvd.size()}, the launcher's environment says "
                         f"{launched.rank} of {launched.world_size}")
    os.environ["RANK"], os.environ["WORLD_SIZE"] = str(hvd.rank()), str(hvd.size())
    os.environ["LOCAL_RANK"] = str(hvd.local_rank())
    os.environ["DAGSMITH_DEVICE"] = "cpu"
    import torch

    if int(os.environ.get("DAGSMITH_WORKER_THREADS") or 0):
        torch.set_num_threads(int(os.environ["DAGSMITH_WORKER_THREADS"]))
    return "gloo" if hvd.gloo_enabled() else "mpi", None


_RENDEZVOUS: list = []  # rank 0's horovod rendezvous server, kept until the next group forms


def _horovod_rendezvous(launched: cluster.Cluster) -> None:
    """horovod's gloo rendezvous without horovodrun (SageMaker, a PyTorchJob's environment): every
    rank is its own host with one slot; rank 0 serves horovod's rendezvous (its HTTP key-value
    store) at MASTER_ADDR:MASTER_PORT, the others wait for it, then every rank sets the variables
    horovodrun's gloo mode sets (gloo_run.create_slot_env_vars / create_run_env_vars)."""
    from horovod.runner.common.util.hosts import get_host_assignments, parse_hosts
    from horovod.runner.http.http_server import RendezvousHandler, RendezvousHTTPServer

    world, rank, port = launched.world_size, launched.rank, int(launched.master_port)
    names = [f"rank-{r}" for r in range(world)]
    plan = get_host_assignments(parse_hosts(",".join(f"{n}:1" for n in names)), world)
    if rank == 0:
        while _RENDEZVOUS:  # the previous item's
            _RENDEZVOUS.pop().shutdown()
        server = RendezvousHTTPServer(("", port), RendezvousHandler, 0)
        server.init(plan)
        threading.Thread(target=server.serve_forever, name="dagsmith-horovod-rendezvous", daemon=True).start()
        _RENDEZVOUS.append(server)
    elif rank != 0:
        until = time.monotonic() + _timeout("DAGSMITH_DISTRIBUTED_COLLECTIVE_TIMEOUT", 1800.0)
        while True:
            try:
                socket.create_connection((launched.master_addr, port), timeout=5).close()
                break
            except OSError:
                if time.monotonic() > until:
                    raise StepFailed(f"horovod's rendezvous at {launched.master_addr}:{port} (rank 0) never answered") from None
                time.sleep(0.5)
    slot = plan[rank]
    os.environ.update({
        "HOROVOD_HOSTNAME": slot.hostname, "HOROVOD_RANK": str(slot.rank), "HOROVOD_SIZE": str(slot.size),
        "HOROVOD_LOCAL_RANK": str(slot.local_rank), "HOROVOD_LOCAL_SIZE": str(slot.local_size),
        "HOROVOD_CROSS_RANK": str(slot.cross_rank), "HOROVOD_CROSS_SIZE": str(slot.cross_size),
        "HOROVOD_GLOO_RENDEZVOUS_ADDR": str(launched.master_addr), "HOROVOD_GLOO_RENDEZVOUS_PORT": str(port),
        "HOROVOD_CONTROLLER": "gloo", "HOROVOD_CPU_OPERATIONS": "gloo",
    })
    interface = launched.interface or os.environ.get("GLOO_SOCKET_IFNAME") or "eth0"
    os.environ.setdefault("HOROVOD_GLOO_IFACE", interface)
    os.environ.setdefault("NCCL_SOCKET_IFNAME", interface)


def _shutdown_launched(job: Job) -> None:
    if job.framework == "torch":
        import torch.distributed as dist

        if dist.is_initialized():
            dist.destroy_process_group()
    else:
        import horovod.torch as hvd

        if hvd.is_initialized():
            hvd.shutdown()


def discard_writes(store) -> None:
    """Make `store` (this process's) read-only: commits and JSON writes are dropped. A rank other
    than 0 still runs the rest of the step (scoring, committing, result.json) as rank 0 does, so
    every code path stays the same, and none of it reaches the store."""
    store._publish = lambda staging, manifest, exclusive: staging.discard()
    store.write_json = lambda key, data: None


def _stand_in(fitted, prepared, X_shard, y_shard):
    """What a rank other than 0 hands back to the step: its own model, or, when the entrypoint
    returned none on this rank (allowed: only rank 0's counts), a dummy fitted on the shard so the
    step's scoring runs; its outputs are discarded either way."""
    if fitted is not None and hasattr(fitted, "predict"):
        return fitted, prepared.task
    from sklearn.dummy import DummyClassifier, DummyRegressor

    dummy = DummyClassifier() if prepared.task == "classifier" else DummyRegressor()
    return dummy.fit(X_shard, y_shard), prepared.task


def run_workers(job: Job, X_train, y_train, X_test, y_test, timeout: float | None = None) -> WorkerRun:
    """Launch the job's workers, wait for them, return rank 0's model and every rank's report."""
    import joblib

    folder = Path(tempfile.mkdtemp(prefix="dagsmith-dist-"))
    started = time.time()
    try:
        write_job(folder, job, X_train, y_train, X_test, y_test)
        if job.framework == "horovod":
            _run_horovod(folder, job, timeout)
        elif job.framework == "torch":
            _run_torch(folder, job, timeout)
        else:
            raise StepFailed(f"training.distributed.framework {job.framework!r} is not supported (torch | horovod)")
        reports = [json.loads((folder / f"report-{rank}.json").read_text(encoding="utf-8")) for rank in range(job.workers)]
        fitted = joblib.load(folder / "model.joblib")
        _relay_log(folder / "worker-0.log")
        return WorkerRun(fitted=fitted, reports=reports, seconds=time.time() - started)
    finally:
        shutil.rmtree(folder, ignore_errors=True)


def _relay_log(path: Path) -> None:
    """Rank 0's output (the user's prints) goes to the step's stderr."""
    try:
        text = path.read_text(encoding="utf-8", errors="replace")
    except OSError:
        return
    if text.strip():
        sys.stderr.write(text if text.endswith("\n") else text + "\n")


def _worker_env(job: Job, rank: int, port: int, threads: int) -> dict:
    env = dict(os.environ)
    env.update({
        "MASTER_ADDR": "127.0.0.1", "MASTER_PORT": str(port), "RANK": str(rank), "WORLD_SIZE": str(job.workers),
        "LOCAL_RANK": str(rank), "LOCAL_WORLD_SIZE": str(job.workers), "PYTHONUNBUFFERED": "1",
        "DAGSMITH_WORKER_THREADS": str(threads),
    })
    env.setdefault("OMP_NUM_THREADS", str(threads))
    return env


def _threads(workers: int) -> int:
    return max(1, (os.cpu_count() or 1) // workers)


def _run_torch(folder: Path, job: Job, timeout: float | None) -> None:
    port = free_port()
    procs: dict[int, subprocess.Popen] = {}
    try:
        for rank in range(job.workers):
            with open(folder / f"worker-{rank}.log", "wb") as log:
                procs[rank] = subprocess.Popen(
                    [sys.executable, "-m", "dagsmith.runtime.distributed", str(folder)],
                    env=_worker_env(job, rank, port, _threads(job.workers)), stdin=subprocess.DEVNULL,
                    stdout=log, stderr=subprocess.STDOUT, start_new_session=True, cwd=job.root)
        _watch(folder, job, procs, timeout)
    finally:
        _stop(procs.values())


def _watch(folder: Path, job: Job, procs: dict, timeout: float | None) -> None:
    deadline = time.monotonic() + timeout if timeout else None
    while True:
        codes = {rank: proc.poll() for rank, proc in procs.items()}
        failed = [rank for rank, code in codes.items() if code not in (None, 0)]
        if failed:
            _stop_after_errors(folder, procs)
            raise _failure(folder, job, {rank: proc.poll() for rank, proc in procs.items()})
        if all(code == 0 for code in codes.values()):
            return
        if deadline is not None and time.monotonic() > deadline:
            _stop(procs.values())
            raise StepFailed(f"distributed training ({job.framework}, {job.workers} workers) timed out after "
                             f"{timeout:g}s ($DAGSMITH_DISTRIBUTED_TIMEOUT): the workers were stopped")
        time.sleep(0.05)


def _stop_after_errors(folder: Path, procs: dict) -> None:
    """Let the other workers write their own errors for a moment, then stop them."""
    until = time.monotonic() + ERROR_GRACE
    while time.monotonic() < until and any(p.poll() is None for p in procs.values()):
        time.sleep(0.05)
    _stop(procs.values())


def _stop(procs) -> None:
    """Terminate (then kill) the workers still running, with whatever they started."""
    alive = [p for p in procs if p.poll() is None]
    for proc in alive:
        _signal_group(proc, signal.SIGTERM)
    until = time.monotonic() + KILL_GRACE
    for proc in alive:
        try:
            proc.wait(timeout=max(0.0, until - time.monotonic()))
        except subprocess.TimeoutExpired:
            pass
    for proc in alive:
        if proc.poll() is None:
            _signal_group(proc, signal.SIGKILL)
            proc.wait()


def _signal_group(proc: subprocess.Popen, sig) -> None:
    try:
        os.killpg(proc.pid, sig)  # the worker's own session (start_new_session=True)
    except (ProcessLookupError, PermissionError):
        pass


def _failure(folder: Path, job: Job, codes: dict) -> StepFailed:
    """The step's error: the earliest worker error (the cause; the others' follow from it)."""
    errors = []
    for rank in range(job.workers):
        path = folder / f"error-{rank}.json"
        if path.exists():
            try:
                errors.append(json.loads(path.read_text(encoding="utf-8")))
            except (OSError, ValueError):
                pass
    head = f"distributed training ({job.framework}, {job.workers} workers):"
    if errors:
        first = min(errors, key=lambda e: (e.get("collective", False), e["time"], e["rank"]))
        return StepFailed(f"{head} worker {first['rank']} failed: {first['message']}")
    crashed = sorted(rank for rank, code in codes.items() if code not in (None, 0) and code != -signal.SIGTERM
                     and code != -signal.SIGKILL) or sorted(r for r, c in codes.items() if c not in (None, 0))
    rank = crashed[0] if crashed else 0
    code = codes.get(rank)
    how = f"was killed by signal {-code}" if code is not None and code < 0 else f"exited with code {code}"
    return StepFailed(f"{head} worker {rank} {how}" + _log_tail(folder / f"worker-{rank}.log"))


def _log_tail(path: Path) -> str:
    try:
        lines = path.read_text(encoding="utf-8", errors="replace").rstrip().splitlines()
    except OSError:
        return ""
    return ("; its last output:\n" + "\n".join(lines[-LOG_TAIL:])) if lines else ""


def horovod_available() -> bool:
    try:
        import horovod
        import horovod.torch  # noqa: F401
    except Exception:  # noqa: BLE001 - a broken build is as good as none
        return False
    return True


def _run_horovod(folder: Path, job: Job, timeout: float | None) -> None:
    """horovod.run (gloo) in a launcher process of our own: horovod.run needs a main thread,
    and the launcher (with horovod's workers) can be stopped as a whole on timeout."""
    try:
        import horovod
        import horovod.torch  # noqa: F401 - the torch binding must be built
    except Exception as exc:  # noqa: BLE001
        raise StepFailed(f"training.distributed.framework is horovod, and horovod with its PyTorch binding is not "
                         f"importable here ({type(exc).__name__}: {exc}); install it with {INSTALL_HOROVOD} "
                         "(builds horovod 0.28.1 with PyTorch and Gloo from source), or use framework: torch") from None
    env = dict(os.environ, PYTHONUNBUFFERED="1")
    env.setdefault("OMP_NUM_THREADS", str(_threads(job.workers)))
    env["DAGSMITH_WORKER_THREADS"] = str(_threads(job.workers))
    with open(folder / "launcher.log", "wb") as log:
        launcher = subprocess.Popen([sys.executable, "-m", "dagsmith.runtime.distributed", "--horovod", str(folder)],
                                    env=env, stdin=subprocess.DEVNULL, stdout=log, stderr=subprocess.STDOUT,
                                    start_new_session=True, cwd=job.root)
    try:
        deadline = time.monotonic() + timeout if timeout else None
        while launcher.poll() is None:
            if deadline is not None and time.monotonic() > deadline:
                raise StepFailed(f"distributed training (horovod, {job.workers} workers) timed out after {timeout:g}s "
                                 "($DAGSMITH_DISTRIBUTED_TIMEOUT): the workers were stopped")
            time.sleep(0.05)
    finally:
        _stop([launcher])
    errors = [rank for rank in range(job.workers) if (folder / f"error-{rank}.json").exists()]
    if errors:
        raise _failure(folder, job, {})
    done = all((folder / f"report-{rank}.json").exists() for rank in range(job.workers))
    if launcher.returncode != 0 or not done:
        raise StepFailed(f"distributed training (horovod, {job.workers} workers): horovod.run failed "
                         f"(exit code {launcher.returncode})" + _log_tail(folder / "launcher.log"))


def _launch_horovod(folder: Path) -> int:
    """The launcher process: horovod.run with gloo on this machine."""
    import horovod

    job = json.loads((folder / "job.json").read_text(encoding="utf-8"))
    workers = int(job["workers"])
    horovod.run(_horovod_worker, args=(str(folder),), num_proc=workers, hosts=f"localhost:{workers}",
                use_gloo=True, disable_cache=True)
    return 0


def _horovod_worker(folder: str):
    import horovod.torch as hvd

    hvd.init()
    os.environ["RANK"], os.environ["WORLD_SIZE"] = str(hvd.rank()), str(hvd.size())
    os.environ["LOCAL_RANK"] = str(hvd.local_rank())
    return work(Path(folder), hvd.rank(), hvd.size(), framework="horovod")


# --- the worker -------------------------------------------------------------------------------

def _watch_parent() -> None:
    """Exit when the launching process is gone (no orphaned workers)."""
    parent = os.getppid()

    def loop():
        while True:
            time.sleep(1.0)
            if os.getppid() != parent:
                os._exit(3)

    threading.Thread(target=loop, name="dagsmith-parent-watch", daemon=True).start()


def _looks_collective(exc: BaseException) -> bool:
    """An error a worker gets because another one failed (a closed connection, a timeout)."""
    text = f"{type(exc).__name__} {exc}".lower()
    return any(word in text for word in ("gloo", "connection closed", "connection reset", "broken pipe", "nccl",
                                         "timed out", "distbackenderror", "peer"))


def work(folder: Path, rank: int, world_size: int, framework: str = "torch") -> bool:
    """One worker: set up, fit the shard, rank 0 saves the model. Errors go to error-<rank>.json."""
    try:
        info = json.loads((folder / "job.json").read_text(encoding="utf-8"))
        for entry in reversed(info["sys_path"]):
            if entry not in sys.path:
                sys.path.append(entry)
        return _work(folder, rank, world_size, framework)
    except BaseException as exc:
        if isinstance(exc, StepFailed):
            message = str(exc)
        elif isinstance(exc, SystemExit) and exc.code in (0, None):
            raise
        else:
            message = f"{type(exc).__name__}: {exc}\n{traceback.format_exc().rstrip()}"
        record = {"rank": rank, "time": time.time(), "message": message, "collective": _looks_collective(exc)}
        tmp = folder / f"error-{rank}.json.tmp"
        tmp.write_text(json.dumps(record), encoding="utf-8")
        tmp.replace(folder / f"error-{rank}.json")
        if framework == "horovod":
            raise
        return False


def _init_torch(job: Job, rank: int, world_size: int, local_rank: int | None = None,
                local_size: int | None = None) -> tuple[str, str]:
    """The default process group (env://). The GPU is picked by the local rank: on one machine
    it is the rank; in a launched cluster each pod or instance has its own GPUs."""
    import datetime

    import torch
    import torch.distributed as dist

    threads = int(os.environ.get("DAGSMITH_WORKER_THREADS") or 0)
    if threads:
        torch.set_num_threads(threads)
    backend, device = "gloo", "cpu"
    local_rank = rank if local_rank is None else local_rank
    local_size = world_size if local_size is None else local_size
    if job.gpus_per_worker > 0 and torch.cuda.is_available() and torch.cuda.device_count() >= local_size:
        index = (local_rank * job.gpus_per_worker) % torch.cuda.device_count()
        torch.cuda.set_device(index)
        backend, device = "nccl", f"cuda:{index}"
    os.environ["DAGSMITH_DEVICE"] = device
    dist.init_process_group(backend, init_method="env://", rank=rank, world_size=world_size,
                            timeout=datetime.timedelta(seconds=job.collective_timeout))
    return backend, device


def _work(folder: Path, rank: int, world_size: int, framework: str) -> bool:
    import joblib

    common = joblib.load(folder / "common.joblib")
    job: Job = common["job"]
    shard = joblib.load(folder / f"shard-{rank}.joblib")
    from .data import user_path

    user_path(job.root)
    note = None
    if framework == "torch":
        backend, device = _init_torch(job, rank, world_size)
        if job.gpus_per_worker > 0 and device == "cpu" and rank == 0:
            note = f"gpus_per_worker is {job.gpus_per_worker} and no CUDA GPU is available: the workers trained on CPU (gloo)"
    else:  # horovod: hvd.init() has run
        import torch

        if int(os.environ.get("DAGSMITH_WORKER_THREADS") or 0):
            torch.set_num_threads(int(os.environ["DAGSMITH_WORKER_THREADS"]))
        backend, device = "gloo", "cpu"
        os.environ["DAGSMITH_DEVICE"] = device
    try:
        output_dir = Path(job.output_dir) if rank == 0 else folder / f"output-{rank}"
        output_dir.mkdir(parents=True, exist_ok=True)
        started = time.time()
        fitted = _fit_shard(job, rank, world_size, shard["X_train"], shard["y_train"], common["X_test"],
                            common["y_test"], output_dir)
        seconds = time.time() - started
        if rank == 0:
            joblib.dump(fitted, folder / "model.joblib.tmp")
            os.replace(folder / "model.joblib.tmp", folder / "model.joblib")
        report = {"rank": rank, "world_size": world_size, "pid": os.getpid(), "backend": backend, "device": device,
                  "rows": len(shard["y_train"]), "fit_seconds": round(seconds, 4), "note": note}
        (folder / f"report-{rank}.json").write_text(json.dumps(report), encoding="utf-8")
        if framework == "torch":
            import torch.distributed as dist

            if dist.is_initialized():
                # Every rank done before any tears the group down: a rank that exits first closes
                # its gloo pairs under one still in teardown, which then aborts (SIGABRT,
                # "terminate called without an active exception"). On a failure the runner kills
                # the other ranks, so only the success path waits here.
                dist.barrier()
    finally:
        if framework == "torch":
            import torch.distributed as dist

            if dist.is_initialized():
                dist.destroy_process_group()
    return True


def _fit_shard(job: Job, rank: int, world_size: int, X_train, y_train, X_test, y_test, output_dir: Path):
    """train.fit on one shard (the same model construction and the same error messages)."""
    from .data import import_object, make_estimator
    from .userscode import TrainContext, user_code_error

    model = job.model
    where = f" (partition {job.partition!r})" if job.partition is not None else ""
    if model.get("estimator"):
        estimator = make_estimator({"model": model}, job.params)
        try:
            estimator.fit(X_train, y_train)
        except Exception as exc:  # noqa: BLE001 - the user's model, reported as the step's failure
            raise StepFailed(f"training {model['estimator']} failed{where}: {type(exc).__name__}: {exc}") from None
        return estimator
    import pandas as pd

    entry = model.get("entrypoint")
    if not entry:
        raise StepFailed("training.model needs an estimator or an entrypoint")
    function = import_object(entry, "entrypoint")
    train = pd.concat([X_train, y_train.rename(job.target)], axis=1)
    test = pd.concat([X_test, y_test.rename(job.target)], axis=1)
    merged = {**(model.get("params") or {}), **job.params}
    context = TrainContext(rank=rank, world_size=world_size, output_dir=output_dir, target=job.target,
                           features=list(job.features), partition=job.partition, trial=job.trial, run_id=job.run_id,
                           params=merged)
    try:
        return function(train, test, merged, context)
    except Exception as exc:  # noqa: BLE001 - the user's code, reported as the step's failure
        raise user_code_error(f"entrypoint {entry}", exc) from None


def main(argv: list[str] | None = None) -> int:
    """`python -m dagsmith.runtime.distributed JOB_DIR` with RANK and WORLD_SIZE set (a torch worker),
    or `... --horovod JOB_DIR` (the horovod launcher)."""
    argv = sys.argv[1:] if argv is None else argv
    if len(argv) == 2 and argv[0] == "--horovod":
        _watch_parent()
        try:
            return _launch_horovod(Path(argv[1]))
        except Exception as exc:  # noqa: BLE001 - the workers' own errors are in the job folder
            print(f"horovod.run failed: {type(exc).__name__}: {exc}", file=sys.stderr)
            return 1
    if len(argv) != 1:
        print("usage: python -m dagsmith.runtime.distributed JOB_DIR  (RANK, WORLD_SIZE, MASTER_ADDR, MASTER_PORT set)",
              file=sys.stderr)
        return 2
    _watch_parent()
    signal.signal(signal.SIGTERM, lambda *_: os._exit(143))
    ok = work(Path(argv[0]), int(os.environ["RANK"]), int(os.environ["WORLD_SIZE"]), framework="torch")
    return 0 if ok else 1


if __name__ == "__main__":
    sys.exit(main())
