"""The Argo backend's output, read back: its graph equals the plan's, its names are valid and
distinct (or a compile error), what Argo cannot take is refused at its spec position, and the
20,000-trial spec stays one task in a small WorkflowTemplate. (Strict schema validation is in
test_schemas.py; execution in the conformance suite.)"""

from __future__ import annotations

import re
import sys
from pathlib import Path

import pytest
import yaml
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from dagsmith.backends import get
from dagsmith.backends.argo.workflow import task_name
from dagsmith.cli import main
from dagsmith.compiler import compile_spec
from dagsmith.spec import load_spec

from backend_argo import schemas

REPO = Path(__file__).resolve().parents[2]
EXAMPLES = sorted(p.parent.name for p in (REPO / "examples").glob("*/pipeline.yaml"))
DNS1123 = re.compile(r"[a-z0-9]([-a-z0-9]*[a-z0-9])?", re.ASCII)


def sweep_spec() -> str:
    from dagsmith_testing import benchmark_module

    return benchmark_module("compile").sweep_spec()


def compiled(path) -> tuple[object, dict[str, str]]:
    ir = compile_spec(load_spec(str(path)))
    backend = get("argo")
    return ir, backend.emit(ir, ir.backends.get("argo", {}))


def workflow_template(files: dict[str, str]) -> dict:
    (name,) = [n for n in files if n.endswith(".workflow-template.yaml")]
    return yaml.safe_load(files[name])


def graph_of(template: dict) -> dict:
    """What the YAML says, read back independently of the emitter: per main-DAG task, its
    upstream tasks (`depends` of plain names joined by &&), what it maps over (withParam, also
    through an items DAG template) and whose outcomes it waits for (`when`)."""
    templates = {t["name"]: t for t in template["spec"]["templates"]}
    main_dag = templates[template["spec"]["entrypoint"]]["dag"]["tasks"]
    out = {}
    for task in main_dag:
        depends = task.get("depends")
        terms = depends.split(" && ") if depends else []
        assert all(re.fullmatch(r"[a-z0-9-]+(\.Succeeded)?", term) for term in terms), depends
        upstream = tuple(sorted(term.removesuffix(".Succeeded") for term in terms))
        succeeded = {term.removesuffix(".Succeeded") for term in terms if term.endswith(".Succeeded")}
        maps_over = None
        param = task.get("withParam")
        called = templates[task["template"]]
        if param is None and "dag" in called:  # the items template of a fan-out under max_parallel
            (inner,) = called["dag"]["tasks"]
            assert inner["withParam"] == "{{inputs.parameters.ranges}}"
            (arg,) = task["arguments"]["parameters"]
            param = arg["value"]
        if param is not None:
            maps_over = re.fullmatch(r"\{\{tasks\.([a-z0-9-]+)\.outputs\.parameters\.ranges\}\}", param).group(1)
        deciders = tuple(sorted(re.findall(r"\{\{tasks\.([a-z0-9-]+)\.outputs\.parameters\.status\}\}", task.get("when") or "")))
        # every task whose output it reads must have Succeeded first: no `when`/withParam reads a Skipped task
        assert succeeded == set(deciders) | ({maps_over} if maps_over else set()), (task["name"], depends)
        out[task["name"]] = {"upstream": upstream, "maps_over": maps_over, "deciders": deciders}
    return out


def graph_of_plan(plan) -> dict:
    out = {}
    for task in plan.tasks:
        deciders = tuple(sorted(task_name(d.id) for d in plan.tasks if task.id in d.skips))
        read = {task_name(u) for u in task.upstream} | set(deciders) | ({task_name(task.maps_over)} if task.maps_over else set())
        out[task_name(task.id)] = {"upstream": tuple(sorted(read)),
                                   "maps_over": task_name(task.maps_over) if task.maps_over else None, "deciders": deciders}
    return out


