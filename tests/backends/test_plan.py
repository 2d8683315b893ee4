"""The execution plan every backend is written against (backends/plan.py), the kubernetes pieces
they share (backends/kubernetes.py) and declared capabilities (backends/problems.py)."""

from __future__ import annotations

import subprocess
import sys
from dataclasses import replace
from pathlib import Path

import pytest

from dagsmith import naming
from dagsmith.backends import kubernetes
from dagsmith.backends.airflow.backend import AirflowBackend
from dagsmith.backends.plan import ADMIT_TASK, build_plan, ranges_task_id
from dagsmith.backends.problems import Capabilities, check_capabilities
from dagsmith_testing import REPO, compile_path

CHURN = REPO / "examples" / "churn" / "pipeline.yaml"
DAGSMITH = str(Path(sys.executable).parent / "dagsmith")


def test_churn_plan_tasks_edges_scopes_and_commands(in_repo):
    plan = build_plan(compile_path(CHURN), store="s3://b/p", max_ranges=4)
    ids = [task.id for task in plan.tasks]
    assert ids[0] == ADMIT_TASK  # min_interval: admission first, every root waits for it
    roots = [step.id for step in plan.ir.steps if not step.depends_on]
    assert all(plan.task(root).upstream == (ADMIT_TASK,) for root in roots)
    listing, train = plan.task(ranges_task_id("train")), plan.task("train")
    assert train.maps_over == listing.id and train.upstream == (listing.id,)
    assert listing.upstream == tuple(sorted(plan.ir.step("train").depends_on))
    # a gate's "no" skips deploy and what follows; admission's skips everything
    assert plan.task("gate").skips == ("deploy", "notify")
    assert set(plan.task(ADMIT_TASK).skips) == set(ids) - {ADMIT_TASK}
    # ONE command builder: the IR, the store, the range and the skip code
    assert train.command.argv("ir.json", item='{"start":0,"stop":2}') == [
        "dagsmith", "step", "ir.json", "train", "--store", "s3://b/p", "--item", '{"start":0,"stop":2}']
    assert listing.command.argv("ir.json") == ["dagsmith", "ranges", "ir.json", "train", "--max", "4", "--store", "s3://b/p"]
    assert plan.task("gate").command.argv("ir.json", outcome="/o.json")[-4:] == ["--outcome", "/o.json", "--skip-exit-code", "99"]
    assert plan.task(ADMIT_TASK).command.argv("ir.json") == ["dagsmith", "admit", "ir.json", "--store", "s3://b/p", "--skip-exit-code", "99"]
    with pytest.raises(Exception, match="takes an item"):
        train.command.argv("ir.json")  # a fan-out's task without its range is a bug, not a silent run of all items


def test_synthetic_ids_cannot_collide_with_spec_names(write_spec):
    """The issue's reproduction: a step named min_interval_guard next to an on_new_data trigger
    compiled to two tasks of one id and a cycle. Now that name is just a name, and the ids the
    backends add use a prefix the validator refuses."""
    spec = write_spec("""dagsmith: 1
pipeline: {name: p}
sources: {events: {type: csv, uri: e.csv}}
steps:
  min_interval_guard: {after: [events], run: {command: [echo, hi]}}
  train__batches: {after: [events], run: {command: [echo, hi]}}
triggers: {on_new_data: [{source: events, min_interval: 1h}]}
""")
    plan = build_plan(compile_path(spec))
    ids = [task.id for task in plan.tasks]
    assert len(ids) == len(set(ids)) and naming.collisions(ids) == []
    assert plan.task("min_interval_guard").upstream == ("events",)
    files = AirflowBackend().emit(plan.ir, {})
    text = files["p.py"]
    assert text.count('task_id="min_interval_guard"') == 1 and text.count('task_id="dagsmith-admit"') == 1
    compile(text, "p.py", "exec")
    bad = write_spec(Path(spec).read_text().replace("min_interval_guard:", "dagsmith-admit:"), "bad.yaml")
    result = subprocess.run([DAGSMITH, "validate", bad], capture_output=True, text=True)
    assert result.returncode == 2
    assert "bad.yaml:5:3: error: steps.dagsmith-admit: 'dagsmith-admit': names starting with 'dagsmith' are reserved" in result.stderr


def test_plan_refuses_an_ir_whose_names_collide_with_its_tasks(in_repo):
    """Even an IR not made by the compiler (hand-edited) cannot put two tasks under one id."""
    ir = compile_path(CHURN)
    step = ir.step("notify")
    forged = replace(ir, steps=ir.steps[:-1] + (replace(step, id=ADMIT_TASK),))
    with pytest.raises(Exception, match="duplicate task ids"):
        build_plan(forged)


