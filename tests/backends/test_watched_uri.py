"""A source watched by `on_new_data` (issue 22 #7): a reference in its uri was written raw into the
EventBridge rule's bucket and prefix, the IAM resource, the Argo Events filter and the Airflow
Asset URI, so the trigger could never fire. A trigger is set up at deploy time, before any run's
values exist: a reference there is refused at its position, on every target; `$${` is the literal
`${` everywhere it is written."""

from __future__ import annotations

import re
from pathlib import Path

import pytest
import yaml

from dagsmith.cli import main

SPEC = """dagsmith: 1
pipeline: {{name: p}}
defaults: {{image: "ghcr.io/acme/p:1"}}
params:
  day: {{type: string, default: "2024-01-01"}}
sources:
  events: {{type: parquet, uri: "{uri}"}}
  other: {{type: csv, uri: "s3://lake/by-day/${{params.day}}/x.csv"}}
triggers:
  on_new_data:
    - {{source: events, min_interval: 1h, queue: "https://sqs.eu-west-1.amazonaws.com/123456789012/q"}}
backends:
  argo: {{store: "s3://acme/d"}}
  stepfunctions: {{store: "s3://acme/d"}}
  airflow: {{store: "s3://acme/d"}}
"""
TARGETS = ["airflow", "argo", "stepfunctions", "ir"]


@pytest.mark.parametrize("target", TARGETS)
@pytest.mark.parametrize("uri", ["s3://lake/events/${params.day}/", "s3://lake-${run.date}/events/", "data/${ run.id }.parquet"])
def test_a_reference_in_a_watched_uri_is_refused_at_its_position(capsys, write_spec, target, uri):
    path = write_spec(SPEC.format(uri=uri))
    assert main(["compile", path, "--target", target, "-o", "out"]) == 2
    err = capsys.readouterr().err
    column = len('  events: {type: parquet, uri: "') + uri.index("${") + 1
    assert re.search(rf"^pipeline.yaml:7:{column}: error: sources\.events\.uri: '\$\{{[^']+\}}': triggers\.on_new_data\[0\] watches this source",
                     err, re.M), err
    assert "sources.other" not in err  # a source nothing watches may hold references
    assert not Path("out").exists()


def test_an_escaped_dollar_brace_is_the_literal_location_on_every_backend(capsys, write_spec):
    path = write_spec(SPEC.format(uri="s3://lake/in$${x}/"))
    for target in TARGETS[:3]:
        assert main(["compile", path, "--target", target, "-o", f"out-{target}"]) == 0, capsys.readouterr().err
    # Step Functions: the rule watches the key `in${x}/` (EventBridge's wildcard takes `$` as it is)
    template = yaml.safe_load(Path("out-stepfunctions/p.template.yaml").read_text(encoding="utf-8"))
    (rule,) = [r for r in template["Resources"].values() if r["Type"] == "AWS::Events::Rule"]
    assert rule["Properties"]["EventPattern"]["detail"]["object"]["key"] == [{"wildcard": "in${x}/_SUCCESS"}, {"wildcard": "in${x}/*/_SUCCESS"}]
    # IAM reads ${...} as a policy variable: a literal $ is ${$}; a reference's key ends where it starts
    reads = [s["Resource"] for r in template["Resources"].values() if r["Type"] == "AWS::IAM::Role"
             for policy in r["Properties"]["Policies"] for s in policy["PolicyDocument"]["Statement"] if s["Action"] == ["s3:GetObject"]
             and isinstance(s["Resource"], str)]
    assert sorted(set(reads)) == ["arn:aws:s3:::lake/by-day/*", "arn:aws:s3:::lake/in${$}{x}/*"]
    # Argo Events: the filter on the notification's (URL-encoded) key
    sensor = yaml.safe_load(Path("out-argo/p.sensor.yaml").read_text(encoding="utf-8"))
    (key,) = [f["value"] for f in sensor["spec"]["dependencies"][0]["filters"]["data"] if f["path"] == "body.Records.0.s3.object.key"]
    assert key == ["^in%24%7Bx%7D/"]
    # Airflow: the Asset is the location itself
    assert 'uri="s3://lake/in${x}/"' in Path("out-airflow/p.py").read_text(encoding="utf-8")


def test_step_functions_refuses_a_reference_in_an_s3_bucket(capsys, write_spec):
    """The tasks' role may read exactly the buckets of the S3 sources, named at deploy time."""
    path = write_spec(SPEC.format(uri="s3://lake/events/").replace("s3://lake/by-day/${params.day}/x.csv", "s3://${params.day}/x.csv"))
    assert main(["compile", path, "--target", "stepfunctions", "-o", "out"]) == 2
    assert re.search(r"^pipeline.yaml:8:\d+: error: sources\.other\.uri: '\$\{params\.day\}' is not an S3 bucket name", capsys.readouterr().err, re.M)


@pytest.mark.parametrize("target", ["airflow", "argo"])
def test_a_reference_in_a_trigger_queue_is_refused_at_its_position(capsys, write_spec, target):
    """The queue was written raw into Airflow's AssetWatcher (Argo's check refused it as no SQS URL)."""
    spec = SPEC.format(uri="s3://lake/events/").replace("123456789012/q", "123456789012/${params.day}")
    path = write_spec(spec)
    assert main(["compile", path, "--target", target, "-o", "out"]) == 2
    column = spec.splitlines()[10].index("${") + 1
    assert re.search(rf"^pipeline.yaml:11:{column}: error: triggers\.on_new_data\[0\]\.queue: '\$\{{params\.day\}}': the queue", capsys.readouterr().err, re.M)
