"""Issue 23 under real Airflow (python mode, dag.test()): a custom step reads a feature's table and
writes an output that a validation and a later feature read, through dagsmith.step; a command step's process gets
the whole environment contract (DAGSMITH_ROOT too, which an Airflow task did not get), with no
DAGSMITH_* variable set in the worker."""

from __future__ import annotations

import json
import sys
from pathlib import Path

import pyarrow.parquet as pq

from airflow_helpers import load_dags, states

CODE = '''
from dagsmith import step


def enrich():
    rows = step.read_table("adults")
    rows["decade"] = rows["age"] // 10
    step.write_table("enriched", rows)
'''

WHERE = '''
import json, os, pathlib
from dagsmith import step

names = ("DAGSMITH_STORE", "DAGSMITH_IR", "DAGSMITH_STEP", "DAGSMITH_RUN_ID", "DAGSMITH_RUN_DATE", "DAGSMITH_PARAMS", "DAGSMITH_ROOT")
seen = {name: os.environ.get(name) for name in names}
seen["rows"] = len(step.read_table("enriched"))
pathlib.Path("seen.json").write_text(json.dumps(seen))
'''


def test_a_custom_step_reads_a_feature_and_writes_a_table_a_later_feature_reads(compile_dag, monkeypatch, tmp_path):
    store = tmp_path / "store"
    for name in ("DAGSMITH_STORE", "DAGSMITH_ROOT", "DAGSMITH_IR", "DAGSMITH_STEP"):
        monkeypatch.delenv(name, raising=False)
    (tmp_path / "people.csv").write_text("name,age\nann,10\nbob,61\ncid,34\n")
    (tmp_path / "airflowcode.py").write_text(CODE)
    (tmp_path / "where.py").write_text(WHERE)
    spec = tmp_path / "pipeline.yaml"
    spec.write_text(json.dumps({
        "dagsmith": 1, "pipeline": {"name": "userairflow"},
        "params": {"who": {"type": "string", "default": "ann"}},
        "sources": {"people": {"type": "csv", "uri": "people.csv"}},
        "features": {"adults": {"inputs": ["people"], "sql": "SELECT * FROM people WHERE age >= 18"},
                     "per_decade": {"inputs": ["enriched"], "sql": "SELECT decade, count(*) AS n FROM enriched GROUP BY decade ORDER BY decade"}},
        "validation": [{"name": "enriched_ok", "on": "enriched",
                        "expectations": [{"expect_column_values_to_be_between": {"column": "decade", "min_value": 1}}]}],
        "steps": {"enrich": {"inputs": ["adults"], "outputs": ["enriched"], "run": {"python": "airflowcode:enrich"}},
                  "where": {"inputs": ["enriched"], "run": {"command": [sys.executable, "where.py"]}}},
        "backends": {"airflow": {"store": str(store)}},
    }))
    out = compile_dag(spec)
    (dag,) = load_dags(out).dags.values()
    for task in dag.tasks:
        task.retries = 0
    got = states(dag.test())
    (run,) = (store / "runs").iterdir()
    assert got == {"people": "success", "adults": "success", "enrich": "success", "enriched_ok": "success",
                   "per_decade": "success", "where": "success"}, got
    assert json.loads((run / "steps" / "enriched_ok" / "result.json").read_text())["validation"]["rows"] == 2  # the step's table
    assert pq.read_table(run / "steps" / "per_decade" / "table.parquet").to_pydict() == {"decade": [3, 6], "n": [1, 1]}
    seen = json.loads((tmp_path / "seen.json").read_text())
    assert seen["DAGSMITH_STORE"] == str(store) and Path(seen["DAGSMITH_ROOT"]) == tmp_path
    assert seen["DAGSMITH_STEP"] == "where" and seen["DAGSMITH_RUN_ID"] == run.name and seen["rows"] == 2
    assert Path(seen["DAGSMITH_IR"]).is_file() and json.loads(seen["DAGSMITH_PARAMS"]) == {"who": "ann"}
    assert len(seen["DAGSMITH_RUN_DATE"]) == 10
