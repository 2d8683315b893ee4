"""`dagsmith run`: the local runner end to end, through the real CLI in a subprocess."""

from __future__ import annotations

import json
import os
import signal
import sqlite3
import subprocess
import sys
import time
from pathlib import Path

import pytest

DAGSMITH = str(Path(sys.executable).parent / "dagsmith")

HELPERS = '''
import os, pathlib, time

def count():
    """Append one line per call: proves how often a step really ran."""
    with open(os.environ["COUNTER"], "a") as f:
        f.write(os.environ["DAGSMITH_STEP"] + "\\n")

def slow():
    count()
    time.sleep(float(os.environ.get("SLOW", "30")))

def flaky():
    flag = pathlib.Path(os.environ["COUNTER"] + ".flaky")
    count()
    if not flag.exists():
        flag.write_text("failed once")
        raise RuntimeError("transient failure")

def noop():
    pass

def fails_thrice():
    """Slow failures (1.5 s each) for its first three calls, then a quick success."""
    count()
    with open(os.environ["COUNTER"] + ".times", "a") as f:
        f.write(f"{time.time()}\\n")
    if open(os.environ["COUNTER"]).read().split().count(os.environ["DAGSMITH_STEP"]) <= 3:
        time.sleep(1.5)
        raise RuntimeError("not yet")
'''


@pytest.fixture
def project(tmp_path, monkeypatch):
    """A folder with a spec, data and a helpers module; cwd is that folder."""
    monkeypatch.chdir(tmp_path)
    (tmp_path / "helpers.py").write_text(HELPERS)
    (tmp_path / "people.csv").write_text("name,age\nann,10\nbob,60\ncid,30\n")
    monkeypatch.setenv("COUNTER", str(tmp_path / "counter.txt"))
    return tmp_path


def write(project: Path, text: str) -> str:
    (project / "pipeline.yaml").write_text(text)
    return "pipeline.yaml"


def run(*args, check_json=True, env=None, timeout=120):
    result = subprocess.run([DAGSMITH, "run", *args, "--format", "json"], capture_output=True, text=True, env=env, timeout=timeout)
    record = json.loads(result.stdout) if check_json else None  # stdout is the record and nothing else
    return result, record


def states(record: dict) -> dict:
    return {step: entry["state"] for step, entry in record["steps"].items()}


def counter(project: Path) -> list[str]:
    path = project / "counter.txt"
    return path.read_text().split() if path.exists() else []


BASE = """
dagsmith: 1
pipeline: {name: local}
params:
  who: {type: string, default: "O'Brien'); DROP TABLE people; --"}
sources:
  people: {type: csv, uri: people.csv}
features:
  adults:
    inputs: [people]
    sql: SELECT name, age, ${params.who} AS who FROM people WHERE age >= 18
"""


def test_sql_params_are_bound_not_pasted(project):
    spec = write(project, BASE)
    result, record = run(spec)
    assert result.returncode == 0 and record["status"] == "succeeded", result.stderr
    import pyarrow.parquet as pq

    table = pq.read_table(project / ".dagsmith" / "runs" / record["run_id"] / "steps" / "adults" / "table.parquet")
    assert table.column("who").to_pylist() == ["O'Brien'); DROP TABLE people; --"] * 2
    assert sorted(table.column("name").to_pylist()) == ["bob", "cid"]


def test_command_step_runs_without_a_shell(project):
    spec = write(project, BASE + """
steps:
  shout:
    run: {command: [python, -c, "import sys; print(sys.argv[1:])", "$(touch pwned)", "`touch pwned2`", "; touch pwned3"]}
""")
    result, record = run(spec)
    assert record["status"] == "succeeded", result.stderr
    assert not any((project / name).exists() for name in ("pwned", "pwned2", "pwned3"))
    log = (project / ".dagsmith" / "runs" / record["run_id"] / "logs" / "shout.log").read_text()
    assert "$(touch pwned)" in log and "`touch pwned2`" in log