def test_distributed_training_pod_asks_for_every_worker(write_spec):
    spec = write_spec("""dagsmith: 1
pipeline: {name: p}
defaults: {image: "img:1"}
sources: {t: {type: csv, uri: t.csv}}
training:
  inputs: [t]
  target: y
  model: {estimator: dagsmith.estimators.TorchMLPClassifier}
  distributed: {framework: torch, workers: 2, gpus_per_worker: 1}
  resources: {cpu: "1500m", memory: 3Gi, gpu: 2}
""")
    ir = compile_path(spec)
    train = ir.step("train")
    # the workers are processes in one pod: it asks for what all of them need
    assert kubernetes.pod_resources(train) == {"requests": {"cpu": "3000m", "memory": "6Gi"}, "limits": {"nvidia.com/gpu": "2"}}
    (problem,) = kubernetes.check(ir, "ml", ("backends", "argo"))
    assert problem.level == "warning" and problem.path == ("training", "resources", "gpu")
    assert "disagree" in problem.message and "the pod asks for 2 GPUs" in problem.message
    assert kubernetes.scale("0.5", 3) == "1.5" and kubernetes.scale("2Gi", 1) == "2Gi"
    (error,) = kubernetes.check(ir, "Not_A_Namespace", ("backends", "argo"))[:1]
    assert error.level == "error" and error.path == ("backends", "argo", "namespace")


def test_secret_refs_name_kubernetes_secrets_never_values(write_spec):
    spec = write_spec("""dagsmith: 1
pipeline: {name: p}
sources: {c: {type: sql, connection: Warehouse_EU, query: SELECT 1}}
steps:
  notify: {after: [c], run: {command: [echo]}, secrets: [SLACK_WEBHOOK]}
""")
    ir = compile_path(spec)
    (conn,) = kubernetes.secret_refs(ir.step("c"))
    assert (conn.env, conn.secret, conn.key) == ("DAGSMITH_CONN_WAREHOUSE_EU", "dagsmith-conn-warehouse-eu", "uri")
    (secret,) = kubernetes.secret_refs(ir.step("notify"))
    assert (secret.env, secret.secret, secret.key) == ("SLACK_WEBHOOK", "slack-webhook", "SLACK_WEBHOOK")


def test_capabilities_report_every_problem_at_once(in_repo):
    ir = compile_path(CHURN)
    pods = Capabilities("argo", "a pod per step", runs_images=True, shared_disk=False, options_path=("backends", "argo"))
    no_image = replace(ir, steps=tuple(replace(s, image=None) if s.kind in ("source", "custom") else s for s in ir.steps))
    problems = check_capabilities(no_image, pods, store="/var/data")
    assert [p.path for p in problems if p.level == "error"] == [("backends", "argo", "store")] + [
        tuple(s.origin) + ("image",) for s in no_image.steps if not s.image]
    local_data = [p for p in problems if p.level == "warning"]
    assert [p.path for p in local_data] == [("sources", name, "uri") for name in ("customers", "events", "plans")]
    assert "cannot see its files: use an s3:// URI" in local_data[0].message
    worker = Capabilities("airflow", "operator mode python", runs_images=False, shared_disk=True)
    warnings = check_capabilities(ir, worker, store=None)
    assert [(p.level, p.path) for p in warnings] == [("warning", ("defaults", "image")), ("warning", ("defaults", "resources"))]


def test_compile_prints_warnings_and_errors_at_their_lines(tmp_path, in_repo):
    result = subprocess.run([DAGSMITH, "compile", str(CHURN), "--target", "airflow", "-o", str(tmp_path / "ok")], capture_output=True, text=True)
    assert result.returncode == 0, result.stderr
    assert "examples/churn/pipeline.yaml:19:10: warning: defaults.image: does not apply in operator mode python" in result.stderr
    spec = tmp_path / "k8s.yaml"
    text = CHURN.read_text().replace("airflow: {dag_id: churn_model, pool: ml, tags: [ml]}", 'airflow: {operator: kubernetes, namespace: Bad_NS, store: "/var/{{ x }}"}')
    spec.write_text(text.replace("  image: ghcr.io/acme/churn:1.4.2\n", "", 1))
    result = subprocess.run([DAGSMITH, "compile", str(spec), "--target", "airflow", "-o", str(tmp_path / "out")], capture_output=True, text=True)
    assert result.returncode == 2, result.stderr
    errors = [line for line in result.stderr.splitlines() if ": error: " in line]
    assert any("backends.airflow.store: " in e and "share no disk" in e for e in errors)
    assert any("backends.airflow.namespace: 'Bad_NS' is not a Kubernetes namespace name" in e for e in errors)
    assert not any("{{" in e for e in errors)  # a store with '{{' is literal() in the DAG file, not an error
    # no step has an image: said once, at the backend's options, not once per step
    assert sum("no step has an image: set defaults.image" in e for e in errors) == 1
    assert not any("runs each step in its image" in e for e in errors)
    assert all(e.startswith(f"{spec}:") for e in errors)  # each at its line in the spec
    assert not (tmp_path / "out").exists()  # nothing written


def test_generated_files_find_the_spec_folder_from_where_they_are_written(in_repo, tmp_path):
    ir = compile_path(CHURN)
    plan = build_plan(ir, output_dir="build/airflow", spec_dir="examples/churn")
    assert plan.root == "../../examples/churn"
    assert build_plan(ir).root is None  # printed: unknown, the files' own folder
    text = AirflowBackend().emit(ir, ir.backends["airflow"], output_dir="build/airflow", spec_dir="examples/churn")["churn_model.py"]
    assert 'os.path.normpath(Path(__file__).parent / "../../examples/churn")' in text
    assert str(REPO) not in text  # no absolute path
