"""S3 sources and the S3 artifact store.

No real AWS endpoint exists here, so S3 is moto's server on 127.0.0.1 (a mock, as the only
local stand-in); everything else is real: boto3, the runner's worker processes, `dagsmith step`.
"""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pytest

DAGSMITH = str(Path(sys.executable).parent / "dagsmith")


@pytest.fixture
def s3(aws_s3, monkeypatch):
    bucket = f"lake-{abs(hash(monkeypatch)) % 10**8}"
    aws_s3.create_bucket(Bucket=bucket)
    return aws_s3, bucket


SPEC = """
dagsmith: 1
pipeline: {{name: s3demo}}
sources:
  events: {{type: s3, format: csv, uri: "s3://{bucket}/events/"}}
features:
  per_user:
    inputs: [events]
    sql: SELECT user_id, count(*) AS n FROM events GROUP BY ALL ORDER BY user_id
"""


def test_s3_prefix_source_through_the_runner(s3, tmp_path, monkeypatch):
    client, bucket = s3
    client.put_object(Bucket=bucket, Key="events/2026-11-01.csv", Body=b"user_id,kind\n1,a\n2,b\n")
    client.put_object(Bucket=bucket, Key="events/2026-11-02.csv", Body=b"user_id,kind\n1,c\n")
    client.put_object(Bucket=bucket, Key="events/_SUCCESS", Body=b"")  # not a csv: ignored
    monkeypatch.chdir(tmp_path)
    (tmp_path / "pipeline.yaml").write_text(SPEC.format(bucket=bucket))
    result = subprocess.run([DAGSMITH, "run", "pipeline.yaml", "--format", "json"], capture_output=True, text=True)
    record = json.loads(result.stdout)
    assert record["status"] == "succeeded", result.stderr
    import pyarrow.parquet as pq

    table = pq.read_table(tmp_path / ".dagsmith" / "runs" / record["run_id"] / "steps" / "per_user" / "table.parquet")
    assert table.to_pydict() == {"user_id": [1, 2], "n": [2, 1]}
    again = json.loads(subprocess.run([DAGSMITH, "run", "pipeline.yaml", "--format", "json"], capture_output=True, text=True).stdout)
    assert again["steps"]["events"]["state"] == "cached"
    client.put_object(Bucket=bucket, Key="events/2026-11-03.csv", Body=b"user_id,kind\n3,a\n")
    third = json.loads(subprocess.run([DAGSMITH, "run", "pipeline.yaml", "--format", "json"], capture_output=True, text=True).stdout)
    assert third["steps"]["events"]["state"] == "succeeded"  # new object: new fingerprint


def test_step_command_with_an_s3_store(s3, tmp_path, monkeypatch):
    """What an orchestrator task does: `dagsmith step` per step, outputs in S3."""
    client, bucket = s3
    client.put_object(Bucket=bucket, Key="events/a.csv", Body=b"user_id,kind\n1,a\n1,b\n4,c\n")
    monkeypatch.chdir(tmp_path)
    (tmp_path / "pipeline.yaml").write_text(SPEC.format(bucket=bucket))
    subprocess.run([DAGSMITH, "compile", "pipeline.yaml", "--target", "ir", "-o", "build"], check=True, capture_output=True)
    store = f"s3://{bucket}/runs-store"
    env_run = {"DAGSMITH_RUN_ID": "r1"}
    import os

    for step in ("events", "per_user"):
        result = subprocess.run([DAGSMITH, "step", "build/s3demo.ir.json", step, "--store", store], capture_output=True, text=True, env={**os.environ, **env_run})
        assert result.returncode == 0, result.stderr
    keys = sorted(o["Key"] for o in client.list_objects_v2(Bucket=bucket, Prefix="runs-store/")["Contents"])
    assert "runs-store/runs/r1/steps/per_user/manifest.json" in keys and "runs-store/runs/r1/steps/per_user/table.parquet" in keys
    manifest = json.loads(client.get_object(Bucket=bucket, Key="runs-store/runs/r1/steps/per_user/manifest.json")["Body"].read())
    assert manifest["rows"] == 2
    missing = subprocess.run([DAGSMITH, "step", "build/s3demo.ir.json", "per_user", "--store", store], capture_output=True, text=True, env={**os.environ, "DAGSMITH_RUN_ID": "r2"})
    assert missing.returncode == 1 and "no outputs at" in missing.stderr and "Traceback" not in missing.stderr
