"""Issue 23: user code reads and writes pipeline data through declared inputs/outputs and
`dagsmith.step`, on the first run AND on the second, cached one (where a cached step's table
stays under the run that made it), in a `python:` step and in a command step's own process."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pyarrow.parquet as pq

DAGSMITH = str(Path(sys.executable).parent / "dagsmith")

ENRICH = '''
import json, os
from dagsmith import step


def enrich():
    rows = step.read_table("adults")                         # a cached feature on the second run
    rows["decade"] = rows["age"] // 10
    step.write_table("enriched", rows)
    with open(os.environ["COUNTER"], "a") as out:            # proves how often it really ran
        out.write(json.dumps({"step": step.step_id, "run_id": step.run_id, "params": step.params}) + "\\n")
'''

TALLY = '''
import json, os, pathlib
import dagsmith.step as step

seen = {name: os.environ.get(name) for name in ("DAGSMITH_STORE", "DAGSMITH_IR", "DAGSMITH_STEP", "DAGSMITH_RUN_ID",
                                                "DAGSMITH_RUN_DATE", "DAGSMITH_PARAMS", "DAGSMITH_ROOT")}
enriched = step.read_table("enriched")                       # another step's output, maybe cached
adults = step.read_table("adults")
frame = enriched.groupby("decade", as_index=False).size()
frame["adults"] = len(adults)
step.write_table("tally", frame)
pathlib.Path(os.environ["COUNTER"] + ".env").write_text(json.dumps(seen))
'''

SPEC = """
dagsmith: 1
pipeline: {name: usercode}
params: {who: {type: string, default: ann}}
sources:
  people: {type: csv, uri: people.csv}
features:
  adults:
    inputs: [people]
    sql: SELECT name, age FROM people WHERE age >= 18
  per_decade:
    inputs: [tally]
    sql: SELECT decade, size FROM tally ORDER BY decade
steps:
  enrich:
    inputs: [adults]
    outputs: [enriched]
    run: {python: "enrichment:enrich"}
  count_decades:
    inputs: [enriched, adults]
    outputs: [tally]
    run: {command: [PYTHON, tally.py]}
"""


def run(project: Path, *args):
    result = subprocess.run([DAGSMITH, "run", "pipeline.yaml", *args, "--format", "json"], cwd=project,
                            capture_output=True, text=True, timeout=120)
    return result, json.loads(result.stdout)


def table(project: Path, run_id: str, step: str, name: str) -> dict:
    """A table a step of a run made, found through its manifest (a cached step's files stay where
    the run that made them put them)."""
    store = project / ".dagsmith"
    manifest = json.loads((store / "runs" / run_id / "steps" / step / "manifest.json").read_text())
    return pq.read_table(store / manifest["files"][name]["key"]).to_pydict()


def states(record: dict) -> dict:
    return {step: entry["state"] for step, entry in record["steps"].items()}


def test_a_step_reads_pipeline_outputs_and_its_output_is_read_on_the_first_and_the_cached_run(tmp_path, monkeypatch):
    (tmp_path / "pipeline.yaml").write_text(SPEC.replace("PYTHON", json.dumps(sys.executable)))  # the venv's
    (tmp_path / "people.csv").write_text("name,age\nann,10\nbob,61\ncid,34\ndee,38\n")
    (tmp_path / "enrichment.py").write_text(ENRICH)
    (tmp_path / "tally.py").write_text(TALLY)
    counter = tmp_path / "counter.txt"
    monkeypatch.setenv("COUNTER", str(counter))

    result, first = run(tmp_path)
    assert first["status"] == "succeeded", result.stderr
    result, second = run(tmp_path)
    assert second["status"] == "succeeded", result.stderr
    # the python step with outputs is cached; the command step is not, and reads its table from the
    # first run; what it writes is the same, so the feature reading it is cached again
    assert states(second) == {"people": "cached", "adults": "cached", "enrich": "cached",
                              "count_decades": "succeeded", "per_decade": "cached"}
    assert [json.loads(line)["run_id"] for line in counter.read_text().splitlines()] == [first["run_id"]]
    for record in (first, second):
        tally = table(tmp_path, record["run_id"], "count_decades", "tables/tally.parquet")
        assert tally == {"decade": [3, 6], "size": [2, 1], "adults": [3, 3]}
        assert table(tmp_path, record["run_id"], "per_decade", "table.parquet") == {"decade": [3, 6], "size": [2, 1]}
    # the environment contract, in a command's own process
    seen = json.loads((tmp_path / "counter.txt.env").read_text())
    assert seen["DAGSMITH_STORE"] == str(tmp_path / ".dagsmith") and seen["DAGSMITH_STEP"] == "count_decades"
    assert seen["DAGSMITH_RUN_ID"] == second["run_id"] and json.loads(seen["DAGSMITH_PARAMS"]) == {"who": "ann"}
    assert Path(seen["DAGSMITH_IR"]).is_file() and Path(seen["DAGSMITH_ROOT"]) == tmp_path
    assert len(seen["DAGSMITH_RUN_DATE"]) == 10

    # changed user code re-runs the step (its module's fingerprint is in the cache key)
    (tmp_path / "enrichment.py").write_text(ENRICH.replace("// 10", "// 10 * 1"))
    result, third = run(tmp_path)
    assert states(third)["enrich"] == "succeeded", result.stderr
