"""What AWS refuses and our stand-ins accepted (issue 21): integration patterns, IAM, size limits,
distributed training's environment, new-data rules and schedules. Each rule is checked on the
generated files with AWS's own definitions or doc pages, and the moto hook
(tests/conformance/backend_stepfunctions.py) carries the same rules, so a run in moto fails where
AWS would."""

from __future__ import annotations

import datetime as dt
import importlib.resources
import json
import re
import subprocess
import sys
import types
import uuid
from pathlib import Path

import pytest
import yaml

from conformance.backend_stepfunctions import (
    definition_problems,
    integration_problem,
    overrides_problem,
    training_environment_problems,
)
from dagsmith_testing import EXAMPLES, REPO, compile_path

DAGSMITH = Path(sys.executable).parent / "dagsmith"

DISTRIBUTED_SPEC = """\
dagsmith: 1
pipeline: {name: dist}
params:
  label: {type: string, default: x}
sources:
  rows: {type: csv, uri: "s3://acme-data/rows/"}
training:
  inputs: [rows]
  target: y
  model: {estimator: sklearn.linear_model.LogisticRegression}
  distributed: {framework: torch, workers: 2}
  env: {MODE: fast}
  secrets: [WANDB_API_KEY]
evaluation:
  metrics: [accuracy]
triggers:
  on_new_data:
    - {source: rows}
defaults: {image: 123456789012.dkr.ecr.eu-west-1.amazonaws.com/acme/train:1}
backends:
  stepfunctions: {store: "s3://acme-ml/dagsmith"}
"""


def emit_ir(ir, **options) -> tuple[dict, dict]:
    from dagsmith.backends import get

    files = get("stepfunctions").emit(ir, {**ir.backends.get("stepfunctions", {}), **options})
    definition = json.loads(next(v for k, v in files.items() if k.endswith(".asl.json")))
    template = yaml.safe_load(next(v for k, v in files.items() if k.endswith(".template.yaml")))
    return definition, template


def distributed_ir(tmp_path, text: str = DISTRIBUTED_SPEC):
    spec = tmp_path / "pipeline.yaml"
    spec.write_text(text, encoding="utf-8")
    return compile_path(spec)


@pytest.fixture(scope="module")
def every_output(tmp_path_factory) -> list[tuple]:
    """(label, definition, template) for each example on ECS and Batch (forecast's fan-out also as
    a Distributed Map), and the distributed-training spec: every kind of state and role we emit."""
    out = []
    for example in EXAMPLES:
        ir = compile_path(REPO / "examples" / example / "pipeline.yaml")
        for compute in ("ecs", "batch"):
            # role_arn off: the template's own StateMachineRole is what we check
            out.append((f"{example}/{compute}", *emit_ir(ir, compute=compute, role_arn=None)))
        out.append((f"{example}/distributed-map", *emit_ir(ir, inline_map_limit=1, role_arn=None)))
    out.append(("distributed-training", *emit_ir(distributed_ir(tmp_path_factory.mktemp("dist")))))
    return out


# --- 1. integration patterns ---------------------------------------------------------------------


def test_the_table_refuses_what_aws_does_not_support():
    # https://docs.aws.amazon.com/step-functions/latest/dg/integrate-optimized.html
    assert integration_problem("arn:aws:states:::batch:submitJob.waitForTaskToken")  # what we emitted before
    assert integration_problem("arn:aws:states:::sagemaker:createTrainingJob.waitForTaskToken")
    assert integration_problem("arn:aws:states:::dynamodb:putItem.sync")
    assert integration_problem("arn:aws:states:::aws-sdk:batch:submitJob.sync")  # SDK integrations: no Run a Job
    assert integration_problem("arn:aws:states:::nosuch:doIt")
    for supported in ("arn:aws:states:::aws-sdk:batch:submitJob.waitForTaskToken", "arn:aws:states:::batch:submitJob.sync",
                      "arn:aws:states:::ecs:runTask.waitForTaskToken", "arn:aws:states:::sagemaker:createTrainingJob.sync",
                      "arn:aws:states:::dynamodb:putItem", "arn:aws:states:::aws-sdk:s3:putObject"):
        assert integration_problem(supported) is None, supported


