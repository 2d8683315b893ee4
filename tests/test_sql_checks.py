"""SQL checked by `dagsmith validate`, and `$${` escapes in every text value.

The error corpus (tests/errors/085-094) holds the bad specs with their exact diagnostics; these
tests cover positions in every YAML scalar style, what passes, the warnings, and the laziness of
the sqlglot import.
"""

from __future__ import annotations

import subprocess
import sys
import textwrap

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from dagsmith_testing import EXAMPLES, REPO, compile_path
from dagsmith.cli import main
from dagsmith.errors import Mark, SpecError
from dagsmith.references import references, substitute
from dagsmith.spec import checked_document, load_spec
from dagsmith.spec.document import locate
from dagsmith.spec.sql_check import analyze
from dagsmith.spec.yamlpos import text_position

HEAD = """\
dagsmith: 1
pipeline: {name: p}
params:
  n: {type: integer, default: 3}
  label: {type: string, default: x}
  ratio: {type: number, default: 0.5}
  flag: {type: boolean, default: true}
sources:
  events: {type: csv, uri: events.csv}
  customers: {type: csv, uri: customers.csv}
"""


def diagnostics(write_spec, text: str) -> list[tuple[int, int, str, str]]:
    path = write_spec(HEAD + textwrap.dedent(text))
    try:
        load_spec(path)
    except SpecError as exc:
        return [(d.mark.line, d.mark.column, d.path, d.message + (f"; {d.hint}" if d.hint else "")) for d in exc.diagnostics]
    return []


def feature(sql_yaml: str, inputs: str = "[events]") -> str:
    """A `features: {f: ...}` block; `sql_yaml` is the text after `sql:` (line 13 of the spec)."""
    return f"features:\n  f:\n    inputs: {inputs}\n    sql: {sql_yaml}\n"


SQL_LINE = HEAD.count("\n") + 4  # the line of `sql:` in a spec made by feature()


# --- positions ------------------------------------------------------------------------------


@pytest.mark.parametrize("sql_yaml, line, column", [
    ("SELECT a FRM events", SQL_LINE, 23),                                  # plain, one line
    ("|\n      SELECT a\n      FROM events\n      WHERE x = = 1", SQL_LINE + 3, 17),   # literal block
    ("|  # a comment\n      SELECT a\n\n\n      FROM events WHERE", SQL_LINE + 4, 19),  # blank lines
    ("|-\n        SELECT a\n          FROM events\n        ORDER BY BY 1", SQL_LINE + 3, 21),  # deeper indent
    (">\n      SELECT a\n        FROM events\n      WHERE (x", SQL_LINE + 3, 14),  # folded
    ("SELECT a\n      FROM events\n      WHERE (x", SQL_LINE + 2, 14),            # plain, folded lines
    ("'SELECT ''a'' AS x\n      FROM events WHERE'", SQL_LINE + 1, 19),            # single-quoted
    ('"SELECT \\"a\\" AS x,\\n\\t\\u0062\\\n      \\ FROM events WHERE"', SQL_LINE + 1, 21),  # escapes
    ("|\n      SELECT '${params.label}' AS l, ${params.n} AS n\n      FROM events WHERE", SQL_LINE + 2, 19),
])
def test_syntax_errors_point_at_the_token_in_every_style(write_spec, sql_yaml, line, column):
    found = diagnostics(write_spec, feature(sql_yaml))
    assert [(d[0], d[1], d[2]) for d in found] == [(line, column, "features.f.sql")], found
    assert found[0][3].startswith("SQL syntax error")


def test_every_character_maps_to_itself(write_spec):
    """For every non-space character of every style, the position found holds that character
    (or starts its escape)."""
    styles = {
        "literal": "|\n      SELECT 'a''b', \"c\"\n        FROM t -- x\n\n      WHERE y = $$z$$",
        "folded": ">-\n      SELECT a,\n        b\n\n      FROM t",
        "plain": "SELECT a,\n      b   FROM\n\n      t WHERE 'x''y'",
        "single": "'SELECT ''a'',\n      b FROM t'",
        "double": '"SELECT \\"a\\",\\tb\\n FROM \\x74\\\n      \\ WHERE \\u00e9"',
    }
    text = HEAD + "x-sql:\n" + "".join(f"  {name}: {value}\n" for name, value in styles.items())
    path = write_spec(text)
    doc = checked_document(path)
    lines = text.splitlines()
    for name in styles:
        value = doc["x-sql"][name]
        mark = locate(doc, ("x-sql", name))
        for offset, char in enumerate(value):
            if char.isspace():
                continue
            at = text_position(mark, value, offset)
            source = lines[at.line - 1][at.column - 1:]
            assert source.startswith(char) or source.startswith("\\") or (char == "'" and source.startswith("''")), (name, offset, char, at)


