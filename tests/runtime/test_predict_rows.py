"""Runtime: a predict fanned out over row ranges (`rows_per_task`). Item i scores rows
[i*N, (i+1)*N) of the input, reading only the row groups that hold them; its part of the table is
items/<step>/<i>/table.parquet; the parts, read in item order, are exactly the table one task
writes, and every reader (SQL features, read_table) sees them as that one table."""

from __future__ import annotations

import pyarrow as pa
import pyarrow.parquet as pq
import pytest

from dagsmith.runtime.commands import item_ranges
from dagsmith.runtime.context import StepFailed

from runtime_testing import Pipeline
from test_evaluate_deploy import classification_rows, spec

PREDICT = """predict:
  one: {model: trained, input: rows, batch_rows: 300}
  fanned: {model: trained, input: rows, batch_rows: 300, rows_per_task: 1000}
features:
  seen:
    inputs: [fanned]
    sql: SELECT row_number() OVER () - 1 AS position, x1, prediction FROM fanned
"""


def _pipeline(tmp_path, n: int = 5000, text: str = PREDICT) -> Pipeline:
    p = Pipeline(tmp_path, spec() + text, {"rows": classification_rows(n=n)})
    # the input in row groups of 700 rows: item ranges of 1,000 start and stop inside them
    staging = p.store.stage(p.store.step_key("r1", "rows"))
    pq.write_table(pa.Table.from_pandas(classification_rows(n=n), preserve_index=False), staging.path("table.parquet"),
                   row_group_size=700)
    p.store.commit(staging)
    p.run_through("train")
    return p


def _one_table(p: Pipeline, step_id: str):
    return pq.read_table(p.store.file(p.store.manifest(p.store.step_key("r1", step_id)), "table.parquet"))


def test_the_items_parts_are_exactly_the_one_task_table(tmp_path):
    p = _pipeline(tmp_path)
    assert p.ir.step("fanned").fanout.rows_per_item == 1000
    assert item_ranges(p.ctx("fanned"), 2) == [{"start": 0, "stop": 3}, {"start": 3, "stop": 5}]
    one = p.run("one")
    results = [p.run("fanned", item=i) for i in range(5)]
    assert [r["range"] for r in results] == [[0, 1000], [1000, 2000], [2000, 3000], [3000, 4000], [4000, 5000]]
    parts = [pq.read_table(p.store.file(p.store.manifest(p.store.step_key("r1", "fanned", i)), "table.parquet"))
             for i in range(5)]
    assert [part.num_rows for part in parts] == [1000] * 5
    assert all(p.store.manifest(p.store.step_key("r1", "fanned", i))["items"] == 5 for i in range(5))
    whole = pa.concat_tables(parts)
    assert one["rows"] == 5000 and whole.equals(_one_table(p, "one"))
    assert p.ctx("seen").read_table("fanned").equals(whole)  # what every reader sees

    # a SQL feature reads the parts as one table, rows in order
    assert p.run("seen")["rows"] == 5000
    seen = _one_table(p, "seen").to_pandas()
    assert seen["position"].tolist() == list(range(5000))
    assert seen["x1"].tolist() == whole.column("x1").to_pylist()
    assert seen["prediction"].tolist() == whole.column("prediction").to_pylist()


def test_without_item_every_item_runs_and_a_short_last_range(tmp_path):
    p = _pipeline(tmp_path, n=2500)
    result = p.run("fanned")
    assert result["items"] == 3 and result["rows"] == 2500
    assert p.store.manifest(p.store.step_key("r1", "fanned", 2))["files"]  # the short last part
    assert p.ctx("seen").read_table("fanned").equals(p.ctx("seen").read_table("fanned"))
    assert p.ctx("seen").read_table("fanned").num_rows == 2500
    p.run("one")
    assert p.ctx("seen").read_table("fanned").equals(_one_table(p, "one"))
    with pytest.raises(StepFailed, match=r"item 3 is out of range: step 'fanned' has 3 items \(0..2\) for the 2500 rows"):
        p.run("fanned", item=3)


def test_a_missing_part_fails_the_reader_by_name(tmp_path):
    p = _pipeline(tmp_path, n=2000)
    p.run("fanned", item=0)
    with pytest.raises(Exception, match=r"items/fanned/1"):
        p.ctx("seen").read_table("fanned")


def test_an_empty_input_is_one_empty_item(tmp_path):
    p = Pipeline(tmp_path, spec() + PREDICT, {"rows": classification_rows(n=200)})
    p.run_through("train")
    p.commit_tables("r1", {"rows": classification_rows(n=200).head(0)})
    assert item_ranges(p.ctx("fanned"), 10) == [{"start": 0, "stop": 1}]
    assert p.run("fanned", item=0)["rows"] == 0
    table = p.ctx("seen").read_table("fanned")
    assert table.num_rows == 0 and table.column_names[-3:] == ["prediction", "probability", "model_version"]


def test_batches_of_a_row_range_over_parts_and_row_groups(tmp_path):
    """The reader of a range: rows [start, stop) of a table in several files of several row
    groups, in order, in batches of at most batch_rows, whatever the boundaries."""
    from dagsmith.runtime.predict import batches

    sizes, group_rows = (7, 0, 13, 5), (3, 1, 4, 2)
    files, whole = [], []
    for index, (size, groups) in enumerate(zip(sizes, group_rows)):
        values = list(range(sum(sizes[:index]), sum(sizes[:index]) + size))
        path = tmp_path / f"{index}.parquet"
        pq.write_table(pa.table({"v": pa.array(values, type=pa.int64())}), path, row_group_size=groups)
        files.append(path)
        whole += values
    for start, stop in [(0, None), (0, 25), (2, 9), (7, 8), (6, 21), (20, 25), (24, 25), (3, 3), (25, None)]:
        got = list(batches(files, 4, start, stop))
        assert all(0 < len(b) <= 4 for b in got)
        assert [v for b in got for v in b.column("v").to_pylist()] == whole[start:stop], (start, stop)
