"""The Airflow backend, checked by real Airflow 3: DagBag loads every generated DAG, and
dag.test() runs them with the real dagsmith runtime (DuckDB, Great Expectations, scikit-learn)."""

from __future__ import annotations

import json
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

from airflow_helpers import REPO, load_dags, states

EXAMPLES = ["churn", "forecast", "minimal"]


@pytest.fixture
def make_data(example_copy):
    """make_data(NAME) -> a copy of the example with its data, outside the source tree."""
    return example_copy


def no_retries(dag):
    for task in dag.tasks:
        task.retries = 0


@pytest.mark.slow
@pytest.mark.parametrize("example", EXAMPLES)
def test_every_example_loads_in_dagbag(example, compile_dag):
    out = compile_dag(REPO / "examples" / example / "pipeline.yaml")
    bag = load_dags(out)
    assert bag.import_errors == {}
    assert len(bag.dags) == 1
    (dag,) = bag.dags.values()
    fanouts = [t for t in dag.tasks if t.task_id in ("train",)]
    if example != "minimal":
        assert len(fanouts) == 1  # the sweep is ONE (mapped) task


@pytest.mark.slow
def test_asset_schedule_has_an_asset_per_source(compile_dag):
    out = compile_dag(REPO / "examples" / "churn" / "pipeline.yaml")
    (dag,) = load_dags(out).dags.values()
    schedule = dag.timetable
    assert type(schedule).__name__ == "AssetOrTimeSchedule"  # cron OR new data
    assert schedule.timetable.expression == "0 3 * * 1"
    (asset,) = schedule.asset_condition.objects
    assert (asset.name, asset.uri) == ("churn-model.events", "data/events.csv")
    (watcher,) = asset.watchers  # the SQS notification itself starts the run
    assert type(watcher.trigger).__name__ == "MessageQueueTrigger"
    assert "churn-events-landed" in repr(watcher.trigger.__dict__)


@pytest.fixture
def run_env(monkeypatch, tmp_path):
    store = tmp_path / "store"
    monkeypatch.setenv("DAGSMITH_STORE", str(store))
    return store


def _run(dag, root: Path, monkeypatch, conf=None):
    monkeypatch.setenv("DAGSMITH_ROOT", str(root))
    no_retries(dag)
    return dag.test(run_conf=conf or {})


@pytest.mark.slow
def test_churn_runs_end_to_end_like_the_local_runner(compile_dag, run_env, monkeypatch, tmp_path, make_data):
    root = make_data("churn")
    out = compile_dag(root / "pipeline.yaml")
    (dag,) = load_dags(out).dags.values()
    dag_run = _run(dag, root, monkeypatch)
    got = states(dag_run)
    assert str(dag_run.state.value if hasattr(dag_run.state, "value") else dag_run.state) == "success", got
    assert all(state == "success" for state in got.values()), got
    assert sorted(k for k in got if k.startswith("train[")) == [f"train[{i}]" for i in range(6)]  # one instance per trial
    # the same metrics as `dagsmith run` on the same data
    runs = list((run_env / "runs").iterdir())
    (airflow_run,) = runs
    airflow_metrics = json.loads((airflow_run / "steps" / "evaluate" / "result.json").read_text())["metrics"]
    local = subprocess.run(
        [str(Path(sys.executable).parent / "dagsmith"), "run", str(root / "pipeline.yaml"), "--workdir", str(tmp_path / "local"), "--format", "json"],
        capture_output=True, text=True, cwd=REPO,
    )
    assert json.loads(local.stdout)["metrics"] == airflow_metrics


@pytest.mark.slow
def test_failing_gate_skips_deploy(compile_dag, run_env, monkeypatch, tmp_path, make_data):
    root = make_data("churn")
    folder = tmp_path / "churn"
    shutil.copytree(root, folder)
    spec = folder / "pipeline.yaml"
    spec.write_text(spec.read_text().replace("value: 0.75", "value: 0.999"))
    (dag,) = load_dags(compile_dag(spec)).dags.values()
    dag_run = _run(dag, folder, monkeypatch)
    got = states(dag_run)
    assert got["gate"] == "success" and got["deploy"] == "skipped" and got["notify"] == "skipped", got
    assert str(dag_run.state.value if hasattr(dag_run.state, "value") else dag_run.state) == "success"