def test_validation_fail_stops_downstream_and_names_the_expectation(project):
    spec = write(project, BASE + """
validation:
  - name: ages_ok
    on: people
    on_failure: fail
    expectations:
      - expect_column_values_to_be_between: {column: age, min_value: 0, max_value: 50}
      - expect_column_values_to_not_be_null: {column: name}
steps:
  after_adults: {after: [adults], run: {python: "helpers:count"}}
""")
    result, record = run(spec)
    assert result.returncode == 1 and record["status"] == "failed"
    assert states(record) == {"people": "succeeded", "ages_ok": "failed", "adults": "skipped", "after_adults": "skipped"}
    assert "expect_column_values_to_be_between" in record["steps"]["ages_ok"]["error"]
    assert "1 unexpected of 3" in record["steps"]["ages_ok"]["error"]
    (failed,) = [e for e in record["validation"]["ages_ok"]["expectations"] if not e["success"]]
    assert failed["unexpected_count"] == 1 and failed["partial_unexpected_list"] == [60]  # the failing values GX reported
    assert counter(project) == []


def test_validation_warn_goes_on(project):
    spec = write(project, BASE + """
validation:
  - name: ages_ok
    on: people
    on_failure: warn
    expectations: [{expect_column_values_to_be_between: {column: age, min_value: 0, max_value: 50}}]
""")
    result, record = run(spec)
    assert record["status"] == "succeeded" and states(record)["adults"] == "succeeded"
    assert record["validation"]["ages_ok"]["success"] is False
    text = subprocess.run([DAGSMITH, "runs", "show", record["run_id"]], capture_output=True, text=True).stdout
    assert "validation warning" in text and "expect_column_values_to_be_between" in text


def test_cache_hit_and_selective_invalidation(project):
    spec = write(project, BASE + """
  teens:
    inputs: [people]
    sql: SELECT * FROM people WHERE age < 18
  summary:
    inputs: [adults]
    sql: SELECT count(*) AS n FROM adults
""")
    _, first = run(spec)
    assert set(states(first).values()) == {"succeeded"}
    _, second = run(spec)
    assert set(states(second).values()) == {"cached"}
    (project / "pipeline.yaml").write_text((project / "pipeline.yaml").read_text().replace("age >= 18", "age >= 40"))
    _, third = run(spec)
    assert states(third) == {"people": "cached", "adults": "succeeded", "summary": "succeeded", "teens": "cached"}
    _, fourth = run(spec, "--no-cache")
    assert set(states(fourth).values()) == {"succeeded"}
    (project / "people.csv").write_text("name,age\nann,10\nbob,61\n")  # new data: the source re-runs
    _, fifth = run(spec)
    assert states(fifth)["people"] == "succeeded"


def test_retry_then_pass(project):
    spec = write(project, BASE + """
steps:
  wobbly: {run: {python: "helpers:flaky"}, retries: 2, retry_delay: 1s}
""")
    _, record = run(spec)
    assert record["status"] == "succeeded" and record["steps"]["wobbly"]["attempts"] == 2
    assert counter(project) == ["wobbly", "wobbly"]


def test_timeout_kills_the_step(project):
    spec = write(project, BASE + """
steps:
  stuck: {run: {python: "helpers:slow"}, timeout: 2s}
  after_stuck: {after: [stuck], run: {python: "helpers:count"}}
""")
    started = time.monotonic()
    result, record = run(spec)
    assert time.monotonic() - started < 25
    assert result.returncode == 1 and states(record)["stuck"] == "failed"
    assert "timed out after 2s" in record["steps"]["stuck"]["error"]
    assert states(record)["after_stuck"] == "skipped"