def test_every_emitted_task_uses_a_supported_pattern(every_output):
    seen = set()
    for label, definition, _ in every_output:
        assert definition_problems(definition) == [], label
        seen |= set(re.findall(r'"Resource": "(arn:aws:states:::[^"]+)"', json.dumps(definition)))
    assert "arn:aws:states:::aws-sdk:batch:submitJob.waitForTaskToken" in seen  # Batch is really covered


# --- 2. IAM: every generated policy through parliament (AWS's IAM definitions, offline) ------------


def parliament():
    """parliament imports pkg_resources (setuptools < 81) only to find its two data files: give it
    that one function when setuptools no longer ships it, rather than pin an old setuptools."""
    try:
        import pkg_resources  # noqa: F401
    except ImportError:
        shim = types.ModuleType("pkg_resources")
        shim.resource_filename = lambda package, name: str(importlib.resources.files(package) / name)
        sys.modules["pkg_resources"] = shim
    return pytest.importorskip("parliament")


ACCOUNT, REGION = "123456789012", "eu-west-1"
REF_ARNS = {"AWS::ECS::TaskDefinition": f"arn:aws:ecs:{REGION}:{ACCOUNT}:task-definition/{{}}:1",
            "AWS::Batch::JobDefinition": f"arn:aws:batch:{REGION}:{ACCOUNT}:job-definition/{{}}:1",
            "AWS::StepFunctions::StateMachine": f"arn:aws:states:{REGION}:{ACCOUNT}:stateMachine:{{}}"}
GETATT_ARNS = {"AWS::IAM::Role": f"arn:aws:iam::{ACCOUNT}:role/{{}}", "AWS::DynamoDB::Table": f"arn:aws:dynamodb:{REGION}:{ACCOUNT}:table/{{}}",
               "AWS::Logs::LogGroup": f"arn:aws:logs:{REGION}:{ACCOUNT}:log-group:{{}}:*"}


def resolved(value, resources: dict):
    """A policy with CloudFormation's intrinsics replaced by what they resolve to on deploy."""
    if isinstance(value, list):
        return [resolved(v, resources) for v in value]
    if not isinstance(value, dict):
        return value
    if "Fn::Sub" in value:
        text = value["Fn::Sub"].replace("${AWS::Partition}", "aws").replace("${AWS::Region}", REGION).replace("${AWS::AccountId}", ACCOUNT)
        text = re.sub(r"\$\{(\w+)\.Arn\}", lambda m: GETATT_ARNS[resources[m.group(1)]["Type"]].format(m.group(1)), text)
        return re.sub(r"\$\{(\w+)\}", lambda m: m.group(1).lower(), text)  # a parameter's value
    if "Ref" in value:
        return REF_ARNS[resources[value["Ref"]]["Type"]].format(value["Ref"])
    if "Fn::GetAtt" in value:
        name = value["Fn::GetAtt"][0]
        return GETATT_ARNS[resources[name]["Type"]].format(name)
    return {k: resolved(v, resources) for k, v in value.items()}


# Findings that are parliament's data, not our policy (each says why):
IGNORED = {
    # parliament 1.6.4's iam_definition.json writes the job-definition ARN without ":${Revision}";
    # the Service Authorization Reference for AWS Batch has job-definition/${JobDefinitionName}:${Revision},
    # and the policy names the exact revision the state machine submits (the definition's Ref).
    ("RESOURCE_MISMATCH", "batch:SubmitJob", "arn:*:batch:*:*:job-definition/*"),
    # DescribeExecution lists execution* and express* as alternatives (one execution is either);
    # the Distributed Map's children are STANDARD executions (execution:<machine>/<label>:<id>,
    # the pattern AWS's Distributed Map IAM example uses), never express.
    ("RESOURCE_MISMATCH", "states:DescribeExecution", "arn:*:states:*:*:express:*:*:*"),
}


def findings_of(document: dict) -> list[tuple]:
    policy = parliament().analyze_policy_string(json.dumps(document))
    out = []
    for finding in policy.findings:
        details = finding.detail if isinstance(finding.detail, list) else [finding.detail]
        for detail in details:
            key = (finding.issue, detail.get("action"), detail.get("required_format")) if isinstance(detail, dict) else (finding.issue, str(detail), None)
            if key not in IGNORED:
                out.append(key)
    return out