@pytest.mark.slow
def test_failing_validation_marks_downstream_upstream_failed(compile_dag, run_env, monkeypatch, tmp_path, make_data):
    root = make_data("minimal")
    folder = tmp_path / "minimal"
    shutil.copytree(root, folder)
    spec = folder / "pipeline.yaml"
    spec.write_text(spec.read_text() + """validation:
  - name: impossible
    on: applicants
    expectations:
      - expect_table_row_count_to_be_between: {min_value: 1000000}
""")
    (dag,) = load_dags(compile_dag(spec)).dags.values()
    got = states(_run(dag, folder, monkeypatch))
    assert got["impossible"] == "failed" and got["train"] == "upstream_failed" and got["evaluate"] == "upstream_failed", got


HOSTILE = r'''"""; import os; os.system("touch MARKER") #'''


@pytest.mark.slow
def test_hostile_strings_reach_airflow_exactly_and_run_nothing(compile_dag, run_env, monkeypatch, tmp_path):
    marker = tmp_path / "MARKER"
    evil = HOSTILE.replace("MARKER", str(marker))
    values = [evil, "{{ ti.xcom_push('x', 1) }}", "{% raw %}", "${params.n}", "back\\slash\nnew line", "'''"]
    spec = tmp_path / "pipeline.yaml"
    spec.write_text(json.dumps({
        "dagsmith": 1,
        "pipeline": {"name": "hostile", "description": "\n".join(values), "tags": values[1:5] + ['"""; x=1 #']},
        "params": {"n": {"type": "string", "default": evil, "description": values[1]}},
        "sources": {"a": {"type": "csv", "uri": "a.csv"}},
        "features": {"f": {"inputs": ["a"], "sql": "SELECT *, ${params.n} AS evil, '{{ x }}' AS tpl FROM a"}},
        "steps": {"argv": {"after": ["f"], "run": {"command": [
            sys.executable, "-c", "import sys, json; open('argv.json', 'w').write(json.dumps(sys.argv[1:]))", *values[:3], "$(touch " + str(marker) + ")"]}}},
    }))
    (tmp_path / "a.csv").write_text("x\n1\n")
    out = compile_dag(spec)
    (dag,) = load_dags(out).dags.values()
    assert dag.description == "\n".join(values)
    assert set(values[1:5]) <= set(dag.tags)
    assert dag.params["n"] == evil
    assert not marker.exists()
    got = states(_run(dag, tmp_path, monkeypatch))
    assert got == {"a": "success", "f": "success", "argv": "success"}
    assert not marker.exists()
    assert json.loads((tmp_path / "argv.json").read_text()) == [*values[:3], "$(touch " + str(marker) + ")"]
    import pyarrow.parquet as pq

    (run_dir,) = list((run_env / "runs").iterdir())
    table = pq.read_table(run_dir / "steps" / "f" / "table.parquet")
    assert table.column("evil").to_pylist() == [evil] and table.column("tpl").to_pylist() == ["{{ x }}"]


