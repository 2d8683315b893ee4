"""Airflow 3 on SQLite: `dagsmith compile --target airflow`, the DAG loaded by a real DagBag and
run with `dag.test()` (run-time params: run_conf; run date: logical_date).

Airflow fixes its configuration (home, database, dags folder) in the process that first imports
it, so the runs happen in ONE worker process of this adapter (started by start(), stopped by
stop()), configured with a home in the session's tmp folder: the pytest process's environment
and any other test's Airflow set-up stay untouched, and the warm-up is paid once. DAG files are
compiled into a sub-folder of that home's dags folder: dag.test() serializes a DAG by parsing
the bundle that holds it. Every task id that is not the airflow_id of an IR step (`dagsmith-admit`,
`dagsmith-ranges-<step>`, ...) is ignored; mapped instances count for their step.
"""

from __future__ import annotations

import atexit
import datetime as dt
import importlib.util
import multiprocessing
import os
import subprocess
import sys
import traceback
from pathlib import Path

from .adapters import Adapter, Outcome, StoreView, combine, read_ir

BIN = Path(sys.executable).parent
AIRFLOW_STATES = {"success": "succeeded", "skipped": "skipped", "failed": "failed", "upstream_failed": "not_run", "None": "not_run"}


def _state(value) -> str:
    return str(getattr(value, "value", value))


def _run_dag(folder: str, root: str, store: str, conf: dict, logical_date: str | None) -> dict:
    """In the worker: load the DAG file and run it once; what happened, as plain data."""
    # STORE and ROOT are read when the DAG file is parsed and by the tasks (run in this process)
    os.environ.update(DAGSMITH_STORE=store, DAGSMITH_ROOT=root)
    from airflow.dag_processing.dagbag import DagBag

    bag = DagBag(dag_folder=folder)
    if bag.import_errors:
        return {"import_errors": {str(k): v for k, v in bag.import_errors.items()}}
    (dag,) = bag.dags.values()
    for task in dag.tasks:
        task.retries = 0
    kwargs = {"run_conf": conf}
    if logical_date:
        kwargs["logical_date"] = dt.datetime.fromisoformat(logical_date).replace(tzinfo=dt.timezone.utc)
    dag_run = dag.test(**kwargs)
    when = dag_run.logical_date or dag_run.run_after
    return {
        "state": _state(dag_run.state),
        "run_id": str(dag_run.run_id),
        "run_date": when.date().isoformat(),
        "instances": [(ti.task_id, ti.map_index, _state(ti.state)) for ti in dag_run.get_task_instances()],
    }


def serve(conn, environ: dict, log: str) -> None:
    """The worker: Airflow configured by `environ` before its first import; runs requests. Its
    output (Airflow's and the tasks' logs) goes to the file `log`, not into the tests' output."""
    with open(log, "ab", buffering=0) as out:
        os.dup2(out.fileno(), 1)
        os.dup2(out.fileno(), 2)
    os.environ.update(environ)
    while True:
        request = conn.recv()
        if request is None:
            return
        try:
            conn.send(("ok", _run_dag(**request)))
        except BaseException:
            conn.send(("error", traceback.format_exc()))