def test_every_iam_policy_passes_parliament(every_output):
    checked = 0
    for label, _, template in every_output:
        resources = template["Resources"]
        for name, resource in resources.items():
            if resource["Type"] != "AWS::IAM::Role":
                continue
            for policy in resource["Properties"]["Policies"]:
                document = resolved(policy["PolicyDocument"], resources)
                assert findings_of(document) == [], f"{label} {name}: {json.dumps(document, indent=1)}"
                checked += 1
    assert checked >= 30


def test_parliament_sees_what_aws_denies():
    """The check can fail: the callback grant we emitted before (SendTask* on the state machine's
    ARN) and an unscoped pull are findings."""
    before = {"Version": "2012-10-17", "Statement": [
        {"Effect": "Allow", "Action": ["states:SendTaskSuccess", "states:SendTaskFailure", "states:SendTaskHeartbeat"],
         "Resource": f"arn:aws:states:{REGION}:{ACCOUNT}:stateMachine:m"}]}
    assert ("RESOURCE_MISMATCH", "states:SendTaskSuccess", "*") in findings_of(before)
    star = {"Version": "2012-10-17", "Statement": [{"Effect": "Allow", "Action": ["ecr:BatchGetImage"], "Resource": "*"}]}
    assert findings_of(star)


def test_least_privilege_where_it_can_be_scoped(in_repo):
    ir = compile_path("examples/forecast/pipeline.yaml")
    _, template = emit_ir(ir, compute="batch", role_arn=None)
    statements = [s for r in template["Resources"].values() if r["Type"] == "AWS::IAM::Role"
                  for p in r["Properties"]["Policies"] for s in p["PolicyDocument"]["Statement"]]
    stars = sorted(a for s in statements if s["Resource"] == "*" for a in s["Action"])
    # only actions with no resource type are granted on "*"
    assert stars == ["ecr:GetAuthorizationToken", "states:SendTaskFailure", "states:SendTaskHeartbeat", "states:SendTaskSuccess"]
    (params,) = [s for s in statements if s["Action"] == ["s3:PutObject"]]
    assert params["Resource"]["Fn::Sub"].endswith("/runs/*/stepfunctions/params.json")


# --- 3. size limits ------------------------------------------------------------------------------


def test_params_go_by_reference_never_in_an_override(every_output):
    for label, definition, _ in every_output:
        text = json.dumps(definition)
        assert '"DAGSMITH_PARAMS"' not in text and "JsonToString($.run.params)" in text, label  # written once, to the store
        assert definition["States"]["Store run values"]["Resource"] == "arn:aws:states:::aws-sdk:s3:putObject"
        assert '"Name": "DAGSMITH_PARAMS_URI"' in text or '"DAGSMITH_PARAMS_URI.$"' in text, label


def test_override_bound_counts_the_largest_run_values(in_repo):
    from dagsmith.backends import get
    from dagsmith.backends.stepfunctions import limits

    backend = get("stepfunctions")
    ir = compile_path("examples/churn/pipeline.yaml")
    options = ir.backends.get("stepfunctions", {})
    plan = backend.plan(ir, options)
    sizes = {t.id: limits.override_size(state, ir) for t, state in limits.container_states(plan, backend.settings(plan, options))}
    # each includes a 2,048-character token, an 80-character run id, the store at its longest
    assert all(limits.TOKEN_MAX + 3 * limits.STORE_PREFIX_MAX < size < limits.OVERRIDES_MAX for size in sizes.values()), sizes
    assert "dagsmith-admit" in sizes  # the admission task too (it carries the trigger)


def test_an_override_over_the_limit_is_a_positioned_compile_error(in_repo, monkeypatch):
    from dagsmith.backends import get
    from dagsmith.backends.stepfunctions import limits

    monkeypatch.setattr(limits, "OVERRIDES_MAX", 3000)
    ir = compile_path("examples/minimal/pipeline.yaml")
    problems = [p for p in get("stepfunctions").check(ir, ir.backends.get("stepfunctions", {})) if p.level == "error"]
    assert {p.path for p in problems} == {("sources", "applicants"), ("training",), ("evaluation",)}, problems
    assert all("8,192" not in p.message and "3,000" in p.message for p in problems)


