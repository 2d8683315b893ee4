"""target sagemaker under moto (mock_aws: S3 and SageMaker in process; no AWS account is used).

moto implements Models, EndpointConfigs, CreateEndpoint and UpdateEndpointWeightsAndCapacities
but not UpdateEndpoint: `update_endpoint_shim` below is a TEST-ONLY stand-in for it (the endpoint
takes the new config's variants), so a new config can be rolled out as SageMaker would.
"""

from __future__ import annotations

import json

import botocore.exceptions
import pytest

from deploy_testing import Pipeline, rows, spec

boto3 = pytest.importorskip("boto3")
moto = pytest.importorskip("moto")

SECRET = "wJalrXUtnFEMI-test-secret-never-sent"
BUCKET = "acme-ml"
ROLE = "arn:aws:iam::123456789012:role/sm-exec"
DEPLOY = f"""  model_name: churn_model.v2
  target: sagemaker
  strategy: canary
  canary: {{traffic_percent: 20}}
  sagemaker: {{role_arn: "{ROLE}", instance_type: ml.c5.xlarge}}"""


@pytest.fixture
def aws(monkeypatch):
    from moto import mock_aws
    from moto.core.responses import ActionResult
    from moto.sagemaker.responses import SageMakerResponse

    def update_endpoint_shim(self):  # test-only: moto has no UpdateEndpoint
        backend = self.sagemaker_backend
        endpoint = backend.endpoints[self._get_param("EndpointName")]
        config = backend.describe_endpoint_config(self._get_param("EndpointConfigName"))
        endpoint.endpoint_config_name = config["EndpointConfigName"]
        endpoint.production_variants = endpoint._process_production_variants(config["ProductionVariants"])
        return ActionResult({"EndpointArn": endpoint.arn})

    monkeypatch.setattr(SageMakerResponse, "update_endpoint", update_endpoint_shim, raising=False)
    monkeypatch.setenv("AWS_ACCESS_KEY_ID", "AKIATESTKEY")
    monkeypatch.setenv("AWS_SECRET_ACCESS_KEY", SECRET)
    monkeypatch.setenv("AWS_DEFAULT_REGION", "eu-west-1")
    with mock_aws():
        boto3.client("s3").create_bucket(Bucket=BUCKET, CreateBucketConfiguration={"LocationConstraint": "eu-west-1"})
        sent = []
        sm = boto3.client("sagemaker")
        sm.meta.events.register("before-send.sagemaker.*", lambda request, **_: sent.append(request))
        from dagsmith.runtime import deploy_sagemaker

        monkeypatch.setattr(deploy_sagemaker, "client", lambda region=None: sm)
        yield sm, sent


def weights(sm, endpoint: str) -> dict:
    described = sm.describe_endpoint(EndpointName=endpoint)
    return {v["VariantName"]: v["CurrentWeight"] for v in described["ProductionVariants"]}