def test_without_the_file_the_value_start_is_used():
    mark = Mark("no/such/file.yaml", 3, 10)
    assert text_position(mark, "SELECT 1", 5) == mark


def test_a_reference_error_points_at_the_reference(write_spec):
    found = diagnostics(write_spec, feature("|\n      SELECT *\n      FROM events LIMIT ${params.label}"))
    assert found == [(SQL_LINE + 2, 25, "features.f.sql",
                      "LIMIT takes a row count, but ${params.label} is a string; use an integer parameter")]


def test_sql_in_an_included_file_points_there(write_spec):
    write_spec(feature("|\n      SELECT * FROM evnts"), "parts/features.yaml")
    path = write_spec(HEAD + "include: parts/features.yaml\n")
    with pytest.raises(SpecError) as caught:
        load_spec(path)
    (d,) = caught.value.diagnostics
    assert (d.mark.file, d.mark.line, d.mark.column) == ("parts/features.yaml", 5, 21)


def test_sql_in_an_environment_overlay(write_spec):
    text = HEAD + feature("SELECT * FROM events") + "environments:\n  dev:\n    features: {f: {sql: SELECT * FORM events}}\n"
    path = write_spec(text)
    load_spec(path)
    with pytest.raises(SpecError) as caught:
        load_spec(path, env="dev")
    (d,) = caught.value.diagnostics
    assert (d.mark.line, d.mark.column, d.path) == (SQL_LINE + 3, 39, "features.f.sql")


# --- what passes ----------------------------------------------------------------------------


@pytest.mark.parametrize("sql", [
    "WITH recent AS (SELECT * FROM events) SELECT * FROM recent",
    "SELECT * FROM EVENTS",                                     # DuckDB names are case-insensitive
    "SELECT * FROM events e, read_csv('other.csv') o",          # a table function is not a table
    "SELECT * FROM events WHERE label = '${params.label}' AND d > DATE '${run.date}'",
    "SELECT 'pre-${params.label}-post' AS t, '${params.n}' AS n_text FROM events",
    "SELECT * FROM events WHERE ts > now() - INTERVAL (${params.n}) DAY LIMIT ${params.n} OFFSET ${params.n}",
    "SELECT * FROM events WHERE ts > now() - INTERVAL '${params.n} days'",
    "SELECT 'price $price', '$1', '?' FROM events -- ${params.label} in a comment",
    "SELECT '$${not a reference}' AS x, ${ params.ratio } * 2 AS r, ${params.flag} AS f FROM events",
    "SELECT * FROM events USING SAMPLE 10 ROWS",
])
def test_valid_sql(write_spec, sql):
    assert diagnostics(write_spec, feature(f'"{sql}"')) == []


@pytest.mark.parametrize("name", EXAMPLES)
def test_examples_are_still_valid(in_repo, name):
    doc = checked_document(f"examples/{name}/pipeline.yaml")
    assert list(doc.warnings) == []


# --- what fails -----------------------------------------------------------------------------