def test_a_store_prefix_over_its_maxlength_is_refused(in_repo):
    from dagsmith.backends import get

    ir = compile_path("examples/minimal/pipeline.yaml")
    problems = get("stepfunctions").check(ir, {"store": "s3://bucket/" + "p" * 201})
    assert any(p.path == ("backends", "stepfunctions", "store") and "200" in p.message for p in problems)


def test_the_hook_refuses_what_aws_refuses():
    small = {"containerOverrides": [{"name": "dagsmith", "command": ["x"], "environment": [{"name": "A", "value": "v"}]}]}
    assert overrides_problem(small) is None
    big = {"containerOverrides": [{"name": "dagsmith", "environment": [{"name": "DAGSMITH_PARAMS", "value": "x" * 8200}]}]}
    assert "8192" in overrides_problem(big)
    assert training_environment_problems({"A": "x" * 512}) == []
    assert training_environment_problems({"A": "x" * 513}) and training_environment_problems({"1A": "x"})
    assert training_environment_problems({f"K{i}": "" for i in range(101)})


# --- 4. distributed training: env, secrets and connections are passed, never written -------------


def test_training_job_gets_env_and_secrets_by_name(in_repo, tmp_path):
    from conformance.backend_stepfunctions import all_states

    definition, template = emit_ir(distributed_ir(tmp_path))
    (job,) = [s for s in all_states(definition).values() if s.get("Resource") == "arn:aws:states:::sagemaker:createTrainingJob.sync"]
    environment = job["Parameters"]["Environment"]
    assert environment["MODE"] == "fast"
    assert json.loads(environment["DAGSMITH_SECRET_REFS"]) == {"WANDB_API_KEY": "WANDB_API_KEY"}
    statements = [s for p in template["Resources"]["SageMakerRole"]["Properties"]["Policies"] for s in p["PolicyDocument"]["Statement"]]
    (secrets,) = [s for s in statements if s["Action"] == ["secretsmanager:GetSecretValue"]]
    assert secrets["Resource"] == [{"Fn::Sub": "arn:${AWS::Partition}:secretsmanager:${AWS::Region}:${AWS::AccountId}:secret:WANDB_API_KEY-*"}]


def test_the_wrapper_fetches_secrets_by_name(monkeypatch):
    moto = pytest.importorskip("moto")
    from dagsmith.backends.stepfunctions.callback import SECRET_REFS_ENV, fetch_secrets

    monkeypatch.setenv("AWS_DEFAULT_REGION", "us-east-1")
    for name in ("AWS_ACCESS_KEY_ID", "AWS_SECRET_ACCESS_KEY"):
        monkeypatch.setenv(name, "testing")
    monkeypatch.delenv("AWS_ENDPOINT_URL", raising=False)
    with moto.mock_aws():
        import boto3

        boto3.client("secretsmanager").create_secret(Name="dagsmith/conn/warehouse", SecretString="postgresql://u:p@h/db")
        environ = {SECRET_REFS_ENV: json.dumps({"DAGSMITH_CONN_WAREHOUSE": "dagsmith/conn/warehouse"})}
        assert fetch_secrets(environ) == {"DAGSMITH_CONN_WAREHOUSE": "postgresql://u:p@h/db"}
    assert fetch_secrets({}) == {}


def cli_compile(spec: Path) -> subprocess.CompletedProcess:
    return subprocess.run([str(DAGSMITH), "compile", str(spec), "--target", "stepfunctions", "-o", str(spec.parent / "out")],
                          capture_output=True, text=True, cwd=spec.parent)


def test_what_sagemaker_cannot_take_is_refused_at_its_position(tmp_path):
    text = DISTRIBUTED_SPEC.replace("MODE: fast", 'MODE: "' + "f" * 600 + '"').replace(
        "[WANDB_API_KEY]", "[" + ", ".join(f"SECRET_NUMBER_{i:03d}" for i in range(30)) + "]")
    spec = tmp_path / "pipeline.yaml"
    spec.write_text(text, encoding="utf-8")
    got = cli_compile(spec)
    assert got.returncode != 0
    assert "pipeline.yaml:12:15:" in got.stderr and "training.env.MODE" in got.stderr and "512" in got.stderr, got.stderr
    assert "pipeline.yaml:13:12:" in got.stderr and "training.secrets" in got.stderr, got.stderr
    assert "f" * 600 not in got.stderr


# --- 5. prerequisites: one execution per arrival of data; day-of-week steps --------------------------