def test_admission_sensor_holds_then_admits_once_and_skips_covered_runs(tmp_path, monkeypatch):
    """The dagsmith-admit sensor's poke, in-process, with Airflow-like contexts (dag.test()
    cannot create an asset-triggered run): runtime/admission.py's one meaning of min_interval."""
    import datetime as dt

    from airflow.sdk.exceptions import AirflowSkipException

    from dagsmith.backends.airflow import tasks as airflow_tasks
    from dagsmith.runtime import admission

    out = tmp_path / "build"
    subprocess.run([str(Path(sys.executable).parent / "dagsmith"), "compile", str(REPO / "examples/churn/pipeline.yaml"), "--target", "airflow", "-o", str(out)], check=True, capture_output=True, cwd=REPO)
    assert 'tasks["dagsmith-admit"] = PythonSensor(' in (out / "churn_model.py").read_text()
    store = str(tmp_path / "store")
    ir = str(out / "churn-model.ir.json")

    class Run:
        def __init__(self, run_type, queued_at):
            self.run_type, self.queued_at = run_type, queued_at

    class Event:
        def __init__(self, timestamp):
            self.timestamp = timestamp

    class Asset:
        name = "churn-model.events"

    now = dt.datetime.now(dt.timezone.utc)

    def data_run(run_id, landed):
        return {"run_id": run_id, "params": {}, "dag_run": Run("asset_triggered", landed), "triggering_asset_events": {Asset(): [Event(landed)]}}

    assert airflow_tasks.admit(ir, store, **data_run("r1", now)) is True  # the first run
    assert (Path(store) / admission.state_key("churn-model")).exists()
    later = now + dt.timedelta(seconds=5)
    assert airflow_tasks.admit(ir, store, **data_run("r2", later)) is False  # 6h not over: held (the sensor pokes again)
    with pytest.raises(AirflowSkipException, match="landed before the last run started"):
        airflow_tasks.admit(ir, store, **data_run("r3", now - dt.timedelta(seconds=60)))  # r1 read that data
    scheduled = {"run_id": "r4", "params": {}, "dag_run": Run("scheduled", later)}
    assert airflow_tasks.admit(ir, store, **scheduled) is True  # cron and manual runs always start
    state = json.loads((Path(store) / admission.state_key("churn-model")).read_text())
    assert state["run_id"] == "r4"


def test_deterministic_and_small_for_a_20000_trial_sweep(tmp_path):
    regions = ", ".join(f"r{i:03d}" for i in range(200))
    values = ", ".join(str(i) for i in range(100))
    spec = tmp_path / "wide.yaml"
    spec.write_text(f"""dagsmith: 1
pipeline: {{name: wide}}
sources: {{sales: {{type: csv, uri: s.csv}}}}
training:
  inputs: [sales]
  target: y
  partition_by: region
  partitions: [{regions}]
  model: {{estimator: sklearn.linear_model.Ridge}}
  sweep: {{method: grid, parameters: {{alpha: [{values}]}}, select: {{metric: r2, goal: max}}}}
""")
    texts = []
    for name in ("a", "b"):
        subprocess.run([str(Path(sys.executable).parent / "dagsmith"), "compile", str(spec), "--target", "airflow", "-o", str(tmp_path / name)], check=True, capture_output=True)
        texts.append((tmp_path / name / "wide.py").read_bytes())
    assert texts[0] == texts[1]
    assert len(texts[0]) < 100_000
    assert texts[0].count(b"PythonOperator.partial(") == 1


def test_backend_limits_are_compile_errors(tmp_path):
    spec = tmp_path / "p.yaml"
    spec.write_text("dagsmith: 1\npipeline: {name: p, tags: [" + "t" * 101 + "]}\nsources: {a: {type: csv, uri: a.csv}}\n")
    result = subprocess.run([str(Path(sys.executable).parent / "dagsmith"), "compile", str(spec), "--target", "airflow", "-o", str(tmp_path / "out")], capture_output=True, text=True)
    assert result.returncode == 2 and "longer than the 100 characters Airflow allows" in result.stderr
    assert not (tmp_path / "out").exists()
    spec.write_text("dagsmith: 1\npipeline: {name: p}\nsources: {a: {type: csv, uri: a.csv}}\nbackends: {airflow: {operator: kubernetes}}\n")
    result = subprocess.run([str(Path(sys.executable).parent / "dagsmith"), "compile", str(spec), "--target", "airflow", "-o", str(tmp_path / "out")], capture_output=True, text=True)
    # no image and no store: both said in one error
    assert result.returncode == 2 and "set defaults.image (an image with dagsmith" in result.stderr
    assert "backends.airflow.store (s3://bucket/prefix: the containers share no disk" in result.stderr
    assert "p.yaml:4:" in result.stderr  # at the line of backends.airflow in the spec
    assert not (tmp_path / "out").exists()


