"""`dagsmith diff`: leaf changes, each once, readable; a step that only moved in the spec is not
a change in what the pipeline does."""

from __future__ import annotations

import json

from dagsmith import irdiff
from dagsmith.cli import main

BASE = """dagsmith: 1
pipeline: {name: p}
params:
  days: {type: integer, default: 30}
sources:
  a: {type: csv, uri: a.csv}
  b: {type: csv, uri: b.csv}
validation:
  - name: a_ok
    on: a
    expectations: [{expect_column_values_to_not_be_null: {column: x}}]
  - name: b_ok
    on: b
    expectations: [{expect_column_values_to_not_be_null: {column: y}}]
"""


def run(capsys, *args):
    code = main(list(args))
    out, err = capsys.readouterr()
    return code, out, err


def test_a_field_set_where_there_was_none_is_one_leaf_change(capsys, write_spec):
    """Was: `resources: {} -> None` and then `resources.cpu: None -> '1'`."""
    old = write_spec(BASE, "old.yaml")
    new = write_spec(BASE.replace("  a: {type: csv, uri: a.csv}", "  a: {type: csv, uri: a.csv, resources: {cpu: 1}}"), "new.yaml")
    code, out, _ = run(capsys, "diff", old, new)
    assert code == 1
    assert out == '~ step a\n    resources.cpu: "1" (added)\n'
    code, out, _ = run(capsys, "diff", old, new, "--format", "json")
    assert json.loads(out)["changed"] == {"a": [{"field": "resources.cpu", "new": "1"}]}
    code, out, _ = run(capsys, "diff", new, old)
    assert out == '~ step a\n    resources.cpu: "1" (removed)\n'


def test_params_and_backends_changes_are_leaves(capsys, write_spec):
    old = write_spec(BASE + "backends:\n  airflow: {pool: ml}\n", "old.yaml")
    new = write_spec(BASE.replace("default: 30}", "default: 60}\n  region: {type: string, default: eu}")
                     + "backends:\n  airflow: {pool: ml, dag_id: p2}\n", "new.yaml")
    code, out, _ = run(capsys, "diff", old, new)
    assert code == 1
    lines = out.splitlines()
    assert "~ params.days.default: 30 -> 60" in lines
    assert '~ backends.airflow.dag_id: "p2" (added)' in lines
    (region,) = [line for line in lines if line.startswith("~ params.region")]
    assert region.startswith('~ params.region: {"default": "eu"') and region.endswith("(added)")
    assert not any("None" in line or "{} ->" in line for line in lines)
    assert len(lines) == len(set(lines)) == 3  # each change once


def test_a_step_that_only_moved_in_the_spec_is_not_a_change(capsys, write_spec):
    old = write_spec(BASE, "old.yaml")
    a_ok = BASE[BASE.index("  - name: a_ok"):BASE.index("  - name: b_ok")]
    swapped = BASE.replace(a_ok, "") + a_ok  # the two validations in the other order
    new = write_spec(swapped, "new.yaml")
    code, out, _ = run(capsys, "diff", old, new)
    assert code == 0
    assert out == ("no changes in what the pipeline does\n"
                   "= step a_ok: only moved in the spec (validation[0] -> validation[1])\n"
                   "= step b_ok: only moved in the spec (validation[1] -> validation[0])\n")
    code, out, _ = run(capsys, "diff", old, new, "--format", "json")
    data = json.loads(out)
    assert code == 0 and data["changed"] == {} and data["moved"]["a_ok"] == {"old": ["validation", 0], "new": ["validation", 1]}


def test_a_moved_step_that_also_changed_is_shown_with_its_changes(capsys, write_spec):
    old = write_spec(BASE, "old.yaml")
    a_ok = BASE[BASE.index("  - name: a_ok"):BASE.index("  - name: b_ok")]
    new = write_spec(BASE.replace(a_ok, "") + a_ok.replace("column: x", "column: z"), "new.yaml")
    code, out, _ = run(capsys, "diff", old, new)
    assert code == 1
    assert out == ('~ step a_ok\n'
                   '    config.expectations[0].kwargs.column: "x" -> "z"\n'
                   '    (also moved in the spec: validation[0] -> validation[1])\n'
                   '= step b_ok: only moved in the spec (validation[1] -> validation[0])\n')


def test_long_lists_say_what_differs():
    result = {"added": [], "removed": [], "pipeline": [], "moved": {}, "changed": {"deploy": [
        {"field": "inputs", "old": [f"table:source_number_{i}" for i in range(6)], "new": [f"table:source_number_{i}" for i in (1, 0, 2, 3, 4, 5)]},
        {"field": "depends_on", "old": [f"step_number_{i}" for i in range(6)], "new": [f"step_number_{i}" for i in range(1, 7)]},
    ]}}
    assert irdiff.render(result).splitlines()[1:] == [
        "    inputs: the same 6 items in another order",
        '    depends_on: added ["step_number_6"], removed ["step_number_0"]',
    ]


def test_the_help_says_what_counts_as_a_change(capsys):
    code, out, _ = run(capsys, "diff", "--help")
    assert code == 0 and "only moved in the spec" in out and "does not count as a" in out


def test_target_adds_a_unified_diff_of_the_generated_files(capsys, write_spec):
    old = write_spec(BASE, "old.yaml")
    new = write_spec(BASE.replace("default: 30", "default: 45"), "new.yaml")
    code, out, _ = run(capsys, "diff", old, new, "--target", "airflow")
    assert code == 1
    assert "--- a/p.py\n+++ b/p.py\n" in out and "--- a/p.ir.json\n+++ b/p.ir.json\n" in out
    changed = [line for line in out.splitlines() if line.startswith(("-", "+")) and not line.startswith(("---", "+++"))]
    assert any(line.startswith("-") and "30" in line for line in changed) and any(line.startswith("+") and "45" in line for line in changed)
    code, out, _ = run(capsys, "diff", old, new, "--target", "airflow", "--format", "json")
    files = json.loads(out)["files"]
    assert sorted(files) == ["p.ir.json", "p.py"] and files["p.py"].startswith("--- a/p.py\n")
    # the same spec twice: nothing differs, generated files included
    code, out, _ = run(capsys, "diff", old, old, "--target", "airflow")
    assert code == 0 and "---" not in out


def test_file_diffs_of_a_file_only_one_side_has():
    got = irdiff.file_diffs({"a.txt": "x\n"}, {"b.txt": "y"})
    assert got["a.txt"] == "--- a/a.txt\n+++ /dev/null\n@@ -1 +0,0 @@\n-x\n"
    assert got["b.txt"] == "--- /dev/null\n+++ b/b.txt\n@@ -0,0 +1 @@\n+y\n\\ No newline at end of file\n"