def test_deploy_canary_promote_rollback_and_a_failed_update(tmp_path, aws):
    from dagsmith.cli import main
    from dagsmith.runtime import registry
    from dagsmith.runtime.s3 import S3Store

    sm, sent = aws
    store = S3Store(f"s3://{BUCKET}/dagsmith")
    p = Pipeline(tmp_path, spec(DEPLOY), {"rows": rows()}, store=store)

    first = p.run_through("deploy")["deploy"]
    endpoint = first["sagemaker"]["endpoint"]
    assert endpoint.startswith("churn-model-v2-") and len(endpoint) <= 63  # '_' and '.' made safe, hashed
    assert first["sagemaker"]["action"] == "created" and first["production"] == 1
    assert weights(sm, endpoint) == {"v1": 100.0}
    model = sm.describe_model(ModelName=sm.describe_endpoint_config(
        EndpointConfigName=sm.describe_endpoint(EndpointName=endpoint)["EndpointConfigName"])["ProductionVariants"][0]["ModelName"])
    container = model["PrimaryContainer"]
    assert container["Image"] == "ghcr.io/acme/dagsmith:1" and model["ExecutionRoleArn"] == ROLE
    assert container["ModelDataUrl"] == f"s3://{BUCKET}/dagsmith/deployments/churn_model.v2/1/model.tar.gz"
    assert container["Environment"] == {"DAGSMITH_MODEL": "churn_model.v2", "DAGSMITH_MODEL_VERSION": "1"}
    boto3.client("s3").head_object(Bucket=BUCKET, Key="dagsmith/deployments/churn_model.v2/1/model.tar.gz")

    # the second run: a canary at 20 %, a new config with both variants
    second = p.run_through("deploy", run="r2", tables={"rows": rows(seed=1)})["deploy"]
    assert second["canary"] == {"version": 2, "traffic_percent": 20}
    assert second["sagemaker"]["action"] == "updated"
    assert weights(sm, endpoint) == {"v1": 80.0, "v2": 20.0}
    config = sm.describe_endpoint_config(EndpointConfigName=sm.describe_endpoint(EndpointName=endpoint)["EndpointConfigName"])
    assert {v["VariantName"]: (v["InstanceType"], v["InitialInstanceCount"]) for v in config["ProductionVariants"]} == {
        "v1": ("ml.c5.xlarge", 1), "v2": ("ml.c5.xlarge", 1)}
    assert all(len(n) <= 63 for n in (config["EndpointConfigName"], *(v["ModelName"] for v in config["ProductionVariants"])))

    # promote and rollback shift the weights only (UpdateEndpointWeightsAndCapacities)
    before = len(sent)
    assert main(["promote", "churn_model.v2", "--workdir", store.uri, "--target", "sagemaker"]) == 0
    assert weights(sm, endpoint) == {"v1": 0.0, "v2": 100.0}
    assert registry.read_aliases(store, "churn_model.v2")["production"] == 2
    assert "UpdateEndpointWeightsAndCapacities" in str([r.headers.get("X-Amz-Target") for r in sent[before:]])
    assert main(["rollback", "churn_model.v2", "--workdir", store.uri, "--target", "sagemaker"]) == 0
    assert weights(sm, endpoint) == {"v1": 100.0, "v2": 0.0}
    assert registry.read_aliases(store, "churn_model.v2")["production"] == 1

    # a failure midway (UpdateEndpoint refused): the step fails, the endpoint keeps its config, aliases stay
    config_before = sm.describe_endpoint(EndpointName=endpoint)["EndpointConfigName"]
    aliases_before = registry.read_aliases(store, "churn_model.v2")

    def refuse(**_):
        raise botocore.exceptions.ClientError({"Error": {"Code": "ValidationException", "Message": "refused"}}, "UpdateEndpoint")

    sm.meta.events.register("before-call.sagemaker.UpdateEndpoint", refuse)
    from dagsmith.runtime.context import StepFailed

    with pytest.raises(StepFailed, match="UpdateEndpoint .* failed: ValidationException: refused; the endpoint keeps"):
        p.run_through("deploy", run="r3", tables={"rows": rows(seed=2)})
    assert sm.describe_endpoint(EndpointName=endpoint)["EndpointConfigName"] == config_before
    assert weights(sm, endpoint) == {"v1": 100.0, "v2": 0.0}
    assert registry.read_aliases(store, "churn_model.v2") == aliases_before

    # nothing secret in any request to SageMaker
    assert sent
    for request in sent:
        body = request.body.decode() if isinstance(request.body, bytes) else str(request.body or "")
        assert SECRET not in body and "SECRET" not in body.upper().replace("SECRETSMANAGER", "")
        assert SECRET not in json.dumps(dict(request.headers), default=str)


def test_validation_needs_role_and_the_right_target(tmp_path):
    from dagsmith.errors import SpecError
    from dagsmith.spec import load_spec

    path = tmp_path / "pipeline.yaml"
    path.write_text(spec("  model_name: churn\n  target: sagemaker"))
    with pytest.raises(SpecError) as caught:
        load_spec(path)
    assert "target: sagemaker needs sagemaker: {role_arn" in str(caught.value.lines())
    assert "pipeline.yaml:" in "\n".join(caught.value.lines())
    path.write_text(spec("  model_name: churn\n  target: local\n  sagemaker: {role_arn: 'arn:aws:iam::123456789012:role/x'}"))
    with pytest.raises(SpecError) as caught:
        load_spec(path)
    assert "sagemaker settings need target: sagemaker" in "\n".join(caught.value.lines())
    path.write_text(spec("  model_name: churn\n  target: sagemaker\n  sagemaker: {role_arn: nope, endpoint_name: " + "e" * 64 + "}"))
    with pytest.raises(SpecError) as caught:
        load_spec(path)
    text = "\n".join(caught.value.lines())
    assert "deployment.sagemaker.role_arn" in text and "deployment.sagemaker.endpoint_name" in text
