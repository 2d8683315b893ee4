"""References at run time: bound as query parameters in SQL (DuckDB features, SQLAlchemy and
DuckDB sql sources), also inside quoted literals, and `$${` kept as a literal `${` everywhere.

Hostile parameter values (quotes, `--`, `;`, `${`, bind markers) must arrive exactly and
execute nothing: checked against real DuckDB and SQLite databases.
"""

from __future__ import annotations

import json
import os
import sqlite3
import subprocess
import sys
import textwrap
from pathlib import Path

import pandas as pd
import pyarrow.parquet as pq
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from dagsmith.runtime import make_context, run_step
from dagsmith.runtime.context import RunValues, StepFailed

from runtime_testing import Pipeline

HOSTILE = [
    "O'Brien'); DROP TABLE items; --",
    "'; SELECT 1; --",
    "x' OR '1'='1",
    "${params.label}",
    "$${HOME} ${run.id}",
    "$p_label :p_label ? $1 %s %(label)s \\: \\",
    "/* not a comment */ -- nor this",
    "multi\nline\ttext",
    "",
]
IDS = [f"value{i}" for i in range(len(HOSTILE))]


def values(**params) -> RunValues:
    return RunValues(run_id="run-7", run_date="2024-06-03", params={"label": "x", "n": 3, "ratio": 0.5, "flag": True, **params})


# --- the rewriting ---------------------------------------------------------------------------


@pytest.mark.parametrize("sql, query, bound", [
    ("SELECT ${params.n}", "SELECT $p_n", {"p_n": 3}),
    ("WHERE label = '${params.label}'", "WHERE label = $p_label", {"p_label": "x"}),
    ("SELECT 'pre-${params.label}-post' AS t", "SELECT ('pre-' || $p_label || '-post') AS t", {"p_label": "x"}),
    ("SELECT '${params.n}' AS t", "SELECT $t_n AS t", {"t_n": "3"}),              # in quotes: text
    ("SELECT '${params.label}${ params.n }'", "SELECT ($p_label || $t_n)", {"p_label": "x", "t_n": "3"}),
    ("SELECT 'it''s ${run.id}'", "SELECT ('it''s ' || $run_id)", {"run_id": "run-7"}),
    ("SELECT DATE '${run.date}'", "SELECT CAST($run_date AS DATE)", {"run_date": "2024-06-03"}),
    ("SELECT INTERVAL '${params.n}' DAY", "SELECT INTERVAL ($t_n) DAY", {"t_n": "3"}),
    ("SELECT 1 -- ${params.label}\n", "SELECT 1 -- ${params.label}\n", {}),          # a comment: unbound
    ("SELECT '$${HOME}', 'price $price'", "SELECT '${HOME}', 'price $price'", {}),
    ("SELECT $$a ${params.label}$$", "SELECT ($$a $$ || $p_label)", {"p_label": "x"}),
])
def test_bind_sql(sql, query, bound):
    assert values().bind_sql(sql) == (query, bound)


def test_bind_sql_for_sqlalchemy_escapes_every_other_colon():
    query, bound = values().bind_sql("SELECT '10:30 :x' AS t, x::int, ${params.n}, '${params.label}' FROM t", style="sqlalchemy")
    assert query == "SELECT '10\\:30 \\:x' AS t, x\\:\\:int, :p_n, :p_label FROM t"
    assert bound == {"p_n": 3, "p_label": "x"}


@pytest.mark.parametrize("sql, message", [
    ('SELECT * FROM "${params.label}"', "a reference inside a quoted name"),
    ("SELECT 'unclosed ${params.label}", "SQL syntax error: missing the closing '"),
    ("SELECT ${params.nope}", "unknown reference ${params.nope}"),
    ("SELECT 1 -- ${params.nope}", "unknown reference ${params.nope}"),
])
def test_bind_sql_refuses(sql, message):
    with pytest.raises(StepFailed, match=message.replace("$", r"\$").replace("(", r"\(")):
        values().bind_sql(sql)


def test_resolve_text():
    assert values().resolve("echo $${HOME} ${run.id} ${ params.label }/$${x}") == "echo ${HOME} run-7 x/${x}"
    assert values(label="${run.id}").resolve("${params.label}") == "${run.id}"  # a value is never read again


# --- DuckDB features, for real ------------------------------------------------------------------

FEATURE_SPEC = """
dagsmith: 1
pipeline: {name: binding}
params:
  label: {type: string, default: x}
  n: {type: integer, default: 2}
sources:
  items: {type: csv, uri: items.csv}
features:
  picked:
    inputs: [items]
    sql: |
      SELECT label, '${params.label}' AS exact, 'pre-${params.label}-post' AS wrapped,
             '${params.n}' AS n_text, ${params.n} AS n, DATE '${run.date}' AS day, '$${HOME}' AS escaped
      FROM items
      WHERE label = '${params.label}'  -- ${params.label}
"""


@pytest.mark.parametrize("value", HOSTILE, ids=IDS)
def test_hostile_values_in_duckdb_literals_arrive_exactly(tmp_path, value):
    pipeline = Pipeline(tmp_path, FEATURE_SPEC, {"items": pd.DataFrame({"label": [value, "other", "x"]})})
    environ = {"DAGSMITH_RUN_ID": "r1", "DAGSMITH_RUN_DATE": "2024-06-03", "DAGSMITH_PARAMS": json.dumps({"label": value})}
    ctx = make_context(pipeline.ir, "picked", pipeline.store, environ=environ)
    run_step(ctx)
    rows = pq.read_table(ctx.input_file("picked", "table.parquet")).to_pylist()
    assert rows == [{
        "label": value, "exact": value, "wrapped": f"pre-{value}-post", "n_text": "2", "n": 2,
        "day": __import__("datetime").date(2024, 6, 3), "escaped": "${HOME}",
    }]


