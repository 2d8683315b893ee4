"""The local runner (`dagsmith run`): the embedded default orchestrator.

<workdir>/runs/<run_id>/ holds the run's IR (what ran, used by --resume), run.json and the
steps' outputs; <workdir>/cache/ and <workdir>/registry/ are shared by every run.
"""

from __future__ import annotations

import json
import os
from pathlib import Path

from ..errors import DagsmithError, UsageError, hide_connections
from ..ir import IR, ir_filename
from ..runtime.context import RunValues
from ..runtime.environment import run_environment, run_id_problem
from ..runtime.store import LocalStore, atomic_write_bytes
from .record import RunRecord, new_run_id


def warm_up(spec_path: str | os.PathLike | None = None) -> None:
    """Start the workers' fork server now, before the IR is known: its start-up, and its import
    of what the spec's sections suggest, overlap what the caller does meanwhile (compiling the
    spec); it imports anything else once the run's pool says what (pool.start_fork_server_early)."""
    from .pool import guess_preload, start_fork_server_early

    try:
        modules = guess_preload(Path(spec_path).read_text(encoding="utf-8")) if spec_path is not None else []
    except (OSError, UnicodeDecodeError):
        modules = []  # the compile says what is wrong with it
    start_fork_server_early(modules)


def run_dir(workdir: Path, run_id: str) -> Path:
    """A run's folder; `run_id` is checked to be an id (never a path out of the workdir)."""
    problem = run_id_problem(run_id)
    if problem:
        raise UsageError(problem)
    return Path(workdir) / "runs" / run_id


def start(ir: IR, workdir: Path, *, max_parallel: int | None = None, use_cache: bool = True, reporter=None,
          run_date: str | None = None, root: str | os.PathLike = ".") -> dict:
    """A new run of `ir`; returns the final run record. `root`: the spec's folder, which relative
    paths in the spec resolve against (kept in the run record for --resume)."""
    workdir = Path(workdir)
    run_id = new_run_id()
    folder = run_dir(workdir, run_id)
    values = RunValues.from_env(ir, run_environment(run_id, run_date, {}))
    try:
        folder.mkdir(parents=True, exist_ok=True)
        ir_path = folder / ir_filename(ir.name)
        atomic_write_bytes(ir_path, ir.dumps().encode("utf-8"))
        record = RunRecord.create(folder / "run.json", run_id, ir.name, ir.pipeline["spec_hash"], values.params, [s.id for s in ir.steps])
    except OSError as exc:
        raise WorkdirError(f"cannot write to the workdir {workdir}: {_reason(exc, workdir)}") from None
    record.data["run_date"] = values.run_date
    record.data["root"] = str(Path(root).resolve())
    return _execute(ir, ir_path, workdir, record, values, max_parallel, use_cache, reporter)


def resume(workdir: Path, run_id: str, *, max_parallel: int | None = None, use_cache: bool = True, reporter=None) -> dict:
    """Continue a run that was interrupted or failed: finished steps are not run again."""
    folder = run_dir(Path(workdir), run_id)
    record_path = folder / "run.json"
    if not record_path.exists():
        known = ", ".join(list_runs(workdir)[-5:]) or "none"
        raise DagsmithError(f"no run {run_id!r} in {workdir} (recent runs: {known})")
    record = RunRecord.load(record_path)
    ir_files = sorted(folder.glob("*.ir.json"))
    ir = IR.loads(ir_files[0].read_text(encoding="utf-8"))
    values = RunValues(run_id=run_id, run_date=record.data.get("run_date") or RunValues.from_env(ir, {}).run_date, params=record.data["params"])
    return _execute(ir, ir_files[0], Path(workdir), record, values, max_parallel, use_cache, reporter)


def _execute(ir, ir_path, workdir, record, values, max_parallel, use_cache, reporter) -> dict:
    # Imported here, not with the package: `dagsmith run` imports the package to start the fork
    # server (warm_up), and every millisecond before that is on the run's critical path.
    from .executor import Executor

    root = Path(record.data.get("root") or ".")
    executor = Executor(
        ir=ir, ir_path=Path(ir_path).resolve(), store=LocalStore(Path(workdir).resolve()), record=record, values=values,
        root=root.resolve(), max_parallel=max_parallel or os.cpu_count() or 1, use_cache=use_cache, reporter=reporter,
    )
    try:
        return executor.run()
    except OSError as exc:
        # The workdir (its cache, registry or run folder) cannot be written: a user's problem, and
        # the run is over, so its record must not say "running" forever.
        _mark_failed(record, exc, workdir)
        raise WorkdirError(f"cannot write to the workdir {workdir}: {_reason(exc, workdir)} (run {record.data.get('run_id')} failed)") from None
    finally:
        if reporter is not None:
            reporter.close()


class WorkdirError(DagsmithError):
    """The --workdir (or a folder in it) cannot be written."""


def _reason(exc: OSError, workdir: Path) -> str:
    where = exc.filename
    try:
        where = os.path.relpath(where, workdir) if where else None
    except ValueError:
        pass
    return f"{exc.strerror or type(exc).__name__}" + (f" ({where})" if where else "")


def _mark_failed(record, exc: OSError, workdir: Path) -> None:
    from .record import now

    record.data["status"] = "failed"
    record.data["ended"] = record.data.get("ended") or now()
    record.data["error"] = f"cannot write to the workdir: {_reason(exc, workdir)}"
    try:
        record.save()
    except OSError:
        pass  # the run folder itself cannot be written: nothing more to record


def list_runs(workdir: Path) -> list[str]:
    base = Path(workdir) / "runs"
    if not base.is_dir():
        return []
    return sorted(p.name for p in base.iterdir() if run_id_problem(p.name) is None and (p / "run.json").exists())


def _in_pipeline_order(folder: Path, steps: dict) -> dict:
    """The record's steps in the pipeline's order (the run's IR file), as `dagsmith run` lists
    them: run.json keeps its keys sorted."""
    try:
        [ir_file] = folder.glob("*.ir.json")
        order = [step["id"] for step in json.loads(ir_file.read_text(encoding="utf-8"))["steps"]]
    except (ValueError, OSError, KeyError, TypeError):
        return steps  # no IR (or not one): the record's own order
    rank = {step_id: n for n, step_id in enumerate(order)}
    return dict(sorted(steps.items(), key=lambda kv: (rank.get(kv[0], len(rank)), kv[0])))


def load_record(workdir: Path, run_id: str) -> dict:
    path = run_dir(Path(workdir), run_id) / "run.json"
    if not path.exists():
        if not Path(workdir).is_dir():
            raise DagsmithError(f"no run {run_id!r}: no workdir {workdir} (runs are kept in the --workdir of `dagsmith run`)")
        known = ", ".join(list_runs(workdir)[-5:]) or "none"
        raise DagsmithError(f"no run {run_id!r} in {workdir} (recent runs: {known})")
    record = json.loads(path.read_text(encoding="utf-8"))
    record["steps"] = _in_pipeline_order(path.parent, record.get("steps") or {})
    # A record written by an older dagsmith may hold a step error quoting a URL's password, or a
    # part of a connection set now.
    for step in (record.get("steps") or {}).values():
        if isinstance(step, dict) and isinstance(step.get("error"), str):
            step["error"] = hide_connections(step["error"])
    if isinstance(record.get("error"), str):
        record["error"] = hide_connections(record["error"])
    return record
