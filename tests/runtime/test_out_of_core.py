"""Out of core (issue 24): a SQL feature streams its result with DuckDB's COPY into Parquet parts
under a memory_limit taken from the step's `resources.memory` (runtime/dataset.py); the manifest
lists every part, and every reader (a SQL feature, validation, training, predict, dagsmith.step)
reads the parts, in order, as the one table."""

from __future__ import annotations

import numpy as np
import pandas as pd
import pyarrow.parquet as pq
import pytest

from dagsmith.runtime import dataset
from dagsmith.runtime.store import Store

from runtime_testing import RUN, Pipeline

N = 370_000  # four DuckDB row groups of 122,880 rows: with parts of 1.5 MiB (32Mi of memory), several parts

SPEC = """
dagsmith: 1
pipeline: {name: ooc}
sources:
  events: {type: csv, uri: events.csv}
  users: {type: csv, uri: users.csv}
features:
  joined:
    inputs: [events, users]
    resources: {memory: 32Mi}
    sql: |
      SELECT e.event_id, e.amount, u.region, e.y,
             current_setting('memory_limit') AS memory_limit,
             current_setting('preserve_insertion_order') AS ordered
      FROM events e JOIN users u USING (user_id)
      ORDER BY e.event_id  -- a trailing comment, and a semicolon;
  per_user:
    inputs: [joined]
    key: [region]
    resources: {memory: 32Mi}
    sql: SELECT region, count(*) AS n, current_setting('preserve_insertion_order') AS ordered FROM joined GROUP BY region
validation:
  - name: joined_ok
    on: joined
    expectations:
      - expect_table_row_count_to_be_between: {min_value: 370000, max_value: 370000}
      - expect_column_values_to_not_be_null: {column: event_id}
training:
  inputs: [joined]
  target: y
  split: {test_size: 0.25, seed: 1}
  model: {estimator: sklearn.linear_model.LogisticRegression}
predict:
  scores: {model: trained, input: joined, batch_rows: 100000, output_columns: [prediction]}
steps:
  count_rows:
    inputs: [joined]
    outputs: [counted]
    run: {python: "usercode:count_rows"}
"""

CODE = '''
import pyarrow as pa
from dagsmith import step


def count_rows():
    rows = step.read_table("joined")
    step.write_table("counted", pa.table({"n": [len(rows)], "ordered": [bool(rows["event_id"].is_monotonic_increasing)]}))
'''


@pytest.fixture(autouse=True)
def fresh_module():
    import sys

    yield
    sys.modules.pop("usercode", None)


def _tables() -> dict:
    rng = np.random.default_rng(0)
    amount = rng.normal(size=N)
    events = pd.DataFrame({"event_id": np.arange(N), "user_id": np.arange(N) % 1000, "amount": amount,
                           "y": (amount + rng.normal(scale=0.5, size=N) > 0).astype(int)})
    users = pd.DataFrame({"user_id": np.arange(1000), "region": [("a", "b", "c")[i % 3] for i in range(1000)]})
    return {"events": events.sample(frac=1, random_state=0), "users": users}  # the join has to sort


def test_a_feature_streams_parts_and_every_reader_reads_them_as_one_table(tmp_path, monkeypatch):
    (tmp_path / "usercode.py").write_text(CODE)
    p = Pipeline(tmp_path, SPEC, _tables())
    result = p.run("joined")
    manifest = p.store.manifest(Store.step_key(RUN, "joined"))
    parts = sorted(name for name in manifest["files"] if name.startswith("table/"))
    assert result["rows"] == N and result["parts"] == len(parts) >= 2
    assert "table.parquet" not in manifest["files"]
    assert parts == [f"table/part-{i:05d}.parquet" for i in range(len(parts))]
    assert all(len(manifest["files"][name]["sha256"]) == 64 for name in parts)

    whole = p.ctx("per_user").read_table("joined")
    assert whole.num_rows == N and whole.column("event_id").to_pylist() == list(range(N))  # in order across parts
    # DuckDB ran under 75% of 32Mi, keeping the order (no key)
    assert set(whole.column("memory_limit").to_pylist()) == {"24.0 MiB"}
    assert set(whole.column("ordered").to_pylist()) == {True}

    # a SQL feature reads the parts; it has a key: DuckDB may reorder its rows
    assert p.run("per_user")["rows"] == 3
    per_user = p.ctx("per_user").read_table("per_user").to_pydict()
    regions = [("a", "b", "c")[(i % 1000) % 3] for i in range(N)]
    assert sorted(zip(per_user["region"], per_user["n"])) == sorted((r, regions.count(r)) for r in "abc")
    assert set(per_user["ordered"]) == {False}

    validate = next(s.id for s in p.ir.steps if s.kind == "validate")
    with monkeypatch.context() as patched:  # its expectations run as SQL: the table is never loaded whole
        from dagsmith.runtime.context import StepContext

        patched.setattr(StepContext, "read_table", lambda *a: pytest.fail("validation loaded the table whole"))
        checked = p.run(validate)["validation"]
    assert checked["success"] is True and checked["rows"] == N  # validation reads all the rows
    assert checked["engine"] == "sql"

    trained = p.run("train")
    assert trained["rows"]["train"] == N * 3 // 4  # training reads all the parts

    assert p.run("scores")["rows"] == N  # predict's range reader over the parts, input order kept
    scores = p.ctx("scores").read_table("scores")
    assert scores.column("event_id").to_pylist() == list(range(N))

    assert p.run("count_rows")["tables"] == {"counted": 1}  # dagsmith.step
    assert p.ctx("count_rows").read_table("counted").to_pylist() == [{"n": N, "ordered": True}]