@pytest.mark.slow
def test_kill_9_then_resume_redoes_nothing_finished(project):
    spec = write(project, BASE + """
steps:
  first: {run: {python: "helpers:count"}}
  second: {after: [first], run: {python: "helpers:count"}}
  slow: {after: [second], run: {python: "helpers:slow"}}
  last: {after: [slow], run: {python: "helpers:count"}}
""")
    env = {**os.environ, "SLOW": "60"}
    proc = subprocess.Popen([DAGSMITH, "run", spec, "--format", "json"], stdout=subprocess.PIPE, stderr=subprocess.PIPE, env=env, start_new_session=True)
    deadline = time.monotonic() + 60
    while "slow" not in counter(project):
        assert time.monotonic() < deadline, "the slow step never started"
        time.sleep(0.1)
    os.killpg(proc.pid, signal.SIGKILL)  # the runner and its workers, as a crash would
    proc.wait()
    (run_id,) = os.listdir(project / ".dagsmith" / "runs")
    record = json.loads((project / ".dagsmith" / "runs" / run_id / "run.json").read_text())
    assert record["status"] == "running"
    assert states(record)["first"] == states(record)["second"] == "succeeded"
    result, resumed = run(spec, "--resume", run_id, env={**os.environ, "SLOW": "0"})
    assert result.returncode == 0 and resumed["status"] == "succeeded", result.stderr
    assert resumed["run_id"] == run_id
    assert counter(project) == ["first", "second", "slow", "slow", "last"]  # only the interrupted step again


def test_resume_records_every_attempt_and_the_final_attempts_time(project):
    """A step tried twice in a run (retries: 1), then twice more on --resume: 4 attempts, and its
    time is the final (quick) attempt's, not the span since the first attempt's start; runs show
    says the same, in pipeline order (issue 22, rough edges)."""
    import datetime as dt

    spec = write(project, BASE + """
steps:
  zeta: {run: {python: "helpers:noop"}}
  wobbly: {after: [zeta], run: {python: "helpers:fails_thrice"}, retries: 1, retry_delay: 0s}
""")
    def calls() -> list[float]:  # when each attempt began (each failing one lasts 1.5 s)
        return [float(t) for t in (project / "counter.txt.times").read_text().split()]

    def started(entry: dict) -> float:
        return dt.datetime.fromisoformat(entry["started"]).timestamp()

    result, record = run(spec)
    assert record["status"] == "failed" and record["steps"]["wobbly"]["attempts"] == 2, result.stderr
    assert started(record["steps"]["wobbly"]) > calls()[0] + 1.4  # the second attempt's start, after the first ended
    result, resumed = run(spec, "--resume", record["run_id"])
    wobbly = resumed["steps"]["wobbly"]
    assert resumed["status"] == "succeeded" and wobbly["attempts"] == 4, result.stderr
    assert len(calls()) == 4 and started(wobbly) > calls()[2] + 1.4, (wobbly, calls())  # the fourth attempt's
    assert counter(project).count("wobbly") == 4
    shown = subprocess.run([DAGSMITH, "runs", "show", record["run_id"]], capture_output=True, text=True).stdout
    rows = [line.split("┃")[1].strip() if "┃" in line else line.split("│")[1].strip() for line in shown.splitlines()
            if line.count("│") >= 5 or (line.count("┃") >= 5 and "step" not in line)]
    assert rows == [step.id for step in _steps_in_order(project, spec)], shown
    wobbly_row = next(line for line in shown.splitlines() if "wobbly" in line)
    assert wobbly_row.split("│")[4].strip() == "4", wobbly_row


def _steps_in_order(project: Path, spec: str):
    from dagsmith.compiler import compile_spec
    from dagsmith.spec import load_spec

    return compile_spec(load_spec(project / spec)).steps


def test_sql_sources_sqlite_and_duckdb(project, monkeypatch):
    db = project / "warehouse.db"
    with sqlite3.connect(db) as con:
        con.execute("CREATE TABLE customers (id INTEGER, plan TEXT)")
        con.executemany("INSERT INTO customers VALUES (?, ?)", [(1, "pro"), (2, "free"), (3, "pro")])
    import duckdb

    duck = project / "lake.duckdb"
    with duckdb.connect(str(duck)) as con:
        con.execute("CREATE TABLE orders AS SELECT range AS id FROM range(5)")
    monkeypatch.setenv("DAGSMITH_CONN_WAREHOUSE", f"sqlite:///{db}")
    monkeypatch.setenv("DAGSMITH_CONN_LAKE", str(duck))
    spec = write(project, """
dagsmith: 1
pipeline: {name: sql}
params: {plan: {type: string, default: "pro' OR '1'='1"}}
sources:
  customers: {type: sql, connection: warehouse, query: "SELECT * FROM customers WHERE plan = ${params.plan}"}
  all_pro: {type: sql, connection: warehouse, query: "SELECT * FROM customers WHERE plan = 'pro'"}
  orders: {type: sql, connection: lake, query: "SELECT * FROM orders WHERE id < 3"}
""")
    result, record = run(spec)
    assert record["status"] == "succeeded", result.stderr
    import pyarrow.parquet as pq

    base = project / ".dagsmith" / "runs" / record["run_id"] / "steps"
    assert pq.read_table(base / "customers" / "table.parquet").num_rows == 0  # the quote did not inject
    assert pq.read_table(base / "all_pro" / "table.parquet").num_rows == 2
    assert pq.read_table(base / "orders" / "table.parquet").num_rows == 3
    _, again = run(spec)
    assert states(again)["customers"] == "succeeded"  # SQL sources are never cached