@pytest.mark.slow
def test_connections_come_from_airflow_by_name(compile_dag, run_env, monkeypatch, tmp_path):
    import sqlite3

    db = tmp_path / "warehouse.db"
    with sqlite3.connect(db) as con:
        con.execute("CREATE TABLE customers (id INTEGER)")
        con.executemany("INSERT INTO customers VALUES (?)", [(1,), (2,)])
    monkeypatch.delenv("DAGSMITH_CONN_WAREHOUSE", raising=False)
    monkeypatch.setenv("AIRFLOW_CONN_WAREHOUSE", f"sqlite:///{db}")  # an Airflow connection, by id
    monkeypatch.setenv("AIRFLOW_VAR_API_TOKEN", "s3cr3t")  # an Airflow Variable
    (tmp_path / "check.py").write_text("import os\ndef token():\n    assert os.environ['API_TOKEN'] == 's3cr3t'\n")
    spec = tmp_path / "pipeline.yaml"
    spec.write_text("""dagsmith: 1
pipeline: {name: conns}
sources:
  customers: {type: sql, connection: warehouse, query: SELECT * FROM customers}
steps:
  uses_token: {after: [customers], run: {python: "check:token"}, secrets: [API_TOKEN]}
""")
    out = compile_dag(spec)
    text = (out / "conns.py").read_text()
    assert "s3cr3t" not in text and str(db) not in text  # names only in generated code
    (dag,) = load_dags(out).dags.values()
    got = states(_run(dag, tmp_path, monkeypatch))
    assert got == {"customers": "success", "uses_token": "success"}, got


@pytest.mark.slow
def test_deploy_is_atomic_and_checked_by_dagbag(airflow_home, tmp_path):
    dags = tmp_path / "dags"
    dags.mkdir()
    (dags / "other.py").write_text("# somebody else's DAG\n")
    exe = str(Path(sys.executable).parent / "dagsmith")
    result = subprocess.run([exe, "deploy", "examples/minimal/pipeline.yaml", "--target", "airflow", "--dags-folder", str(dags)], capture_output=True, text=True, cwd=REPO)
    assert result.returncode == 0, result.stderr
    assert sorted(p.name for p in dags.iterdir()) == ["minimal.ir.json", "minimal.py", "other.py"]
    assert not list(tmp_path.glob(".dagsmith-deploy-*"))  # staging cleaned up
    assert load_dags(dags).import_errors == {}
    # When Airflow refuses the DAG, nothing changes (simulated: the compiler already rejects
    # everything this test could make Airflow refuse for real).
    before = {p.name: p.read_bytes() for p in dags.iterdir()}
    from dagsmith.backends import DeployRequest
    from dagsmith.backends.airflow import backend
    from dagsmith.errors import UsageError

    from dagsmith.compiler import compile_spec
    from dagsmith.spec import load_spec

    ir = compile_spec(load_spec(str(REPO / "examples/minimal/pipeline.yaml")))
    ir = type(ir)(**{**{f: getattr(ir, f) for f in ("pipeline", "params", "triggers", "steps", "backends", "ir_version")},
                     "pipeline": {**ir.pipeline, "description": "changed"}})
    original = backend.dagbag_import_errors
    backend.dagbag_import_errors = lambda folder: {str(folder / "minimal.py"): "Traceback...\nValueError: refused"}
    try:
        with pytest.raises(UsageError, match="Airflow cannot load the generated DAG, nothing deployed: minimal.py: ValueError: refused"):
            backend.AirflowBackend().deploy(ir, {}, DeployRequest(dags_folder=str(dags)))
    finally:
        backend.dagbag_import_errors = original
    assert {p.name: p.read_bytes() for p in dags.iterdir()} == before
    assert not list(tmp_path.glob(".dagsmith-deploy-*"))