@pytest.mark.parametrize("sql, at, message", [
    ("SELECT * FROM main.events", "main", "reads table 'main.events', which is not one of its inputs (events); did you mean 'events'?"),
    ("SELECT * FROM events JOIN customers USING (id)", "customers",
     "reads 'customers', which is not one of its inputs (events): add 'customers' to inputs"),
    ("SELECT * FROM customer", "customer", "reads table 'customer', which is not one of its inputs (events); did you mean 'customers'?"),
    ("SELECT * FROM events WHERE a = ?", "?",
     "query parameter '?' has no value: dagsmith binds only its own references; write ${params.NAME}"),
    ("SELECT * FROM events WHERE a = $x", "$x",
     "query parameter '$x' has no value: dagsmith binds only its own references; write ${params.NAME}"),
    ("SELECT * FROM events WHERE a = $1", "$1",
     "query parameter '$1' has no value: dagsmith binds only its own references; write ${params.NAME}"),
    ("SELECT * FROM events LIMIT '${params.n}'", "${",
     "LIMIT takes a row count, but ${params.n} is a string (it is in quotes: text); use an integer parameter"),
    ("SELECT * FROM events LIMIT ${run.date}", "${", "LIMIT takes a row count, but ${run.date} is a string; use an integer parameter"),
    ("SELECT * FROM events LIMIT 5 OFFSET ${params.ratio}", "${",
     "OFFSET takes a row count, but ${params.ratio} is a number; use an integer parameter"),
    ("SELECT * FROM events WHERE ts > now() - INTERVAL ${params.n} DAY", "${",
     "write INTERVAL (${params.n}) with parentheses: DuckDB reads a parameter after INTERVAL only in parentheses"),
    ("SELECT e.${params.label} FROM events e", "${", "${params.label} stands where a column name goes: a reference is bound as a value, "
     "never pasted into the SQL, so it cannot name a table, column or alias"),
    ("SELECT * FROM ${params.label}", "${", "${params.label} stands where a table name goes: a reference is bound as a value, "
     "never pasted into the SQL, so it cannot name a table, column or alias"),
    ("SELECT 1 AS ${params.label} FROM events", "${", "${params.label} stands where an alias goes: a reference is bound as a value, "
     "never pasted into the SQL, so it cannot name a table, column or alias"),
    ("SELECT x${params.n} FROM events", "${", "${params.n}: a reference as part of the word 'x${params.n}': references are bound as "
     "values, never pasted into the SQL, so they cannot be part of a name or keyword"),
    ("SELECT ${params.n}x FROM events", "${", "${params.n}: a reference must not be followed by a letter, digit or '_': add a space"),
    ("SELECT E'${params.label}' FROM events", "${", "${params.label}: a reference inside this kind of literal: write it in a plain '...' string"),
    ("SELECT * FROM events WHERE a = 'unclosed", "'unclosed", "SQL syntax error: missing the closing '"),
])
def test_invalid_sql(write_spec, sql, at, message):
    found = diagnostics(write_spec, feature(f'"{sql}"'))
    column = len('    sql: "') + sql.index(at) + 1
    assert [(d[0], d[1], d[3]) for d in found] == [(SQL_LINE, column, message)]


def test_sql_problems_come_with_the_other_semantic_errors(write_spec):
    found = diagnostics(write_spec, feature("SELECT * FORM events") + "evaluation: {metrics: [roc_auc]}\n")
    assert [d[2] for d in found] == ["features.f.sql", "evaluation"]


def test_unknown_references_in_sql_are_reported_once(write_spec):
    found = diagnostics(write_spec, feature('"SELECT * FROM events WHERE a = ${params.nope}"'))
    assert [d[3] for d in found] == ["unknown parameter '${params.nope}'"]


# --- warnings -------------------------------------------------------------------------------


def test_an_unread_input_is_a_warning_and_the_spec_stays_valid(write_spec, capsys):
    path = write_spec(HEAD + feature("SELECT * FROM events", "[events, customers]"))
    doc = checked_document(path)
    assert [(w.level, w.mark.line, w.mark.column, w.path, w.message) for w in doc.warnings] == [
        ("warning", SQL_LINE - 1, 22, "features.f.inputs[1]", "input 'customers' is never read by the SQL"),
    ]
    assert doc.warnings[0].format() == f"pipeline.yaml:{SQL_LINE - 1}:22: warning: features.f.inputs[1]: input 'customers' is never read by the SQL"
    assert main(["validate", path]) == 0
    assert load_spec(path).features[0].inputs == ("events", "customers")


def test_warnings_do_not_count_as_errors_but_travel_with_them(write_spec):
    path = write_spec(HEAD + feature("SELECT * FROM events LIMIT ${params.label}", "[events, customers]"))
    with pytest.raises(SpecError) as caught:
        checked_document(path)
    assert [d.level for d in caught.value.diagnostics] == ["error"]
    assert [w.path for w in caught.value.warnings] == ["features.f.inputs[1]"]


# --- sql sources ----------------------------------------------------------------------------


def test_sql_source_queries_are_checked_but_their_tables_are_not(write_spec):
    text = HEAD.replace("sources:\n", "sources:\n  db: {type: sql, connection: warehouse, query: \"SELECT * FROM anything WHERE plan = '${params.label}'\"}\n"
                        "  bad: {type: sql, connection: warehouse, query: \"SELECT * FROM t WHERE a = = 1\"}\n")
    path = write_spec(text)
    with pytest.raises(SpecError) as caught:
        load_spec(path)
    line = text.splitlines()[9]
    assert [(d.mark.line, d.mark.column, d.path) for d in caught.value.diagnostics] == [(10, line.index("= =") + 3, "sources.bad.query")]


# --- escapes --------------------------------------------------------------------------------