def test_missing_connection_names_the_variable(project, monkeypatch):
    monkeypatch.delenv("DAGSMITH_CONN_WAREHOUSE", raising=False)
    spec = write(project, "dagsmith: 1\npipeline: {name: sql}\nsources:\n  c: {type: sql, connection: warehouse, query: SELECT 1}\n")
    result, record = run(spec)
    assert result.returncode == 1 and "export DAGSMITH_CONN_WAREHOUSE" in record["steps"]["c"]["error"]


def test_spec_error_exits_2_with_nothing_on_stdout(project):
    spec = write(project, "dagsmith: 1\npipeline: {name: x}\nsources: {a: {type: csv}}\n")
    result = subprocess.run([DAGSMITH, "run", spec, "--format", "json"], capture_output=True, text=True)
    assert result.returncode == 2 and result.stdout == "" and "missing required key 'uri'" in result.stderr


def test_runs_list_and_show(project):
    spec = write(project, BASE)
    _, record = run(spec)
    listing = subprocess.run([DAGSMITH, "runs", "list", "--format", "json"], capture_output=True, text=True)
    assert [r["run_id"] for r in json.loads(listing.stdout)] == [record["run_id"]]
    shown = subprocess.run([DAGSMITH, "runs", "show", record["run_id"], "--format", "json"], capture_output=True, text=True)
    assert json.loads(shown.stdout) == record
    missing = subprocess.run([DAGSMITH, "runs", "show", "nope"], capture_output=True, text=True)
    assert missing.returncode == 2 and "no run 'nope'" in missing.stderr


def test_parquet_globs_folders_and_python_transforms(project):
    import pyarrow as pa
    import pyarrow.parquet as pq

    (project / "lake" / "2026").mkdir(parents=True)
    pq.write_table(pa.table({"id": [1, 2], "v": [1.0, 2.0]}), project / "lake" / "2026" / "a.parquet")
    pq.write_table(pa.table({"id": [3], "v": [3.0]}), project / "lake" / "b.parquet")
    (project / "shapes.py").write_text(
        "def double(frames):\n    df = frames['folder'].copy()\n    df['v2'] = df['v'] * 2\n    return df.sort_values('id')\n"
    )
    spec = write(project, """
dagsmith: 1
pipeline: {name: files}
sources:
  folder: {type: parquet, uri: lake}
  globbed: {type: parquet, uri: "lake/*.parquet"}
  one: {type: csv, uri: people.csv}
features:
  doubled: {inputs: [folder], transform: "shapes:double"}
""")
    result, record = run(spec)
    assert record["status"] == "succeeded", result.stderr
    base = project / ".dagsmith" / "runs" / record["run_id"] / "steps"
    assert pq.read_table(base / "folder" / "table.parquet").num_rows == 3  # recursive
    assert pq.read_table(base / "globbed" / "table.parquet").num_rows == 1
    assert pq.read_table(base / "doubled" / "table.parquet").column("v2").to_pylist() == [2.0, 4.0, 6.0]
    assert "folder: succeeded (3 rows)" in result.stderr  # plain progress lines when not a terminal
    # a changed transform module re-runs the feature (code fingerprint), not the sources
    (project / "shapes.py").write_text((project / "shapes.py").read_text().replace("* 2", "* 3"))
    _, again = run(spec)
    assert states(again) == {"folder": "cached", "globbed": "cached", "one": "cached", "doubled": "succeeded"}