@pytest.mark.parametrize("example", EXAMPLES)
def test_the_yaml_read_back_is_the_plans_graph(example):
    ir, files = compiled(REPO / "examples" / example / "pipeline.yaml")
    plan = get("argo").plan(ir, ir.backends.get("argo", {}))
    assert graph_of(workflow_template(files)) == graph_of_plan(plan)


def test_churn_maps_gates_and_admission():
    ir, files = compiled(REPO / "examples" / "churn" / "pipeline.yaml")
    graph = graph_of(workflow_template(files))
    assert graph["train"]["maps_over"] == "dagsmith-ranges-train"
    assert graph["deploy"]["deciders"] == ("dagsmith-admit", "gate") and graph["notify"]["deciders"] == ("dagsmith-admit", "gate")
    assert graph["evaluate"]["deciders"] == ("dagsmith-admit",)
    template = workflow_template(files)
    by_name = {t["name"]: t for t in template["spec"]["templates"]}
    assert by_name["train-items"]["parallelism"] == 6  # max_parallel
    gate = by_name["gate"]
    assert gate["outputs"]["parameters"] == [{"name": "status", "valueFrom": {"default": "not-run", "path": "/tmp/dagsmith/status"}}]
    assert "--skip-exit-code" not in gate["container"]["args"] and gate["container"]["args"][-2:] == ["--status", "/tmp/dagsmith/status"]
    assert by_name["dagsmith-admit"]["container"]["args"][-2:] == ["--status", "/tmp/dagsmith/status"]  # holds by exit code 75 + retry
    assert by_name["dagsmith-admit"]["retryStrategy"]["retryPolicy"] == "Always"
    assert template["spec"]["arguments"]["parameters"][0] == {"name": "lookback_days", "value": "30"}
    notify = by_name["notify"]["container"]
    assert notify["image"] == "ghcr.io/acme/churn:1.4.2" and notify["command"] == ["dagsmith"]
    cron = yaml.safe_load(files["churn-model.cron-workflow.yaml"])
    assert cron["spec"] == {"concurrencyPolicy": "Forbid", "schedules": ["0 3 * * 1"], "timezone": "UTC",
                            "workflowSpec": {"workflowTemplateRef": {"name": "churn-model"}}}
    source = yaml.safe_load(files["churn-model.event-source.yaml"])
    assert source["spec"]["sqs"]["events"] == {"jsonBody": True, "queue": "churn-events-landed", "queueAccountId": "123456789012",
                                               "region": "eu-west-1", "waitTimeSeconds": 20}


def test_output_is_deterministic():
    _, first = compiled(REPO / "examples" / "churn" / "pipeline.yaml")
    _, second = compiled(REPO / "examples" / "churn" / "pipeline.yaml")
    assert first == second


def test_twenty_thousand_trials_are_one_task_in_a_small_template(tmp_path):
    spec = tmp_path / "pipeline.yaml"
    spec.write_text(sweep_spec() + "defaults: {image: ghcr.io/acme/sweep:1}\nbackends:\n  argo: {store: 's3://b/p'}\n")
    ir, files = compiled(spec)
    text = files["sweep-20k.workflow-template.yaml"]
    assert len(text.encode()) < 100_000
    graph = graph_of(yaml.safe_load(text))
    assert graph["train"]["maps_over"] == "dagsmith-ranges-train"
    ranges = {t["name"]: t for t in yaml.safe_load(text)["spec"]["templates"]}["dagsmith-ranges-train"]
    assert ranges["container"]["args"][3:5] == ["--max", "1000"]  # 20,000 items run as 1,000 pods of 20


def spec_text(body: str, argo: str = "{store: 's3://acme/dagsmith'}") -> str:
    return f"""dagsmith: 1
pipeline: {{name: p}}
defaults: {{image: 'ghcr.io/acme/p:1'}}
sources: {{t: {{type: csv, uri: 's3://acme/t.csv'}}}}
{body}
backends:
  argo: {argo}
"""


def compile_argo(capsys, write_spec, text: str):
    path = write_spec(text)
    code = main(["compile", path, "--target", "argo", "-o", "out"])
    return code, capsys.readouterr().err


