"""Out of core in a local run (issue 24): a feature streamed in parts is cached like any step (its
manifest's fingerprint covers every part), and a step downstream of the cached feature reads the
parts the first run wrote."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pyarrow as pa
import pyarrow.parquet as pq

DAGSMITH = str(Path(sys.executable).parent / "dagsmith")
N = 370_000

SPEC = """
dagsmith: 1
pipeline: {name: ooc-run}
sources:
  events: {type: parquet, uri: events.parquet}
features:
  wide:
    inputs: [events]
    resources: {memory: 32Mi}
    sql: SELECT id, id % 7 AS bucket, id * 0.5 AS half FROM events ORDER BY id
  per_bucket:
    inputs: [wide]
    sql: SELECT bucket, count(*) AS n, sum(id) AS total FROM wide GROUP BY bucket ORDER BY bucket
"""


def run(project: Path) -> dict:
    result = subprocess.run([DAGSMITH, "run", "pipeline.yaml", "--format", "json"], capture_output=True, text=True,
                            cwd=project, timeout=120)
    assert result.returncode == 0, result.stderr
    return json.loads(result.stdout)


def test_a_feature_in_parts_is_cached_and_read_downstream(tmp_path):
    pq.write_table(pa.table({"id": pa.array(range(N), pa.int64())}), tmp_path / "events.parquet")
    (tmp_path / "pipeline.yaml").write_text(SPEC)
    first = run(tmp_path)
    assert {step: entry["state"] for step, entry in first["steps"].items()} == dict.fromkeys(("events", "wide", "per_bucket"), "succeeded")
    wide = tmp_path / ".dagsmith" / "runs" / first["run_id"] / "steps" / "wide"
    manifest = json.loads((wide / "manifest.json").read_text())
    parts = sorted(name for name in manifest["files"] if name.startswith("table/part-"))
    assert len(parts) >= 2 and sorted(manifest["files"]) == parts

    (tmp_path / "pipeline.yaml").write_text(SPEC.replace("sum(id) AS total", "max(half) AS top"))
    second = run(tmp_path)
    assert {step: entry["state"] for step, entry in second["steps"].items()} == {
        "events": "cached", "wide": "cached", "per_bucket": "succeeded"}
    rows = pq.read_table(tmp_path / ".dagsmith" / "runs" / second["run_id"] / "steps" / "per_bucket" / "table.parquet").to_pylist()
    assert [row["n"] for row in rows] == [len(range(b, N, 7)) for b in range(7)]  # every part's rows
    assert [row["top"] for row in rows] == [max(range(b, N, 7)) * 0.5 for b in range(7)]