@pytest.mark.slow
@pytest.mark.parametrize("gate_value,expected", [(0.75, "success"), (0.999, "skipped")])
def test_bash_operator_mode(compile_dag, run_env, monkeypatch, tmp_path, gate_value, expected, make_data):
    """operator: bash runs `dagsmith step` in a shell per task (dagsmith on the worker's PATH)."""
    monkeypatch.setenv("PATH", f"{Path(sys.executable).parent}:{__import__('os').environ['PATH']}")
    root = make_data("churn")
    folder = tmp_path / "churn"
    shutil.copytree(root, folder)
    spec = folder / "pipeline.yaml"
    text = spec.read_text().replace("value: 0.75", f"value: {gate_value}")
    spec.write_text(text.replace("airflow: {dag_id: churn_model, pool: ml, tags: [ml]}", "airflow: {dag_id: churn_model, pool: ml, tags: [ml], operator: bash}"))
    out = compile_dag(spec)
    assert "BashOperator(" in (out / "churn_model.py").read_text()
    monkeypatch.setenv("DAGSMITH_ROOT", str(folder))  # read where the DAG file is parsed (the worker)
    (dag,) = load_dags(out).dags.values()
    got = states(_run(dag, folder, monkeypatch, conf={"lookback_days": 45}))
    assert sorted(k for k in got if k.startswith("train[")) == [f"train[{i}]" for i in range(6)]
    assert got["deploy"] == expected and got["notify"] == expected, got
    assert got["gate"] == ("success" if expected == "success" else "skipped")
    (run_dir,) = list((run_env / "runs").iterdir())
    assert (run_dir / "steps" / "evaluate" / "manifest.json").exists()


K8S_OPTIONS = 'airflow: {dag_id: churn_model, pool: ml, tags: [ml], operator: kubernetes, namespace: ml, store: "s3://acme-ml/dagsmith"}'


def _kubernetes_spec(tmp_path) -> Path:
    folder = tmp_path / "churn"
    shutil.copytree(REPO / "examples" / "churn", folder, ignore=shutil.ignore_patterns("data"))
    spec = folder / "pipeline.yaml"
    text = spec.read_text().replace("airflow: {dag_id: churn_model, pool: ml, tags: [ml]}", K8S_OPTIONS)
    text = text.replace("steps:\n  notify:", "steps:\n  notify:\n    secrets: [SLACK_TOKEN]\n    resources: {gpu: 1}")
    spec.write_text(text)
    return spec


@pytest.mark.slow
def test_kubernetes_operator_mode_builds_pods(compile_dag, tmp_path):
    """No cluster runs here: Airflow parses the DAG, and the pods' specs are checked."""
    out = compile_dag(_kubernetes_spec(tmp_path))
    (dag,) = load_dags(out).dags.values()
    pods = {t.task_id: t for t in dag.tasks if type(t).__name__ in ("KubernetesPodOperator", "MappedOperator")}
    notify = pods["notify"]
    image, arguments = (notify.render_template(value, {}) for value in (notify.image, notify.arguments))  # literal() values
    assert image == "ghcr.io/acme/churn:1.4.2" and notify.namespace == "ml" and notify.cmds == ["dagsmith"]
    assert arguments[0] == "step" and arguments[1].startswith("s3://acme-ml/dagsmith/ir/churn-model-")
    assert notify.container_resources.limits == {"nvidia.com/gpu": "1"}
    (secret,) = notify.secrets
    assert (secret.deploy_target, secret.secret, secret.key) == ("SLACK_TOKEN", "slack-token", "SLACK_TOKEN")
    assert pods["gate"].skip_on_exit_code == [99] or pods["gate"].skip_on_exit_code == {99} or 99 in pods["gate"].skip_on_exit_code
    assert type(pods["train"]).__name__ == "MappedOperator"  # one mapped pod task for the sweep


def test_kubernetes_mode_refuses_what_pods_cannot_do(tmp_path):
    spec = _kubernetes_spec(tmp_path)
    exe = str(Path(sys.executable).parent / "dagsmith")
    local = spec.read_text().replace('store: "s3://acme-ml/dagsmith"', "store: /var/dagsmith")
    spec.write_text(local)
    result = subprocess.run([exe, "compile", str(spec), "--target", "airflow", "-o", str(tmp_path / "o")], capture_output=True, text=True)
    assert result.returncode == 2 and "share no disk: set backends.airflow.store: s3://" in result.stderr
    spec.write_text(local.replace("store: /var/dagsmith", 'store: "s3://b/p"').replace("  image: ghcr.io/acme/churn:1.4.2\n", "", 1))
    result = subprocess.run([exe, "compile", str(spec), "--target", "airflow", "-o", str(tmp_path / "o")], capture_output=True, text=True)
    # no step has an image: one error that says so, not one per step
    assert result.returncode == 2 and "runs each step in a container, and no step has an image: set defaults.image" in result.stderr
    assert "runs each step in its image" not in result.stderr and result.stderr.count(": error: ") == 1