def test_escapes_are_accepted_in_every_text_value(write_spec):
    path = write_spec(HEAD.replace("uri: events.csv", 'uri: "data/$${x}/events.csv"') + textwrap.dedent("""\
        features:
          f:
            description: "costs in $${currency}"
            inputs: [events]
            sql: SELECT '$${x}' AS a FROM events
            env: {TEMPLATE: "$${HOME}/x"}
        steps:
          s:
            run: {command: [bash, -c, "echo $${HOME} $$${run.id}"]}
        """))
    ir = compile_path(path)
    step = {s.id: s for s in ir.steps}
    assert step["s"].config["command"] == ["bash", "-c", "echo $${HOME} $$${run.id}"]  # the IR keeps what was written
    assert step["f"].config["sql"] == "SELECT '$${x}' AS a FROM events"


def test_an_unescaped_unknown_reference_is_still_an_error(write_spec):
    path = write_spec(HEAD + 'steps:\n  s:\n    run: {command: [bash, -c, "echo $${HOME} ${HOME}"]}\n')
    with pytest.raises(SpecError) as caught:
        load_spec(path)
    assert [d.message for d in caught.value.diagnostics] == ["unknown reference '${HOME}': use ${params.NAME}, ${run.date} or ${run.id}"]


@pytest.mark.parametrize("text, refs, substituted", [
    ("${params.a}", ["params.a"], "A"),
    ("$${params.a}", [], "${params.a}"),
    ("$$${params.a}", [], "$${params.a}"),       # a `$`, then the escape
    ("$${HOME} ${ run.id }", ["run.id"], "${HOME} R"),
    ("$HOME $$ ${unclosed", [], "$HOME $$ ${unclosed"),
    ("a$${b}${params.a}", ["params.a"], "a${b}A"),
])
def test_reference_scanning(text, refs, substituted):
    assert [r.name for r in references(text)] == refs
    assert substitute(text, {"params.a": "A", "run.id": "R"}.__getitem__) == substituted


# --- speed: sqlglot only for a spec with SQL -----------------------------------------------------


def test_sqlglot_is_imported_only_when_a_spec_has_sql(tmp_path):
    (tmp_path / "no_sql.yaml").write_text(HEAD)
    (tmp_path / "sql.yaml").write_text(HEAD + feature("SELECT * FROM events"))
    code = (
        "import sys; from dagsmith.spec import checked_document\n"
        "checked_document(sys.argv[1]); print('sqlglot' in sys.modules)\n"
    )
    for name, expected in (("no_sql.yaml", "False"), ("sql.yaml", "True")):
        out = subprocess.run([sys.executable, "-c", code, str(tmp_path / name)], capture_output=True, text=True, cwd=REPO)
        assert out.stdout.strip() == expected, out.stderr


# --- robustness -------------------------------------------------------------------------------

FRAGMENTS = ["SELECT", " ", "*", "a", ",", "FROM", "events", "WHERE", "=", "'", "''", '"', "(", ")", "--", "\n",
             "/*", "*/", "$$", "${params.n}", "${params.label}", "$${", "${run.date}", "${ run.id }", "${x}", "}",
             "LIMIT", "INTERVAL", "DAY", "DATE", "::", ":", "?", "$1", "E'", "N'", "WITH", "AS", "JOIN", ";", "é", "\t"]


@settings(max_examples=300, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(st.lists(st.sampled_from(FRAGMENTS), max_size=30).map("".join))
def test_any_sql_text_is_analyzed_without_crashing(sql):
    analysis = analyze(sql, {"n": "integer", "label": "string"})
    for finding in analysis.findings:
        assert 0 <= finding.offset <= len(sql) and finding.message
    for _, offset in analysis.tables:
        assert 0 <= offset <= len(sql)


def test_validate_prints_warnings_and_still_passes(tmp_path):
    import json
    import subprocess
    import sys
    from pathlib import Path

    spec = tmp_path / "p.yaml"
    spec.write_text("dagsmith: 1\npipeline: {name: p}\nsources:\n  a: {type: csv, uri: a.csv}\n  b: {type: csv, uri: b.csv}\n"
                    "features:\n  f:\n    inputs: [a, b]\n    sql: SELECT * FROM a\n")
    exe = str(Path(sys.executable).parent / "dagsmith")
    text = subprocess.run([exe, "validate", str(spec)], capture_output=True, text=True)
    assert text.returncode == 0 and f"{spec}:8:17: warning: features.f.inputs[1]: input 'b' is never read by the SQL" in text.stderr
    as_json = subprocess.run([exe, "validate", str(spec), "--format", "json"], capture_output=True, text=True)
    data = json.loads(as_json.stdout)
    assert data["valid"] is True and [w["path"] for w in data["warnings"]] == ["features.f.inputs[1]"]
    compiled = subprocess.run([exe, "compile", str(spec), "--target", "ir", "-o", str(tmp_path / "out")], capture_output=True, text=True)
    assert compiled.returncode == 0 and "warning: features.f.inputs[1]" in compiled.stderr