def test_a_small_result_is_one_file_and_the_spill_folder_is_gone(tmp_path):
    p = Pipeline(tmp_path, SPEC, {name: frame.head(1000) for name, frame in _tables().items()})
    result = p.run("joined")
    assert (result["rows"], result["columns"], "parts" in result) == (1000, 6, False)
    manifest = p.store.manifest(Store.step_key(RUN, "joined"))
    assert sorted(manifest["files"]) == ["table.parquet"]  # the layout of one-file tables, as before
    assert pq.read_table(p.ctx("joined").table_file("joined")).num_rows == 1000
    assert not list((p.store.root / ".staging").glob("dagsmith-spill-*"))


def test_memory_limit_and_part_size_follow_resources_memory():
    assert dataset.memory_limit({}) is None and dataset.memory_limit({"cpu": 1}) is None
    assert dataset.memory_limit({"memory": "2Gi"}) == 3 * 2**29
    assert dataset.memory_limit({"memory": "16Mi"}) == 12 * 2**20
    assert dataset.part_bytes(None) == dataset.MAX_PART_BYTES
    assert dataset.threads(None, cpus=8) is None and dataset.threads(3 * 2**30, cpus=8) is None
    assert dataset.threads(300 * 10**6, cpus=8) == 2 and dataset.threads(12 * 2**20, cpus=8) == 1
    assert dataset.part_bytes(24 * 2**20) == 24 * 2**20 // 16
    assert dataset.part_bytes(1000) == dataset.MIN_PART_BYTES


def test_parts_are_read_in_their_numbers_order():
    files = {name: {} for name in ("table/part-00010.parquet", "table/part-00002.parquet", "table/notes.txt",
                                   "tables/x.parquet", "table/part-00001.parquet")}
    assert dataset.parts_of({"files": files}, "table.parquet") == [
        "table/part-00001.parquet", "table/part-00002.parquet", "table/part-00010.parquet"]
    assert dataset.parts_of({"files": files}, "tables/x.parquet") == ["tables/x.parquet"]
    assert dataset.parts_of({"files": files}, "tables/y.parquet") == []


def test_a_sql_error_cites_the_line_of_the_feature_query(tmp_path):
    from dagsmith.runtime.context import StepFailed

    bad = SPEC.replace("current_setting('memory_limit') AS memory_limit", "e.nope AS memory_limit")
    p = Pipeline(tmp_path, bad, {name: frame.head(10) for name, frame in _tables().items()})
    with pytest.raises(StepFailed) as failed:
        p.run("joined")
    assert "feature 'joined': SQL failed: Binder Error" in str(failed.value) and "LINE 2:" in str(failed.value)
    assert not list((p.store.root / ".staging").glob("dagsmith-spill-*"))


SOURCE_SPEC = """
dagsmith: 1
pipeline: {name: ooc-sources}
sources:
  events:
    type: csv
    uri: events.csv
    columns: {event_id: integer, amount: double}
    resources: {memory: 32Mi}
  users: {type: csv, uri: users.csv}
  picked:
    type: sql
    connection: warehouse
    query: SELECT x, current_setting('memory_limit') AS memory_limit FROM numbers ORDER BY x DESC;
    resources: {memory: 32Mi}
features:
  joined:
    inputs: [events, users]
    sql: SELECT e.event_id, e.amount, u.region FROM events e JOIN users u USING (user_id)
"""