@pytest.mark.slow
def test_kubernetes_deploy_uploads_the_ir_for_the_pods(airflow_home, tmp_path, aws_s3):
    """S3 is moto's server on 127.0.0.1 (no AWS here); Airflow's DagBag is real."""
    aws_s3.create_bucket(Bucket="acme-ml")
    dags = tmp_path / "dags"
    dags.mkdir()
    result = subprocess.run([str(Path(sys.executable).parent / "dagsmith"), "deploy", str(_kubernetes_spec(tmp_path)), "--target", "airflow", "--dags-folder", str(dags)], capture_output=True, text=True, cwd=REPO)
    assert result.returncode == 0, result.stderr
    (key,) = [o["Key"] for o in aws_s3.list_objects_v2(Bucket="acme-ml")["Contents"]]
    assert key.startswith("dagsmith/ir/churn-model-") and key.endswith(".ir.json")
    assert f"s3://acme-ml/{key}" in (dags / "churn_model.py").read_text()


@pytest.mark.slow
def test_fanouts_larger_than_max_map_length_run_in_ranges(compile_dag, run_env, monkeypatch, tmp_path, make_data):
    root = make_data("churn")
    folder = tmp_path / "churn"
    shutil.copytree(root, folder)
    spec = folder / "pipeline.yaml"
    spec.write_text(spec.read_text().replace("airflow: {dag_id: churn_model, pool: ml, tags: [ml]}", "airflow: {dag_id: churn_model, pool: ml, tags: [ml], max_map_length: 4}"))
    (dag,) = load_dags(compile_dag(spec)).dags.values()
    got = states(_run(dag, folder, monkeypatch))
    assert sorted(k for k in got if k.startswith("train[")) == ["train[0]", "train[1]", "train[2]"]  # 6 items, 2 per instance
    assert all(v == "success" for v in got.values()), got
    (run_dir,) = list((run_env / "runs").iterdir())
    assert sorted(int(p.name) for p in (run_dir / "items" / "train").iterdir()) == list(range(6))


@pytest.mark.slow
def test_dag_attributes_and_no_warnings_from_generated_code(compile_dag):
    import warnings

    out = compile_dag(REPO / "examples" / "churn" / "pipeline.yaml")
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        (dag,) = load_dags(out).dags.values()
    ours = [w for w in caught if str(out) in str(w.filename)]
    assert ours == [], [str(w.message) for w in ours]
    assert dag.description.startswith("Weekly churn model")
    assert dag.params.get_param("lookback_days").schema["type"] == "integer" and dag.params["lookback_days"] == 30
    task = dag.get_task("customers")
    assert (task.retries, task.retry_delay.total_seconds(), task.execution_timeout.total_seconds()) == (2, 300, 3600)
    assert (task.pool, task.owner) == ("ml", "growth-ml")
    assert dag.get_task("notify").retries == 0
    assert set(dag.tags) >= {"churn", "ml", "dagsmith"}


@pytest.mark.parametrize("mode", ["python", "bash", "kubernetes"])
@pytest.mark.parametrize("example", EXAMPLES)
def test_generated_code_imports_only_what_it_uses_and_compiles(mode, example, tmp_path):
    import ast

    folder = tmp_path / example
    shutil.copytree(REPO / "examples" / example, folder, ignore=shutil.ignore_patterns("data"))
    spec = folder / "pipeline.yaml"
    options = {"python": "{}", "bash": "{operator: bash}", "kubernetes": '{operator: kubernetes, store: "s3://b/p"}'}[mode]
    text = spec.read_text()
    text = text.split("\nbackends:")[0] + f"\nbackends:\n  airflow: {options}\n"
    if "image:" not in text:
        text = text.replace("sources:", "defaults: {image: 'ghcr.io/acme/x:1'}\nsources:", 1)
    spec.write_text(text)
    out = tmp_path / "out"
    result = subprocess.run([str(Path(sys.executable).parent / "dagsmith"), "compile", str(spec), "--target", "airflow", "-o", str(out)], capture_output=True, text=True)
    assert result.returncode == 0, result.stderr
    (dag_file,) = out.glob("*.py")
    tree = ast.parse(dag_file.read_text())  # valid Python
    imported = {alias.asname or alias.name.split(".")[0] for node in ast.walk(tree) if isinstance(node, (ast.Import, ast.ImportFrom)) for alias in node.names}
    used = {node.id for node in ast.walk(tree) if isinstance(node, ast.Name)}
    assert imported - used - {"annotations"} == set()


