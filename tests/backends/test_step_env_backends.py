"""The step option `env` on every backend (issue 22, finding 12): the runtime sets every value
when the step starts (tests/runtime/test_step_env.py, the conformance scenario run-id-and-date);
a container backend also writes into the container's definition the values it can carry as they
are: no run-time reference, `$${` written `${`, and nothing its own templating would read (Argo
'{{', Kubernetes '$(X)' and '$$', Fn::Sub '${'). Before, Argo and Airflow's kubernetes mode wrote
none and Step Functions wrote `${run.id}` and `$${` as they are in the spec."""

from __future__ import annotations

import json

import yaml

from dagsmith.backends import get
from dagsmith_testing import compile_path

ENV = {"PLAIN": "plain value", "ESCAPED": "$${HOME}", "RUN": "run ${run.id}", "TAG": "{{ ds }}", "KUBE": "$(HOME)", "NUMBER": 7}
# what each backend writes in the container's spec (the rest is set by the runtime as the step starts)
PODS = {"PLAIN": "plain value", "NUMBER": "7", "TAG": "{{ ds }}"}  # Airflow: literal(); no '$' (Kubernetes expands it)
ARGO = {"PLAIN": "plain value", "NUMBER": "7"}  # and no '{{' (Argo substitutes it)
AWS = {"PLAIN": "plain value", "NUMBER": "7", "TAG": "{{ ds }}", "KUBE": "$(HOME)"}  # no '${' (Fn::Sub)


def _ir(tmp_path, distributed: bool = False):
    spec = {
        "dagsmith": 1, "pipeline": {"name": "envs"},
        "defaults": {"image": "ghcr.io/acme/x:1", "env": ENV},
        "sources": {"rows": {"type": "csv", "uri": "s3://acme/rows.csv"}},
        "training": {"inputs": ["rows"], "target": "y", "model": {"estimator": "sklearn.linear_model.LogisticRegression"},
                     **({"distributed": {"framework": "torch", "workers": 2}} if distributed else {})},
        "backends": {"airflow": {"operator": "kubernetes", "store": "s3://acme/ml"}, "argo": {"store": "s3://acme/ml"},
                     "stepfunctions": {"store": "s3://acme/ml"}},
    }
    (tmp_path / "pipeline.yaml").write_text(json.dumps(spec))
    return compile_path(tmp_path / "pipeline.yaml")


def _emit(ir, target: str, **options) -> dict:
    return get(target).emit(ir, {**ir.backends.get(target, {}), **options})


def test_argo_containers_get_the_values_argo_and_kubernetes_leave_as_they_are(tmp_path):
    ir = _ir(tmp_path)
    docs = [yaml.safe_load(text) for name, text in _emit(ir, "argo").items() if name.endswith((".yaml", ".yml"))]
    containers = [t["container"] for d in docs for t in (d.get("spec") or {}).get("templates") or [] if t.get("container")]
    step_containers = [c for c in containers if c["args"][:1] == ["step"] or "step" in c.get("args", [])[:2]]
    assert step_containers
    for container in step_containers:
        env = {e["name"]: e.get("value") for e in container["env"]}
        assert {name: env[name] for name in env if name in ENV} == ARGO, env


def test_airflow_pods_get_their_values_as_literals(tmp_path):
    text = next(t for n, t in _emit(_ir(tmp_path), "airflow").items() if n.endswith(".py"))
    assert 'env_vars={**RUN_ENV, "NUMBER": literal("7"), "PLAIN": literal("plain value"), "TAG": literal("{{ ds }}")},' in text


def test_step_functions_containers_and_training_jobs_get_the_values_fn_sub_leaves_as_they_are(tmp_path):
    for compute in ("ecs", "batch"):
        files = _emit(_ir(tmp_path), "stepfunctions", compute=compute)
        template = yaml.safe_load(next(t for n, t in files.items() if n.endswith(".template.yaml")))
        for resource in template["Resources"].values():
            if resource["Type"] == "AWS::ECS::TaskDefinition":
                (container,) = resource["Properties"]["ContainerDefinitions"]
            elif resource["Type"] == "AWS::Batch::JobDefinition":
                container = resource["Properties"]["ContainerProperties"]
            else:
                continue
            env = {e["Name"]: e["Value"] for e in container.get("Environment") or []}
            assert env in ({}, AWS), env  # synthetic tasks (the fan-out listing...) have no step env
    files = _emit(_ir(tmp_path, distributed=True), "stepfunctions")
    definition = json.loads(next(t for n, t in files.items() if n.endswith(".asl.json")))
    text = json.dumps(definition)
    assert "${run.id}" not in text and "$${HOME}" not in text
    jobs = [s for s in _states(definition) if s.get("Resource", "").startswith("arn:aws:states:::sagemaker:createTrainingJob")]
    assert jobs
    for job in jobs:
        env = job["Parameters"]["Environment"]
        assert {name: env[name] for name in env if name in ENV} == AWS


def _states(node):
    if isinstance(node, dict):
        if "Type" in node:
            yield node
        for value in node.values():
            yield from _states(value)
    elif isinstance(node, list):
        for value in node:
            yield from _states(value)


def test_env_names_a_step_cannot_take_are_refused_at_their_position(tmp_path):
    """DAGSMITH_* are the run's values and connections' URIs; a secret is passed by its name: a
    plain value of the same name would replace it on one backend and clash on another."""
    import pytest

    from dagsmith.errors import DagsmithError
    from dagsmith.spec import load_spec

    (tmp_path / "pipeline.yaml").write_text(
        "dagsmith: 1\npipeline: {name: x}\ndefaults: {env: {TOKEN: a, DAGSMITH_STORE: /x}}\n"
        "sources:\n  a: {type: csv, uri: a.csv, secrets: [TOKEN]}\n"
        "steps:\n  s: {after: [a], run: {command: [\"true\"]}, env: {OK: 1, DAGSMITH_RUN_ID: x}}\n")
    with pytest.raises(DagsmithError) as caught:
        load_spec(tmp_path / "pipeline.yaml")
    text = str(caught.value)
    assert ":3:18: error: defaults.env.TOKEN: 'TOKEN' is also in secrets" in text
    assert ":3:28: error: defaults.env.DAGSMITH_STORE: 'DAGSMITH_STORE': names starting with DAGSMITH_" in text
    assert ":7:58: error: steps.s.env.DAGSMITH_RUN_ID:" in text
    assert text.count(": error: ") == 3