def test_a_csv_source_streams_parts_in_file_order_and_every_reader_reads_them(tmp_path, monkeypatch):
    import duckdb

    tables = _tables()
    tables["events"].to_csv(tmp_path / "events.csv", index=False)
    with open(tmp_path / "events.csv", "a", newline="") as handle:  # rows appended with CRLF endings
        handle.write("370000,7,0.5,1\r\n370001,8,-0.5,0\r\n")
    tables["users"].to_csv(tmp_path / "users.csv", index=False)
    with duckdb.connect(str(tmp_path / "warehouse.duckdb")) as con:
        con.execute("CREATE TABLE numbers AS SELECT range AS x FROM range(5)")
    monkeypatch.setenv("DAGSMITH_CONN_WAREHOUSE", str(tmp_path / "warehouse.duckdb"))
    p = Pipeline(tmp_path, SOURCE_SPEC, {})

    result = p.run("events")
    manifest = p.store.manifest(Store.step_key(RUN, "events"))
    parts = sorted(name for name in manifest["files"] if name.startswith("table/"))
    assert result["rows"] == N + 2 and result["parts"] == len(parts) >= 2 and len(result["data_fingerprint"]) == 64
    assert "table.parquet" not in manifest["files"] and manifest["rows"] == N + 2
    assert parts == [f"table/part-{i:05d}.parquet" for i in range(len(parts))]
    events = p.ctx("joined").read_table("events")  # StepContext: validation, training, dagsmith.step
    order = tables["events"]["event_id"].tolist() + [370000, 370001]
    assert events.column("event_id").to_pylist() == order  # the file's order, across parts
    assert str(events.schema.field("event_id").type) == "int64" and str(events.schema.field("amount").type) == "double"
    assert not list((p.store.root / ".staging").glob("dagsmith-spill-*"))

    p.run("users")
    assert p.run("joined")["rows"] == N + 2  # a SQL feature reads the source's parts

    # a DuckDB database's query streams too, under the same limit, in the query's order
    assert p.run("picked")["rows"] == 5
    picked = p.ctx("picked").read_table("picked").to_pydict()
    assert picked == {"x": [4, 3, 2, 1, 0], "memory_limit": ["24.0 MiB"] * 5}


SQL_SOURCE_SPEC = """
dagsmith: 1
pipeline: {name: ooc-sql}
sources:
  orders: {type: sql, connection: warehouse, query: "SELECT id, late, flag, amount FROM orders ORDER BY id"}
"""


def test_a_sqlalchemy_source_streams_in_chunks_with_one_schema(tmp_path, monkeypatch):
    """A SQLAlchemy URL's result is read and written in chunks (a part each). A chunk's types are
    what its rows show: `late` is NULL in the first chunks and an integer after, `flag` an integer
    with a NULL in one chunk only (pandas reads that chunk as floats): the parts are cast to one
    schema (`late` takes the later chunks' type, `flag` is double, as a whole read gives it)."""
    import sqlite3

    from dagsmith.runtime import sources

    monkeypatch.setattr(sources, "SQL_CHUNK_ROWS", 1000)
    rows = 3500
    db = tmp_path / "warehouse.db"
    with sqlite3.connect(db) as con:
        con.execute("CREATE TABLE orders (id INTEGER, late INTEGER, flag INTEGER, amount REAL)")
        con.executemany("INSERT INTO orders VALUES (?, ?, ?, ?)",
                        [(i, None if i < 2500 else i, None if i == 1500 else i % 2, i / 4) for i in range(rows)])
    monkeypatch.setenv("DAGSMITH_CONN_WAREHOUSE", f"sqlite:///{db}")
    p = Pipeline(tmp_path, SQL_SOURCE_SPEC, {})
    result = p.run("orders")
    manifest = p.store.manifest(Store.step_key(RUN, "orders"))
    parts = sorted(name for name in manifest["files"] if name.startswith("table/"))
    assert result["rows"] == rows and len(parts) == 4
    schemas = {str(pq.read_schema(p.store.file(manifest, name))) for name in parts}
    assert len(schemas) == 1  # one schema across the parts
    whole = pd.read_sql("SELECT id, late, flag, amount FROM orders ORDER BY id", f"sqlite:///{db}")
    table = p.ctx("orders").read_table("orders")
    assert table.schema.field("late").type == pq.read_schema(p.store.file(manifest, parts[-1])).field("late").type
    assert str(table.schema.field("flag").type) == "double" and str(table.schema.field("late").type) in ("int64", "double")
    assert table.to_pandas().astype(float).equals(whole.astype(float))


def test_a_sqlalchemy_source_whose_column_turns_from_numbers_to_text_fails_clearly(tmp_path, monkeypatch):
    """SQLite keeps what each row was given: numbers in the first chunk, text in the next is a
    clear failure naming the source, not a table of two schemas."""
    import sqlite3

    from dagsmith.runtime import sources
    from dagsmith.runtime.context import StepFailed

    monkeypatch.setattr(sources, "SQL_CHUNK_ROWS", 10)
    db = tmp_path / "warehouse.db"
    with sqlite3.connect(db) as con:
        con.execute("CREATE TABLE orders (id INTEGER, late, flag INTEGER, amount REAL)")
        con.executemany("INSERT INTO orders VALUES (?, ?, 0, 0.5)", [(i, i if i < 10 else f"x{i}") for i in range(20)])
    monkeypatch.setenv("DAGSMITH_CONN_WAREHOUSE", f"sqlite:///{db}")
    p = Pipeline(tmp_path, SQL_SOURCE_SPEC, {})
    with pytest.raises(StepFailed, match="source 'orders': the result's columns change type from one chunk"):
        p.run("orders")