@pytest.mark.slow
def test_dag_compiled_to_a_build_folder_finds_the_spec_data_without_dagsmith_root(airflow_home, run_env, monkeypatch, tmp_path):
    """The new user's path: compile into build/airflow, run the DAG from the same checkout; relative
    data paths resolve against the spec's folder, recorded relative to the output folder."""
    base = airflow_home / "dags" / tmp_path.name  # inside the dags folder: dag.test() needs it there
    project = base / "project"
    shutil.copytree(REPO / "examples" / "minimal", project, ignore=shutil.ignore_patterns("data"))
    subprocess.run([sys.executable, str(project / "make_data.py")], check=True, capture_output=True)
    monkeypatch.chdir(base)
    monkeypatch.delenv("DAGSMITH_ROOT", raising=False)
    result = subprocess.run([str(Path(sys.executable).parent / "dagsmith"), "compile", "project/pipeline.yaml", "--target", "airflow", "-o", "build/airflow"], capture_output=True, text=True)
    assert result.returncode == 0, result.stderr
    text = (base / "build" / "airflow" / "minimal.py").read_text()
    assert '"../../project"' in text and str(base) not in text
    (dag,) = load_dags(base / "build" / "airflow").dags.values()
    no_retries(dag)
    got = states(dag.test())
    assert got == {"applicants": "success", "train": "success", "evaluate": "success"}, got


# Finding 5 of issue 22: a folder name Airflow would read as Jinja (`{{ 7*191 }}` renders 1337) or,
# ending in a template extension of the operator (BashOperator: .sh, .bash), as a template file.
TEMPLATE_FOLDER = "{{ 7*191 }}"
WHERE = "import json, os\nopen('where.json', 'w').write(json.dumps({'cwd': os.getcwd(), 'root': os.environ.get('DAGSMITH_ROOT')}))"


def _folder_spec(tmp_path, folder_name: str, options: str) -> Path:
    folder = tmp_path / folder_name
    folder.mkdir()
    (folder / "a.csv").write_text("x\n1\n")
    spec = folder / "pipeline.yaml"
    spec.write_text(json.dumps({
        "dagsmith": 1, "pipeline": {"name": "folders"},
        "sources": {"a": {"type": "csv", "uri": "a.csv"}},
        "steps": {"where": {"after": ["a"], "run": {"command": [sys.executable, "-c", WHERE]}}},
        "backends": {"airflow": json.loads(options)},
    }))
    return spec


@pytest.mark.slow
@pytest.mark.parametrize("mode, folder_name", [("python", TEMPLATE_FOLDER), ("bash", TEMPLATE_FOLDER + " spec.sh")])
def test_a_folder_named_like_a_template_reaches_the_worker_literally(mode, folder_name, airflow_home, monkeypatch, tmp_path):
    """The spec's folder (ROOT), the IR's path (the DAG file's folder) and the store go into
    templated fields (op_kwargs, env, bash_command): the worker must see the paths themselves."""
    monkeypatch.setenv("PATH", f"{Path(sys.executable).parent}:{__import__('os').environ['PATH']}")
    monkeypatch.delenv("DAGSMITH_ROOT", raising=False)  # ROOT: the spec's folder, found from the DAG file's
    store = tmp_path / folder_name / "store"
    monkeypatch.setenv("DAGSMITH_STORE", str(store))
    spec = _folder_spec(tmp_path, folder_name, json.dumps({"operator": mode}))
    out = airflow_home / "dags" / tmp_path.name / folder_name  # the IR beside the DAG file, in such a folder too
    result = subprocess.run([str(Path(sys.executable).parent / "dagsmith"), "compile", str(spec), "--target", "airflow", "-o", str(out)],
                            capture_output=True, text=True, cwd=REPO)
    assert result.returncode == 0, result.stderr
    (dag,) = load_dags(out).dags.values()
    no_retries(dag)
    got = states(dag.test())
    assert got == {"a": "success", "where": "success"}, got
    where = json.loads((spec.parent / "where.json").read_text())
    assert Path(where["cwd"]).resolve() == spec.parent.resolve()
    assert "1337" not in json.dumps(where)
    assert [p.name for p in (store / "runs").iterdir()]  # the run's data is in the store named so