@pytest.mark.parametrize("body, argo, message", [
    ("", "{}", "backends.argo.store: Argo Workflows runs each task in its own container, which share no disk"),
    ("", "{store: /data/runs}", "set backends.argo.store: s3://bucket/prefix"),
    ("", "{store: 's3://a/{{workflow.name}}'}", "backends.argo.store: 's3://a/{{workflow.name}}': Argo reads '{{' in a workflow as a variable"),
    ("", "{store: 's3://a/b', max_fanout_pods: 9000}", "backends.argo.max_fanout_pods: must be <= 6000, got 9000"),
    ("", "{store: 's3://a/b', pod_gc: Sometimes}", "backends.argo.pod_gc: must be one of: OnPodCompletion"),
    ("triggers: {on_new_data: [{source: t, queue: 'https://example.com/q'}]}", None,
     "triggers.on_new_data[0].queue: 'https://example.com/q' is not an SQS queue URL"),
])
def test_what_argo_cannot_take_is_an_error_at_its_line(capsys, write_spec, body, argo, message):
    code, err = compile_argo(capsys, write_spec, spec_text(body, argo) if argo else spec_text(body))
    assert code == 2 and message in err, err
    assert re.search(r"pipeline\.yaml:\d+:\d+: error: ", err), err
    assert not Path("out").exists()


def test_a_source_without_a_queue_gets_a_webhook_and_a_warning(capsys, write_spec):
    code, err = compile_argo(capsys, write_spec, spec_text("triggers: {on_new_data: [{source: t}]}"))
    assert code == 0, err
    assert "warning: triggers.on_new_data[0]: no queue: Argo Events cannot listen to a bucket itself" in err
    assert "the Secret 'p-webhook-token', which you create" in err and "http://p-eventsource-svc:12000/p/t" in err
    source = yaml.safe_load(Path("out/p.event-source.yaml").read_text())
    schemas.check(source)
    # spec.service: without it Argo Events makes no Service (argo-events v1.9.11
    # pkg/reconciler/eventsource/resource.go:425-430), and the one it makes is <name>-eventsource-svc (:437)
    assert source["spec"] == {"webhook": {"t": {"endpoint": "/p/t", "method": "POST", "port": "12000", "url": "http://p-eventsource-svc:12000",
                                                "authSecret": {"name": "p-webhook-token", "key": "token"}}},
                              "service": {"ports": [{"name": "webhook", "port": 12000, "targetPort": 12000}]},
                              "template": {"serviceAccountName": "p-eventsource"}}
    sensor = yaml.safe_load(Path("out/p.sensor.yaml").read_text())
    schemas.check(sensor)
    assert sensor["spec"]["template"] == {"serviceAccountName": "p-sensor"}
    assert "filters" not in sensor["spec"]["dependencies"][0]  # a webhook's payload is ours: {"key": ...}
    (trigger,) = sensor["spec"]["triggers"]
    assert [p["src"] for p in trigger["parameters"]] == [{"dependencyName": "t", "contextKey": "time"}]  # never the event's data
    workflow = trigger["template"]["argoWorkflow"]["source"]["resource"]
    assert workflow["spec"]["workflowTemplateRef"] == {"name": "p"}
    assert [p["name"] for p in workflow["spec"]["arguments"]["parameters"]] == ["dagsmith-trigger-source", "dagsmith-trigger-at"]


def test_long_names_are_truncated_with_a_hash_cron_to_52(capsys, write_spec):
    name = ("a-long-pipeline-name-" * 3)[:60]  # pipeline names have at most 63 characters
    code, err = compile_argo(capsys, write_spec, spec_text("triggers: {schedule: '@daily'}").replace("name: p}", f"name: {name}}}"))
    assert code == 0, err
    (template_file,) = Path("out").glob("*.workflow-template.yaml")
    template, cron = yaml.safe_load(template_file.read_text()), yaml.safe_load(next(Path("out").glob("*.cron-workflow.yaml")).read_text())
    assert template["metadata"]["name"] == name and len(cron["metadata"]["name"]) == 52
    assert DNS1123.fullmatch(template["metadata"]["name"]) and DNS1123.fullmatch(cron["metadata"]["name"])
    assert cron["spec"]["workflowSpec"]["workflowTemplateRef"]["name"] == name
    assert cron["metadata"]["name"][:43] == name[:43] and cron["metadata"]["name"][43] == "-"  # truncated + "-" + 8 hex


