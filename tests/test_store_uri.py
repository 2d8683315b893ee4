"""A store's location has one spelling (dagsmith.storeuri) for the spec check, the compiler, every
backend and the runtime: `s3://b/p/` is `s3://b/p` (else `<store>/ir/...` is the key `p//ir/...`,
another object than `p/ir/...`), and a prefix with an empty segment is refused at its position."""

from __future__ import annotations

import re

import pytest

from dagsmith.errors import SpecError
from dagsmith.runtime.store import Store, StoreError
from dagsmith_testing import compile_path

SPEC = """dagsmith: 1
pipeline: {{name: p}}
sources:
  t: {{type: csv, uri: "s3://data/t.csv"}}
training:
  inputs: [t]
  target: y
  model: {{estimator: sklearn.linear_model.LogisticRegression}}
evaluation: {{metrics: [accuracy]}}
defaults: {{image: "img:1"}}
backends:
  airflow: {{store: "{store}", operator: kubernetes, namespace: ml}}
  argo: {{store: "{store}"}}
  stepfunctions: {{store: "{store}"}}
"""

def test_a_trailing_slash_is_one_spelling_of_the_store_everywhere(write_spec):
    ir = compile_path(write_spec(SPEC.format(store="s3://bucket/prefix/")))
    assert {options["store"] for options in ir.backends.values()} == {"s3://bucket/prefix"}
    from dagsmith.backends.airflow.backend import AirflowBackend
    from dagsmith.backends.argo.backend import ArgoBackend
    from dagsmith.backends.stepfunctions.backend import StepFunctionsBackend

    for backend in (AirflowBackend(), ArgoBackend(), StepFunctionsBackend()):
        text = "\n".join(backend.emit(ir, ir.backends[backend.name]).values())
        assert "prefix/\"" not in text and "prefix/'" not in text and not re.search(r"[^:]//ir/", text), backend.name


@pytest.mark.parametrize("store", ["s3://bucket//prefix", "s3://bucket/a//b", "s3:///prefix"])
def test_a_store_with_an_empty_segment_is_refused_at_its_position(write_spec, store):
    with pytest.raises(SpecError) as caught:
        compile_path(write_spec(SPEC.format(store=store)))
    text = str(caught.value)
    for backend in ("airflow", "argo", "stepfunctions"):
        assert f"backends.{backend}.store" in text


def test_the_runtime_opens_one_spelling_and_refuses_an_empty_segment():
    assert Store.open("s3://bucket/prefix/").uri == "s3://bucket/prefix"
    with pytest.raises(StoreError, match="empty segment"):
        Store.open("s3://bucket//prefix")  # S3Store read it as `prefix`, the IR's location as `/prefix/ir/...`


def test_a_pod_reads_the_ir_under_a_store_given_with_a_trailing_slash(monkeypatch):
    """Argo's `-p dagsmith-store=s3://b/p/` at submit: pods read `{{store}}/ir/...`, `p//ir/...`;
    deploy put the IR at `p/ir/...` (the store's one spelling)."""
    for key, value in {"AWS_ACCESS_KEY_ID": "t", "AWS_SECRET_ACCESS_KEY": "t", "AWS_DEFAULT_REGION": "us-east-1"}.items():
        monkeypatch.setenv(key, value)
    monkeypatch.delenv("AWS_ENDPOINT_URL", raising=False)
    from moto import mock_aws

    from dagsmith.runtime import load_ir
    from dagsmith_testing import REPO

    ir = compile_path(REPO / "examples" / "minimal" / "pipeline.yaml")
    with mock_aws():
        import boto3

        boto3.client("s3").create_bucket(Bucket="bucket")
        boto3.client("s3").put_object(Bucket="bucket", Key="prefix/ir/x.ir.json", Body=ir.dumps().encode())
        assert load_ir("s3://bucket/prefix//ir/x.ir.json").name == ir.name


def test_step_functions_store_prefix_has_no_empty_segment(write_spec):
    from dagsmith.backends.stepfunctions.backend import StepFunctionsBackend
    from dagsmith.backends.stepfunctions.cfn import STORE_PREFIX_PATTERN

    # CloudFormation checks a parameter against its AllowedPattern (a whole-value Java regex):
    # https://docs.aws.amazon.com/AWSCloudFormation/latest/UserGuide/parameters-section-structure.html
    for good in ("dagsmith", "a/b", "ml-runs/x.y"):
        assert re.fullmatch(STORE_PREFIX_PATTERN, good)
    for bad in ("", "p/", "/p", "a//b"):
        assert not re.fullmatch(STORE_PREFIX_PATTERN, bad)
    ir = compile_path(write_spec(SPEC.format(store="s3://bucket/prefix")))
    backend = StepFunctionsBackend()
    template = next(text for name, text in backend.emit(ir, ir.backends["stepfunctions"]).items() if name.endswith(".template.yaml"))
    assert "AllowedPattern: ^[^/]+(/[^/]+)*$" in template
    problems = [p.message for p in backend.check(ir, {"store": "s3://bucket"}) if p.level == "error"]
    assert any("has no prefix" in m for m in problems)
    problems = [p.message for p in backend.check(ir, {"store": "s3://bucket/p", "parameters": {"StorePrefix": "p/"}}) if p.level == "error"]
    assert any("single '/'" in m for m in problems)