@pytest.mark.parametrize("mode", ["python", "bash", "kubernetes"])
def test_every_templated_field_renders_our_values_as_they_are(mode, airflow_home, monkeypatch, tmp_path):
    """Each operator's template_fields (PythonOperator/PythonSensor: op_kwargs..., BashOperator:
    bash_command, env, cwd with template_ext .sh/.bash, KubernetesPodOperator: image, arguments,
    env_vars...), rendered as Airflow renders them: only RUN_ENV's own templates change; no path,
    store, image or env value of ours is read as Jinja or as a template file."""
    from airflow.sdk.definitions.mappedoperator import MappedOperator

    folder_name = TEMPLATE_FOLDER + " spec.sh"
    store = f"s3://bucket/{TEMPLATE_FOLDER}.sh" if mode == "kubernetes" else str(tmp_path / folder_name / "store.sh")
    options = {"operator": mode, "store": store, **({"namespace": "ml"} if mode == "kubernetes" else {})}
    spec = _folder_spec(tmp_path, folder_name, json.dumps(options))
    data = json.loads(spec.read_text())
    data["defaults"] = {"image": "ghcr.io/acme/x:1", "env": {"TEMPLATE": TEMPLATE_FOLDER, "SCRIPT": "run.sh", "RUN": "${run.id}"}}
    data["training"] = {"inputs": ["a"], "target": "x", "model": {"estimator": "sklearn.linear_model.LinearRegression"},
                        "sweep": {"method": "grid", "parameters": {"fit_intercept": [True, False]}, "select": {"metric": "r2", "goal": "max"}}}
    spec.write_text(json.dumps(data))
    out = airflow_home / "dags" / tmp_path.name / folder_name
    result = subprocess.run([str(Path(sys.executable).parent / "dagsmith"), "compile", str(spec), "--target", "airflow", "-o", str(out)],
                            capture_output=True, text=True, cwd=REPO)
    assert result.returncode == 0, result.stderr
    (dag,) = load_dags(out).dags.values()
    import datetime

    context = {"run_id": "manual__1", "params": {}, "logical_date": datetime.datetime(2024, 1, 1, tzinfo=datetime.timezone.utc)}
    rendered_all = []
    for task in dag.tasks:
        fields = task.partial_kwargs if isinstance(task, MappedOperator) else {f: getattr(task, f) for f in task.template_fields}
        for name in task.template_fields:
            if name not in fields or not fields[name]:
                continue
            rendered = task.render_template(fields[name], context)
            rendered_all.append(rendered)
            text = json.dumps(rendered, default=repr)
            assert "1337" not in text and "{%" not in text, (task.task_id, name, text)
            assert "{{" not in text.replace(TEMPLATE_FOLDER, ""), (task.task_id, name, text)  # RUN_ENV's are rendered
    text = json.dumps(rendered_all, default=repr)
    assert TEMPLATE_FOLDER in text  # the paths (or the store) really were in templated fields
    from airflow.serialization.serialized_objects import DagSerialization

    assert DagSerialization.to_dict(dag)["dag"]["tasks"]  # what the scheduler stores takes literal() values
    if mode == "kubernetes":
        pod = dag.get_task("where")
        env = pod.render_template(pod.env_vars, context)  # a dict until the pod is built
        assert (env["TEMPLATE"], env["SCRIPT"], env["DAGSMITH_RUN_ID"]) == (TEMPLATE_FOLDER, "run.sh", "manual__1")
        assert "RUN" not in env  # a reference: filled in by the runtime when the step starts