class AirflowAdapter(Adapter):
    name = "airflow"
    slow = True

    def __init__(self):
        self.worker = None
        self.conn = None
        self.dags_folder: Path | None = None
        self.log: Path | None = None

    def unavailable(self) -> str | None:
        if importlib.util.find_spec("airflow") is None:
            return "Airflow is not installed: pip install 'dagsmith[airflow]'"
        return None

    def map_limit_options(self, limit: int) -> dict:
        return {"max_map_length": limit}

    def start(self, workspace: Path) -> None:
        home = Path(workspace) / "airflow-home"
        self.dags_folder = home / "dags"
        self.dags_folder.mkdir(parents=True)
        environ = {
            "AIRFLOW_HOME": str(home),
            "AIRFLOW__CORE__DAGS_FOLDER": str(self.dags_folder),
            "AIRFLOW__CORE__LOAD_EXAMPLES": "False",
            "AIRFLOW__CORE__UNIT_TEST_MODE": "True",
            "AIRFLOW__LOGGING__LOGGING_LEVEL": "WARNING",
            # one key for `db migrate` and the worker (trigger kwargs are stored encrypted)
            "AIRFLOW__CORE__FERNET_KEY": "Y29uZm9ybWFuY2Utc3VpdGUtZmVybmV0LWtleS0zMmI=",
            "AIRFLOW__DATABASE__SQL_ALCHEMY_CONN": f"sqlite:///{home / 'airflow.db'}",
            # Tasks train with the machine's OpenMP threads, as on a real worker; sleeping instead
            # of spinning while they wait keeps that from crawling when other processes load the CPU
            "OMP_WAIT_POLICY": "PASSIVE",
        }
        result = subprocess.run([str(BIN / "airflow"), "db", "migrate"], capture_output=True, text=True, env={**os.environ, **environ})
        assert result.returncode == 0, result.stderr[-3000:]
        context = multiprocessing.get_context("spawn")  # a fresh interpreter: no Airflow imported yet
        self.conn, child = context.Pipe()
        self.log = Path(workspace) / "airflow-worker.log"
        self.worker = context.Process(target=serve, args=(child, environ, str(self.log)), name="conformance-airflow", daemon=True)
        self.worker.start()
        child.close()
        atexit.register(self.stop)  # before multiprocessing's own exit hook, which would wait on it

    def stop(self) -> None:
        if self.worker is None:
            return
        try:
            self.conn.send(None)
        except OSError:
            pass
        self.worker.join(60)
        if self.worker.is_alive():  # Airflow's signal handlers outlive a SIGTERM: kill our worker
            self.worker.kill()
            self.worker.join(10)
        self.worker = None

    def prepare(self, spec: Path, *, env: str | None, workdir: Path):
        out = self.dags_folder / f"dagsmith-conformance-{Path(workdir).name}"
        argv = [str(BIN / "dagsmith"), "compile", str(spec), "--target", "airflow", "-o", str(out)]
        if env:
            argv += ["--env", env]
        result = subprocess.run(argv, capture_output=True, text=True, cwd=spec.parent)
        assert result.returncode == 0, f"dagsmith compile --target airflow failed:\n{result.stderr[-3000:]}"
        (ir_file,) = out.glob("*.ir.json")
        return {"folder": out, "ir": read_ir(ir_file), "root": Path(spec).parent}

    def run(self, handle, *, params: dict, run_date: str | None, workdir: Path) -> Outcome:
        from dagsmith import naming

        store = Path(workdir) / "store"
        self.conn.send({"folder": str(handle["folder"]), "root": str(handle["root"]), "store": str(store),
                        "conf": dict(params), "logical_date": run_date})
        if not self.conn.poll(900):
            raise TimeoutError("the Airflow worker did not answer within 15 minutes")
        kind, got = self.conn.recv()
        assert kind == "ok", f"the Airflow run raised (worker log: {self.log}):\n{got[-4000:]}"
        assert "import_errors" not in got, got.get("import_errors")
        ir = handle["ir"]
        step_of = {naming.airflow_id(s["id"]): s["id"] for s in ir["steps"]}
        mapped = {task_id for task_id, index, _ in got["instances"] if index >= 0}
        per_step: dict = {s["id"]: [] for s in ir["steps"]}
        native = {}
        for task_id, index, state in got["instances"]:
            native[task_id if index < 0 else f"{task_id}[{index}]"] = state
            step = step_of.get(task_id)
            if step is None or (index < 0 and task_id in mapped):
                continue  # a task of the backend's own, or a mapped task's unexpanded placeholder
            per_step[step].append(AIRFLOW_STATES.get(state, state))
        view = StoreView(str(store), got["run_id"], ir)
        status = {"success": "succeeded", "failed": "failed"}.get(got["state"], got["state"])
        if status == "succeeded" and not view.gate_passed():
            status = "gated"
        return Outcome(
            backend=self.name,
            status=status,
            steps={sid: combine(states) for sid, states in per_step.items()},
            metrics=view.metrics(),
            gates=view.gates(),
            validation=view.validation(),
            rows=view.rows(),
            items=view.items(),
            deployed=view.deployed(),
            tables=view.tables(),
            run_id=got["run_id"],
            run_date=got["run_date"],
            root=Path(handle["root"]),
            instances={sid: len(states) for sid, states in per_step.items()},
            native={**native, "worker log": str(self.log)},
        )


ADAPTER = AirflowAdapter()