def s3_event(bucket: str, key: str) -> dict:
    return {"id": "1", "source": "aws.s3", "detail-type": "Object Created", "account": ACCOUNT, "region": REGION,
            "time": "2024-01-01T00:00:00Z", "resources": [], "detail": {"bucket": {"name": bucket}, "object": {"key": key}}}


def test_a_multi_file_drop_starts_one_execution(in_repo, tmp_path):
    pytest.importorskip("moto")
    from moto.events.models import EventPattern

    _, template = emit_ir(distributed_ir(tmp_path))
    (rule,) = [r for r in template["Resources"].values() if r["Type"] == "AWS::Events::Rule"]
    pattern = rule["Properties"]["EventPattern"]
    pattern["detail"]["bucket"]["name"] = ["acme-data"]  # the DataBucket parameter's value
    matcher = EventPattern.load(json.dumps(pattern))  # moto's EventBridge matcher (wildcard, prefix)
    drop = [f"rows/2024-01-01/part-{i:04d}.parquet" for i in range(3)] + ["rows/2024-01-01/_SUCCESS"]
    assert [key for key in drop if matcher.matches_event(s3_event("acme-data", key))] == ["rows/2024-01-01/_SUCCESS"]
    assert matcher.matches_event(s3_event("acme-data", "rows/_SUCCESS"))
    assert not matcher.matches_event(s3_event("acme-data", "other/_SUCCESS"))


def test_new_data_marker_option(in_repo, tmp_path):
    from dagsmith.backends.stepfunctions.cfn import new_data_keys

    assert new_data_keys("rows/", "_SUCCESS") == [{"wildcard": "rows/_SUCCESS"}, {"wildcard": "rows/*/_SUCCESS"}]
    assert new_data_keys("rows/*.parquet", "_SUCCESS") == [{"wildcard": "rows/_SUCCESS"}, {"wildcard": "rows/*/_SUCCESS"}]
    assert new_data_keys("a*b/", "done") == [{"wildcard": "a*/done"}]  # up to the first wildcard
    assert new_data_keys("data/events.csv", "_SUCCESS") == ["data/events.csv"]  # one object is one arrival
    assert new_data_keys("rows/", None) == [{"prefix": "rows/"}]
    from dagsmith.backends import get

    problems = get("stepfunctions").check(distributed_ir(tmp_path), {"store": "s3://b/p", "new_data_marker": "a/b"})
    assert any(p.path == ("backends", "stepfunctions", "new_data_marker") for p in problems)
    # set in the spec (the schema takes it)
    spec = DISTRIBUTED_SPEC.replace('{store: "s3://acme-ml/dagsmith"}', '{store: "s3://acme-ml/dagsmith", new_data_marker: READY}')
    _, template = emit_ir(distributed_ir(tmp_path, spec))
    (rule,) = [r for r in template["Resources"].values() if r["Type"] == "AWS::Events::Rule"]
    assert rule["Properties"]["EventPattern"]["detail"]["object"]["key"] == [{"wildcard": "rows/READY"}, {"wildcard": "rows/*/READY"}]


@pytest.mark.parametrize(("cron", "expected"), [
    ("0 3 * * 1", "cron(0 3 ? * MON *)"),
    ("0 3 * * */2", "cron(0 3 ? * SUN,TUE,THU,SAT *)"),  # was "*/3" before
    ("0 3 * * 1-5", "cron(0 3 ? * MON-FRI *)"),
    ("0 3 * * 1/2", "cron(0 3 ? * MON,WED,FRI *)"),
    ("0 3 * * 5-7", "cron(0 3 ? * SUN,FRI,SAT *)"),  # 7 is Sunday too
    ("0 3 * * MON,fri", "cron(0 3 ? * MON,FRI *)"),
    ("0 3 * * */1", "cron(0 3 * * ? *)"),
    ("*/15 2 1 * *", "cron(0/15 2 1 * ? *)"),  # the documented a/n, not */n
    ("@weekly", "cron(0 0 ? * SUN *)"),
])
def test_cron_to_eventbridge(cron, expected):
    from dagsmith.backends.stepfunctions.cfn import cron_expression

    assert cron_expression(cron) == expected
    assert "/" not in expected.split()[4]  # EventBridge's day-of-week takes no '/'


