"""The AssetWatcher of a source watched through SQS starts a run only for an object created in the
source's bucket under its key, as the Argo Sensor and the EventBridge rule do (plan.new_object).
It used to start one for every message on the queue: S3's s3:TestEvent, other buckets, `t.csv.bak`
for `t.csv`. The messages go through the real amazon provider's filter (what the triggerer runs);
no queue runs here."""

from __future__ import annotations

import json
from urllib.parse import quote_plus

import pytest

from airflow_helpers import load_dags  # noqa: E402

SPEC = """dagsmith: 1
pipeline: {{name: landing}}
sources:
  sales: {{type: csv, uri: {uri}}}
training:
  inputs: [sales]
  target: y
  model: {{estimator: sklearn.linear_model.LogisticRegression}}
triggers:
  on_new_data:
    - {{source: sales, queue: "https://sqs.eu-west-1.amazonaws.com/123456789012/landing"}}
backends:
  airflow: {{store: "s3://acme-ml/d"}}
"""


def notification(key: str, bucket: str = "landing-zone", event: str = "ObjectCreated:Put") -> dict:
    """An SQS message as S3 sends it: the key URL-encoded, a space as '+' (AWS: "Event message
    structure", https://docs.aws.amazon.com/AmazonS3/latest/userguide/notification-content-structure.html)."""
    body = {"Records": [{"eventName": event, "s3": {"bucket": {"name": bucket}, "object": {"key": quote_plus(key, safe="/")}}}]}
    return {"MessageId": key, "ReceiptHandle": key, "Body": json.dumps(body)}


def kept(compile_dag, tmp_path, uri: str, messages: list[dict]) -> list[str]:
    from airflow.providers.amazon.aws.utils.sqs import filter_messages

    spec = tmp_path / "pipeline.yaml"
    spec.write_text(SPEC.format(uri=json.dumps(uri)))
    (dag,) = load_dags(compile_dag(spec)).dags.values()
    (asset,) = dag.timetable.asset_condition.objects
    (watcher,) = asset.watchers
    sqs = watcher.trigger.trigger  # the SqsSensorTrigger the triggerer runs
    found = filter_messages(messages, sqs.message_filtering, sqs.message_filtering_match_values, sqs.message_filtering_config)
    return [m["MessageId"] for m in found]


TEST_EVENT = {"MessageId": "s3:TestEvent", "ReceiptHandle": "t", "Body": json.dumps({"Service": "Amazon S3", "Event": "s3:TestEvent"})}


@pytest.mark.slow
def test_one_object_source_starts_a_run_for_exactly_its_key(compile_dag, tmp_path):
    messages = [
        notification("in/sales 2024.csv"),
        notification("in/sales 2024.csv.bak"),
        notification("in/sales 2024.csv\n"),
        notification("in/sales 2024.csv", bucket="other-bucket"),
        notification("in/sales 2024.csv", event="ObjectRemoved:Delete"),
        TEST_EVENT,
    ]
    assert kept(compile_dag, tmp_path, "s3://landing-zone/in/sales 2024.csv", messages) == ["in/sales 2024.csv"]


@pytest.mark.slow
def test_a_prefix_source_starts_a_run_for_any_key_under_it(compile_dag, tmp_path):
    messages = [notification('drop/"q"\\x/part-1.parquet'), notification("drop/other/part-1.parquet"), notification("dropx/part-1.parquet"), TEST_EVENT]
    assert kept(compile_dag, tmp_path, 's3://landing-zone/drop/"q"\\x/', messages) == ['drop/"q"\\x/part-1.parquet']