# --- sql sources: SQLAlchemy (SQLite) and a DuckDB file ----------------------------------------

SOURCE_SPEC = """
dagsmith: 1
pipeline: {name: binding}
params:
  label: {type: string, default: x}
sources:
  picked:
    type: sql
    connection: warehouse
    query: |
      SELECT label, '${params.label}' AS exact, 'pre-${params.label}-post' AS wrapped,
             'price $price' AS price, 'at 10:30 :x' AS colon, '$${HOME}' AS escaped
      FROM items
      WHERE label = '${params.label}' -- ${params.label}
"""


def _source_rows(tmp_path, target: str, value: str) -> list[dict]:
    pipeline = Pipeline(tmp_path, SOURCE_SPEC, {})
    environ = {"DAGSMITH_RUN_ID": "r1", "DAGSMITH_PARAMS": json.dumps({"label": value})}
    ctx = make_context(pipeline.ir, "picked", pipeline.store, environ=environ)
    saved = os.environ.get("DAGSMITH_CONN_WAREHOUSE")
    os.environ["DAGSMITH_CONN_WAREHOUSE"] = target
    try:
        run_step(ctx)
    finally:
        if saved is None:
            os.environ.pop("DAGSMITH_CONN_WAREHOUSE")
        else:
            os.environ["DAGSMITH_CONN_WAREHOUSE"] = saved
    return pq.read_table(ctx.input_file("picked", "table.parquet")).to_pylist()


def _expected(value: str) -> list[dict]:
    return [{"label": value, "exact": value, "wrapped": f"pre-{value}-post", "price": "price $price",
             "colon": "at 10:30 :x", "escaped": "${HOME}"}]


@pytest.mark.parametrize("value", HOSTILE, ids=IDS)
def test_hostile_values_over_sqlalchemy_sqlite_arrive_exactly(tmp_path, value):
    db = tmp_path / "warehouse.db"
    with sqlite3.connect(db) as con:
        con.execute("CREATE TABLE items (label TEXT)")
        con.executemany("INSERT INTO items VALUES (?)", [(value,), ("other",), ("x",)])
    assert _source_rows(tmp_path, f"sqlite:///{db}", value) == _expected(value)
    with sqlite3.connect(db) as con:  # nothing was executed but the query
        assert con.execute("SELECT count(*) FROM items").fetchone() == (3,)


@pytest.mark.parametrize("value", HOSTILE[:4], ids=IDS[:4])
def test_hostile_values_over_a_duckdb_file_arrive_exactly(tmp_path, value):
    import duckdb

    db = tmp_path / "lake.duckdb"
    with duckdb.connect(str(db)) as con:
        con.execute("CREATE TABLE items (label VARCHAR)")
        con.executemany("INSERT INTO items VALUES (?)", [[value], ["other"], ["x"]])
    assert _source_rows(tmp_path, str(db), value) == _expected(value)


# --- $${ through `dagsmith run` -------------------------------------------------------------------


def test_escaped_reference_reaches_the_command_as_text(tmp_path):
    script = "import json, os, sys; open('argv.json', 'w').write(json.dumps([sys.argv[1:], os.environ['TEMPLATE']]))"
    spec = textwrap.dedent(f"""\
        dagsmith: 1
        pipeline: {{name: escapes, description: "costs in $${{currency}}"}}
        params: {{label: {{type: string, default: "a'b"}}}}
        steps:
          show:
            run: {{command: [{json.dumps(sys.executable)}, -c, {json.dumps(script)}, "$${{HOME}}", "${{params.label}}", "$${{run.id}}-${{run.id}}"]}}
            env: {{TEMPLATE: "$${{HOME}}/x"}}
          shell:
            run: {{command: [sh, -c, "echo $${{HOME}} > home.txt"]}}
        """)
    (tmp_path / "pipeline.yaml").write_text(spec, encoding="utf-8")
    dagsmith = str(Path(sys.executable).parent / "dagsmith")
    result = subprocess.run([dagsmith, "run", "pipeline.yaml", "--format", "json"], cwd=tmp_path, capture_output=True, text=True, timeout=120)
    assert result.returncode == 0, result.stderr
    run_id = json.loads(result.stdout)["run_id"]
    argv, template = json.loads((tmp_path / "argv.json").read_text())
    assert argv == ["${HOME}", "a'b", f"${{run.id}}-{run_id}"]
    assert template == "${HOME}/x"
    assert (tmp_path / "home.txt").read_text().strip() == os.environ["HOME"]  # the shell expanded ${HOME}


# --- any value, any literal ---------------------------------------------------------------------


@settings(max_examples=200, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(value=st.text(st.characters(blacklist_categories=("Cs",), blacklist_characters="\x00"), max_size=40),
       before=st.sampled_from(["", "a", "it''s ", "$${", "--", "/*", ":x "]),
       after=st.sampled_from(["", "b", " ''", "}", "*/", ";"]))
def test_any_value_in_any_literal_arrives_exactly_in_duckdb(value, before, after):
    import duckdb

    sql = f"SELECT '{before}${{params.label}}{after}' AS v"
    query, bound = values(label=value).bind_sql(sql)
    expected = before.replace("''", "'").replace("$${", "${") + value + after.replace("''", "'")
    with duckdb.connect() as con:
        assert con.execute(query, bound).fetchone() == (expected,)