def test_a_cron_eventbridge_cannot_take_is_refused_at_its_position(tmp_path):
    for cron, why in (("0 3 1 * */2", "both the day of the month and of the week"), ("0 3 1 * MON", "both the day")):
        spec = tmp_path / "pipeline.yaml"
        spec.write_text(DISTRIBUTED_SPEC.replace("triggers:\n", f'triggers:\n  schedule: "{cron}"\n'), encoding="utf-8")
        got = cli_compile(spec)
        assert got.returncode != 0 and "pipeline.yaml:17:13:" in got.stderr and "triggers.schedule" in got.stderr and why in got.stderr, got.stderr


# --- the runtime side: params read from the store -------------------------------------------------


def test_runtime_reads_params_by_reference(tmp_path):
    from dagsmith.runtime import environment as E
    from dagsmith.runtime.context import RunValues, StepFailed

    ir = distributed_ir(tmp_path)
    (tmp_path / "params.json").write_text(json.dumps({"label": "y" * 20_000}), encoding="utf-8")
    values = RunValues.from_env(ir, {E.PARAMS_URI: str(tmp_path / "params.json"), E.RUN_ID: "r"})
    assert values.params["label"] == "y" * 20_000
    with pytest.raises(StepFailed, match="cannot read the run's params"):
        RunValues.from_env(ir, {E.PARAMS_URI: str(tmp_path / "missing.json")})


# --- in moto: what AWS would refuse fails there too ------------------------------------------------


@pytest.mark.slow
@pytest.mark.parametrize("compute", ["ecs", "batch"])
def test_large_params_and_batch_callbacks_run_in_moto(moto_worker, tmp_path, compute):
    """A 9,000-character param (over ECS's 8,192-character overrides if it were in the environment)
    reaches the step, on ECS and on Batch through the AWS SDK integration's callback; before, the
    hook refused the overrides (ECS) and the Batch definition itself."""
    from conformance.backend_stepfunctions import compile_spec

    folder = tmp_path / "spec"
    folder.mkdir()
    (folder / "events.csv").write_text("id,x\n1,2\n", encoding="utf-8")
    spec = {"dagsmith": 1, "pipeline": {"name": "big"}, "params": {"note": {"type": "string", "default": "x"}},
            "sources": {"events": {"type": "csv", "uri": "events.csv"}},
            "steps": {"count": {"after": ["events"], "env": {"NOTE": "${params.note}"}, "run": {"command": [
                sys.executable, "-c", "import os; open('note.txt', 'w').write(str(len(os.environ['NOTE'])))"]}}}}
    (folder / "pipeline.yaml").write_text(json.dumps(spec), encoding="utf-8")
    ir_file = compile_spec(folder / "pipeline.yaml", tmp_path / "out", None)
    deployed = moto_worker.call("deploy", ir_file=str(ir_file), stack="big", prefix="big", root=str(folder),
                                options={"state_machine_name": "big", "compute": compute})
    got = moto_worker.call("run", machine=deployed["machine"], name=f"big-{uuid.uuid4().hex[:8]}",
                           execution_input={"params": {"note": "n" * 9000}, "run_date": dt.date.today().isoformat()})
    assert got["status"] == "SUCCEEDED", got
    assert got["output"]["steps"] == {"events": "succeeded", "count": "succeeded"}
    assert (folder / "note.txt").read_text() == "9000"


@pytest.mark.slow  # a moto worker process
def test_the_hook_refuses_the_old_batch_definition(moto_worker, tmp_path):
    """moto created and ran `batch:submitJob.waitForTaskToken`; AWS refuses it, and now so does the hook."""
    definition = {"StartAt": "Run", "States": {"Run": {"Type": "Task", "Resource": "arn:aws:states:::batch:submitJob.waitForTaskToken",
                                                       "Parameters": {"JobName": "j", "JobQueue": "q", "JobDefinition": "d"}, "End": True}}}
    with pytest.raises(AssertionError, match="SCHEMA_VALIDATION_FAILED"):
        moto_worker.call("create_machine", name="old-batch", definition=json.dumps(definition))
    definition["States"]["Run"]["Resource"] = "arn:aws:states:::aws-sdk:batch:submitJob.waitForTaskToken"
    assert moto_worker.call("create_machine", name="new-batch", definition=json.dumps(definition)).endswith(":new-batch")

