"""A validation of a table bigger than its memory: Great Expectations' SQL engine on DuckDB
(validate.check_parts) against its pandas engine on the same table, as a table.

    python benchmarks/validation_memory.py [--rows 1M,10M] [--workdir DIR] [--keep]

For each size, the generated `events` table of benchmarks/out_of_core.py (id, user_id, amount,
day; N rows) is committed as a source, and `dagsmith step IR <validation>` runs in a fresh process:
  - sql: four expectations that run in SQL (not null, between, in set, row count), with
    `resources.memory` so that DuckDB's memory_limit is a quarter of the table's size in memory
    (64 MiB floor);
  - pandas: the same four plus one that does not (match_regex), which loads the table into
    pandas (the engine before issue 24, and still the one for such expectations).
Rows: wall time and peak RSS (os.wait4) of each, and the peak RSS of a process that only imports
Great Expectations (with duckdb-engine): what a validation costs before it reads a row. The sql
engine's RSS above that stays near memory_limit as the table grows; the pandas engine's grows
with the table.
"""

from __future__ import annotations

import argparse
import os
import shutil
import sys
import tempfile
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))
import out_of_core as ooc  # noqa: E402  (the data, the measuring and the table of its sibling)

SPEC = """
dagsmith: 1
pipeline: {{name: validation-memory}}
sources:
  events: {{type: parquet, uri: events.parquet}}
validation:
  - name: in_sql
    on: events
    resources: {{memory: "{memory}"}}
    expectations: {expectations}
  - name: in_pandas
    on: events
    resources: {{memory: "{memory}"}}
    expectations: {with_regex}
"""

EXPECTATIONS = [
    {"expect_column_values_to_not_be_null": {"column": "id"}},
    {"expect_column_values_to_be_between": {"column": "amount", "min_value": 0, "max_value": 100}},
    {"expect_column_values_to_be_in_set": {"column": "day", "value_set": list(range(365))}},
    {"expect_table_row_count_to_be_between": {"min_value": 1}},
]
REGEX = {"expect_column_values_to_match_regex": {"column": "amount", "regex": "^[0-9.]+$"}}


def gx_baseline() -> int:
    """Peak RSS of a process that imports what a validation step imports, and nothing more."""
    return ooc.measured([sys.executable, "-c", "import os; os.environ['GX_ANALYTICS_ENABLED'] = 'false'\n"
                         "import great_expectations, duckdb_engine, sqlalchemy, pyarrow.parquet, duckdb"])[1]


def one_size(n: int, workdir: Path, baseline: int) -> list[tuple]:
    import json

    from dagsmith.compiler import compile_spec
    from dagsmith.runtime import dataset
    from dagsmith.runtime.store import LocalStore
    from dagsmith.spec import load_spec

    folder = workdir / f"rows-{n}"
    folder.mkdir(parents=True, exist_ok=True)
    events, _ = ooc.generate(folder, n)
    size = ooc.in_memory(events)
    limit = max(ooc.MIN_LIMIT, size // 4)
    memory = -(-limit * 4 // 3)
    limit = dataset.memory_limit({"memory": memory})
    (folder / "pipeline.yaml").write_text(SPEC.format(memory=memory, expectations=json.dumps(EXPECTATIONS),
                                                      with_regex=json.dumps(EXPECTATIONS + [REGEX])))
    ir = compile_spec(load_spec(str(folder / "pipeline.yaml")))
    (folder / "ir.json").write_text(ir.dumps())
    rows = []
    for name, engine in (("in_sql", "sql"), ("in_pandas", "pandas")):
        step_id = next(s.id for s in ir.steps if s.kind == "validate" and s.id.endswith(name))
        store = LocalStore(folder / "store")
        ooc.commit_source(store, "events", events)
        env = {**os.environ, "DAGSMITH_RUN_ID": "bench", "DAGSMITH_ROOT": str(folder), "PYTHONPATH": str(ooc.REPO / "src")}
        try:
            wall, rss = ooc.measured([str(Path(sys.executable).parent / "dagsmith"), "step", str(folder / "ir.json"), step_id,
                                      "--store", str(folder / "store")], env)
            rows.append((f"{n:,}", ooc.mib(size), ooc.mib(limit), engine, f"{wall:.2f}", ooc.mib(rss),
                         ooc.mib(rss - baseline)))
        except ooc.Failed as exc:
            rows.append((f"{n:,}", ooc.mib(size), ooc.mib(limit), engine, "failed", str(exc)[:60], "-"))
        shutil.rmtree(folder / "store", ignore_errors=True)
    return rows


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--rows", default="1M,10M", help="sizes, comma-separated (1M, 10M, 100M)")
    parser.add_argument("--workdir", help="where the data goes (default: a temporary folder, removed)")
    parser.add_argument("--keep", action="store_true", help="keep the workdir")
    args = parser.parse_args()
    workdir = Path(args.workdir or tempfile.mkdtemp(prefix="dagsmith-validation-"))
    try:
        baseline = gx_baseline()
        lines = [row for text in args.rows.split(",") for row in one_size(ooc.rows_of(text), workdir, baseline)]
    finally:
        if not args.keep:
            shutil.rmtree(workdir, ignore_errors=True)
    print(f"load average (1 min): {os.getloadavg()[0]:.2f} on {os.cpu_count()} CPUs; "
          f"peak RSS of importing Great Expectations alone: {ooc.mib(baseline)}")
    header = ("rows", "data", "memory_limit", "engine", "seconds", "peak RSS", "RSS - GX import")
    widths = [max(len(str(row[i])) for row in (header, *lines)) for i in range(len(header))]
    for row in (header, tuple("-" * w for w in widths), *lines):
        print(" | ".join(str(cell).rjust(width) for cell, width in zip(row, widths)))


if __name__ == "__main__":
    main()