NAME = st.from_regex(r"[A-Za-z0-9][A-Za-z0-9_-]{0,90}", fullmatch=True).filter(lambda n: not n.lower().startswith("dagsmith"))


@settings(max_examples=60, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(names=st.lists(NAME, min_size=1, max_size=6, unique=True))
def test_random_step_names_become_valid_distinct_argo_names_or_a_compile_error(tmp_path_factory, names):
    folder = tmp_path_factory.mktemp("names")
    steps = "\n".join(f"  {n!r}: {{after: [t], run: {{command: [echo, hi]}}}}" for n in names)
    spec = folder / "pipeline.yaml"
    spec.write_text(spec_text("steps:\n" + steps))
    try:
        ir, files = compiled(spec)
    except Exception as exc:  # a spec or backend error, never anything else
        from dagsmith.errors import DagsmithError

        assert isinstance(exc, DagsmithError), repr(exc)
        assert "collide" in str(exc) or "both become" in str(exc) or "reserved" in str(exc) or "name" in str(exc), str(exc)
        return
    template = workflow_template(files)
    task_names = [t["name"] for t in template["spec"]["templates"][0]["dag"]["tasks"]]
    template_names = [t["name"] for t in template["spec"]["templates"]]
    for group in (task_names, template_names):
        assert len(set(group)) == len(group)
        assert all(len(n) <= 63 and DNS1123.fullmatch(n) for n in group), group
    annotated = {t["metadata"]["annotations"]["dagsmith.dev/task"] for t in template["spec"]["templates"] if "metadata" in t}
    assert set(names) <= annotated


def test_a_step_named_like_a_generated_template_is_a_compile_error(capsys, write_spec):
    sweep = """training:
  inputs: [t]
  target: y
  model: {estimator: sklearn.linear_model.Ridge}
  sweep: {method: grid, parameters: {alpha: [1, 2]}, max_parallel: 2, select: {metric: r2, goal: max}}
steps:
  train-items: {after: [train], run: {command: [echo]}}"""
    code, err = compile_argo(capsys, write_spec, spec_text(sweep))
    assert code == 2 and "pipeline.yaml:11:16: error: steps.train-items: task 'train-items' and the item template of 'train' both become the Argo template 'train-items'" in err, err


def test_without_hera_the_target_says_what_to_install(capsys, write_spec, monkeypatch):
    import builtins

    real_import = builtins.__import__

    def no_hera(name, *args, **kwargs):
        if name == "hera" or name.startswith("hera."):
            raise ModuleNotFoundError(f"No module named {name!r}", name=name)
        return real_import(name, *args, **kwargs)

    for module in [m for m in sys.modules if m.startswith("dagsmith.backends.argo")]:
        monkeypatch.delitem(sys.modules, module)
    monkeypatch.setattr(builtins, "__import__", no_hera)
    code, err = compile_argo(capsys, write_spec, spec_text(""))
    assert code == 2 and "--target argo needs Hera: pip install 'dagsmith[argo]'" in err, err


@pytest.mark.slow
def test_a_workflow_template_over_etcds_limit_is_a_compile_error(capsys, write_spec):
    # 150 steps (within Argo's 200 templates), each passed 150 params (one env var each)
    steps = "\n".join(f"  s{i:04d}: {{after: [{'t' if i == 0 else f's{i - 1:04d}'}], run: {{command: [echo]}}}}" for i in range(150))
    params = "\n".join(f"  p{i:04d}: {{type: string, default: x}}" for i in range(150))
    code, err = compile_argo(capsys, write_spec, spec_text("params:\n" + params + "\nsteps:\n" + steps))
    assert code == 2 and "p.workflow-template.yaml would be" in err and "must stay under 1,048,576" in err, err[-500:]
    assert not Path("out").exists()


def test_a_210_step_spec_is_refused_at_the_step_past_argos_200_items(capsys, write_spec):
    """Argo 4's CRDs take at most 200 templates and 200 DAG tasks (maxItems): a 210-step spec is
    a compile error at the first step past the limit, and 198 steps (+ the source + the DAG
    template = 200 templates) compile and pass the full CRDs."""
    from backend_argo import schemas

    def chain(n):
        return "steps:\n" + "\n".join(f"  s{i:04d}: {{after: [{'t' if i == 0 else f's{i - 1:04d}'}], run: {{command: [echo]}}}}"
                                       for i in range(n))

    code, err = compile_argo(capsys, write_spec, spec_text(chain(210)))
    assert code == 2, err
    (line,) = [e for e in err.splitlines() if "error:" in e]
    assert "steps.s0198:" in line and "211 Argo DAG tasks in 212 templates" in line and "at most 200" in line, line
    assert line.startswith("pipeline.yaml:") and not Path("out").exists()
    code, err = compile_argo(capsys, write_spec, spec_text(chain(198)))
    assert code == 0, err
    document = yaml.safe_load(Path("out/p.workflow-template.yaml").read_text())
    assert len(document["spec"]["templates"]) == 200
    schemas.check(document)  # the full CRD too (maxItems: 200)
    document["spec"]["templates"].append(dict(document["spec"]["templates"][-1], name="one-more"))
    with pytest.raises(schemas.SchemaError, match=r"spec.templates: .* is too long"):
        schemas.check(document)


def test_a_parameter_default_argo_would_substitute_stays_in_the_ir(capsys, write_spec):
    """Argo rewrites '{{...}}' in a workflow's arguments: such a default is passed as the marker
    the runtime reads as "the spec's default" (the value itself is in the IR)."""
    code, err = compile_argo(capsys, write_spec, spec_text("params:\n  label: {type: string, default: 'a {{workflow.name}} b', enum: ['a {{workflow.name}} b', c], description: 'x {{y}}'}\n  n: {type: integer, default: 3}"))
    assert code == 0, err
    arguments = {p["name"]: p for p in yaml.safe_load(Path("out/p.workflow-template.yaml").read_text())["spec"]["arguments"]["parameters"]}
    assert arguments["label"] == {"name": "label", "value": "dagsmith:spec-default", "description": "x {\u200b{y}} (default: the spec's, which Argo would substitute)"}
    assert arguments["n"] == {"name": "n", "value": "3"}
    from dagsmith.runtime import load_ir
    from dagsmith.runtime.context import RunValues

    ir = load_ir("out/p.ir.json")
    assert RunValues.from_env(ir, {"DAGSMITH_PARAM_label": "dagsmith:spec-default"}).params["label"] == "a {{workflow.name}} b"
    assert RunValues.from_env(ir, {"DAGSMITH_PARAM_label": "c"}).params["label"] == "c"


def _by_kind(doc: dict) -> dict:
    out: dict = {}
    for item in doc["items"]:
        out.setdefault(item["kind"], {})[item["metadata"]["name"]] = item
    return out


def test_prerequisites_give_each_account_only_what_it_needs(capsys, write_spec):
    """The manifest a cluster admin applies first: strictly valid (each item against the
    Kubernetes type, apiVersion rbac.authorization.k8s.io/v1 for Role and RoleBinding), three
    accounts, and only the Sensor's may create Workflows."""
    code, err = compile_argo(capsys, write_spec, spec_text("triggers: {on_new_data: [{source: t}]}", "{store: 's3://a/b', namespace: ml}"))
    assert code == 0, err
    doc = yaml.safe_load(Path("out/p.prerequisites.yaml").read_text())
    schemas.check(doc)
    kinds = _by_kind(doc)
    assert set(kinds["ServiceAccount"]) == {"p-steps", "p-sensor", "p-eventsource"}
    assert all(r["apiVersion"] == "rbac.authorization.k8s.io/v1" for k in ("Role", "RoleBinding") for r in kinds[k].values())
    steps, sensor = kinds["Role"]["p-steps"]["rules"], kinds["Role"]["p-sensor"]["rules"]
    assert steps == [{"apiGroups": ["argoproj.io"], "resources": ["workflowtaskresults"], "verbs": ["create", "patch"]}]
    assert {"apiGroups": ["argoproj.io"], "resources": ["workflows"], "verbs": ["create", "list"]} in sensor
    assert {"apiGroups": ["argoproj.io"], "resources": ["workflowtemplates"], "verbs": ["get"]} in sensor
    assert "p-eventsource" not in kinds["Role"]  # it needs no Kubernetes API
    for name, binding in kinds["RoleBinding"].items():
        assert binding["roleRef"] == {"apiGroup": "rbac.authorization.k8s.io", "kind": "Role", "name": name}
        assert binding["subjects"] == [{"kind": "ServiceAccount", "name": name, "namespace": "ml"}]
    assert kinds["EventBus"]["default"]["spec"] == {"jetstream": {"version": "latest"}}
    template = yaml.safe_load(Path("out/p.workflow-template.yaml").read_text())
    sensor_doc = yaml.safe_load(Path("out/p.sensor.yaml").read_text())
    source = yaml.safe_load(Path("out/p.event-source.yaml").read_text())
    assert template["spec"]["serviceAccountName"] == "p-steps" != sensor_doc["spec"]["template"]["serviceAccountName"] == "p-sensor"
    assert source["spec"]["template"]["serviceAccountName"] == "p-eventsource"
    # the Argo Server deploys the pipeline's resources; the prerequisites are kubectl's
    files = {p.name: p.read_text() for p in Path("out").glob("*.yaml")}
    assert [d["kind"] for d in get("argo").documents(files)] == ["WorkflowTemplate", "EventSource", "Sensor"]


def test_prerequisites_of_a_pipeline_without_triggers_and_of_distributed_training(tmp_path):
    ir, files = compiled(REPO / "examples" / "minimal" / "pipeline.yaml")
    doc = yaml.safe_load(next(t for n, t in files.items() if n.endswith(".prerequisites.yaml")))
    schemas.check(doc)
    assert sorted(i["kind"] for i in doc["items"]) == ["Role", "RoleBinding", "ServiceAccount"]
    spec = tmp_path / "pipeline.yaml"
    spec.write_text(spec_text("training: {inputs: [t], target: y, model: {estimator: sklearn.linear_model.LinearRegression},"
                              " distributed: {framework: torch, workers: 2}}", "{store: 's3://a/b', service_account: runner}"))
    ir, files = compiled(spec)
    doc = yaml.safe_load(files["p.prerequisites.yaml"])
    schemas.check(doc)
    kinds = _by_kind(doc)
    assert "ServiceAccount" not in kinds  # `runner` is the user's own: it is bound, not made
    assert kinds["Role"]["runner"]["rules"][1] == {"apiGroups": ["kubeflow.org"], "resources": ["pytorchjobs"], "verbs": ["create", "get", "delete"]}


def test_a_sensor_sharing_the_pods_account_is_an_error(capsys, write_spec):
    code, err = compile_argo(capsys, write_spec, spec_text("triggers: {on_new_data: [{source: t}]}",
                                                           "{store: 's3://a/b', service_account: runner, sensor_service_account: runner}"))
    assert code == 2 and "backends.argo.sensor_service_account: the Sensor and the workflow's pods both run as 'runner'" in err, err


def test_a_broken_prerequisite_fails_the_schema_check():
    role = {"apiVersion": "rbac.authorization.k8s.io/v1", "kind": "Role", "metadata": {"name": "r"},
            "rules": [{"apiGroups": [""], "resources": ["pods"], "verbs": ["get"]}]}
    schemas.check({"apiVersion": "v1", "kind": "List", "items": [role]})
    for broken, message in [({**role, "apiVersion": "v1"}, "is not 'rbac.authorization.k8s.io/v1'"),
                            ({**role, "rules": [{"resources": ["pods"], "verb": ["get"]}]}, "Additional properties"),
                            ({"apiVersion": "rbac.authorization.k8s.io/v1", "kind": "RoleBinding", "metadata": {"name": "b"}, "subjects": []}, "'roleRef' is a required")]:
        with pytest.raises(schemas.SchemaError, match=re.escape(message)):
            schemas.check({"apiVersion": "v1", "kind": "List", "items": [broken]})


def test_the_sqs_sensor_filters_foreign_messages(tmp_path):
    from backend_argo.interpreter import sensor_workflows

    spec = tmp_path / "pipeline.yaml"
    spec.write_text(spec_text("triggers: {on_new_data: [{source: t, queue: 'https://sqs.eu-west-1.amazonaws.com/123456789012/q'}]}"))
    ir, files = compiled(spec)
    sensor = yaml.safe_load(files["p.sensor.yaml"])
    schemas.check(sensor)

    def event(body) -> dict:
        return {"context": {"time": "2024-02-29T10:00:00Z"}, "data": {"body": body}}

    def record(bucket: str, key: str, name: str = "ObjectCreated:Put") -> dict:
        return {"Records": [{"eventName": name, "s3": {"bucket": {"name": bucket}, "object": {"key": key}}}]}

    (wf,) = sensor_workflows(sensor, {"t": event(record("acme", "t.csv"))})
    assert [p["name"] for p in wf["spec"]["arguments"]["parameters"]] == ["dagsmith-trigger-source", "dagsmith-trigger-at"]
    test_event = {"Service": "Amazon S3", "Event": "s3:TestEvent", "Time": "2024-02-29T10:00:00Z", "Bucket": "acme"}
    for foreign in (test_event, record("other", "t.csv"), record("acme", "other/t.csv"), record("acme", "t.csv", "ObjectRemoved:Delete"),
                    record("acme", "t.csv.bak"), record("acme", "t.csvx"), record("acme", "t.csv/x")):  # the source is ONE object
        assert sensor_workflows(sensor, {"t": event(foreign)}) == [], foreign


def test_a_new_objects_key_never_reaches_the_workflows_arguments(tmp_path):
    """Argo substitutes `{{...}}` in a workflow's arguments (the interpreter refuses any `{{` there):
    an object key chosen by whoever can write to the bucket, `{{` unclosed or a variable, made the
    submitted run fail. No task reads the key: it is not passed."""
    from backend_argo.interpreter import Interpreter, sensor_workflows

    spec = tmp_path / "pipeline.yaml"
    spec.write_text(spec_text("triggers: {on_new_data: [{source: t, queue: 'https://sqs.eu-west-1.amazonaws.com/123456789012/q'}]}")
                    .replace("s3://acme/t.csv", "s3://acme/landed/"))
    ir, files = compiled(spec)
    sensor, template = yaml.safe_load(files["p.sensor.yaml"]), workflow_template(files)
    for key in ("landed/{{ unclosed.csv", "landed/{{workflow.parameters.dagsmith-store}}.csv", "landed/x.csv"):
        body = {"Records": [{"eventName": "ObjectCreated:Put", "s3": {"bucket": {"name": "acme"}, "object": {"key": key}}}]}
        (wf,) = sensor_workflows(sensor, {"t": {"context": {"time": "2024-02-29T10:00:00Z"}, "data": {"body": body}}})
        interp = Interpreter(base_env={}, cwd=tmp_path, workflow_templates={"p": template})
        params = interp._parameters(interp._effective_spec(wf["spec"]), {})  # what the controller checks at submission
        assert params["dagsmith-trigger-source"] == "t" and "{{" not in "".join(params.values())


def test_the_compile_imports_neither_hera_events_nor_heras_dsl(tmp_path):
    """Compile cost (issue 21): the EventSource and Sensor are data, and only Hera's Workflows
    models are loaded (backends/argo/hera_models.py), in a fresh process as a user runs it."""
    spec = tmp_path / "pipeline.yaml"
    spec.write_text(spec_text("triggers: {schedule: '@daily', on_new_data: [{source: t, queue: 'https://sqs.eu-west-1.amazonaws.com/123456789012/q'}, {source: t}]}"
                              .replace("{source: t}]", "{source: u}]")).replace("sources: {t: {type: csv, uri: 's3://acme/t.csv'}}",
                              "sources: {t: {type: csv, uri: 's3://acme/t.csv'}, u: {type: csv, uri: 's3://acme/u.csv'}}"))
    code = ("import sys; from dagsmith.cli import main; code = main(['compile', sys.argv[1], '--target', 'argo', '-o', sys.argv[2]]);"
            "print(sorted(m for m in sys.modules if m.startswith('hera.events') or m in ('hera.workflows.workflow', 'requests')))")
    import subprocess

    result = subprocess.run([sys.executable, "-c", code, str(spec), str(tmp_path / "out")], capture_output=True, text=True)
    assert result.stdout.strip().splitlines()[-1] == "[]", result.stdout + result.stderr
    assert sorted(p.name for p in (tmp_path / "out").glob("*.yaml")) == [
        "p.cron-workflow.yaml", "p.event-source.yaml", "p.prerequisites.yaml", "p.sensor.yaml", "p.workflow-template.yaml"]
    import hera.workflows  # Hera's DSL still loads whole afterwards, with the same models

    assert hera.workflows.Workflow and hera.workflows.models.Template


def test_the_webhook_is_reachable_only_through_its_service_and_only_with_the_token(tmp_path):
    """The stand-in of the webhook EventSource (interpreter.webhook_request): the URL the compile
    prints reaches it, a request without the bearer token is refused, and the event it makes
    starts the Sensor's Workflow with the key."""
    from backend_argo.interpreter import Unreachable, sensor_workflows, webhook_request

    spec = tmp_path / "pipeline.yaml"
    spec.write_text(spec_text("triggers: {on_new_data: [{source: t}]}", "{store: 's3://a/b', namespace: ml}"))
    ir, files = compiled(spec)
    source, sensor = yaml.safe_load(files["p.event-source.yaml"]), yaml.safe_load(files["p.sensor.yaml"])
    from dagsmith.backends.argo import events

    url = events.webhook_url("p", "t", "ml")
    assert url == "http://p-eventsource-svc.ml:12000/p/t"
    secrets = {"p-webhook-token": {"token": "s3cret"}}
    body = {"key": "t/2024-02-29.csv"}
    assert webhook_request(source, url, body=body, secrets=secrets) == (401, None)
    assert webhook_request(source, url, headers={"Authorization": "Bearer nope"}, body=body, secrets=secrets) == (401, None)
    assert webhook_request(source, url, headers={"Authorization": "Bearer s3cret"}, body=body, secrets={}) == (500, None)
    assert webhook_request(source, url, method="GET", headers={"Authorization": "Bearer s3cret"}, secrets=secrets) == (400, None)
    status, event = webhook_request(source, url, headers={"Authorization": "Bearer s3cret"}, body=body, secrets=secrets)
    assert status == 200 and event["data"]["header"]["Authorization"] == ["*** Masked Auth Secret ***"]
    (workflow,) = sensor_workflows(sensor, {"t": event})
    assert workflow["spec"]["arguments"]["parameters"] == [{"name": "dagsmith-trigger-source", "value": "t"},
                                                           {"name": "dagsmith-trigger-at", "value": event["context"]["time"]}]
    without_service = {**source, "spec": {k: v for k, v in source["spec"].items() if k != "service"}}
    with pytest.raises(Unreachable):  # what was emitted before: no Service, nothing answers
        webhook_request(without_service, url, headers={"Authorization": "Bearer s3cret"}, body=body, secrets=secrets)
