"""A feature step bigger than its memory: dagsmith's feature step against plain DuckDB, as a table.

    python benchmarks/out_of_core.py [--rows 1M,10M] [--repeat 1] [--workdir DIR] [--keep]

For each size (1M, 10M, 100M rows; suffixes k, M), generated data (no downloads): `events`
(id, user_id, amount, day; N rows) and `users` (user_id, region, segment; N/10 rows), committed
as the two source tables of a local store. The feature, a join and a GROUP BY of N/10 groups:

    SELECT e.user_id, u.region, count(*) AS events, sum(e.amount) AS total, max(e.day) AS last_day
    FROM events e JOIN users u USING (user_id) GROUP BY e.user_id, u.region

with `key: [user_id]` and `resources.memory` set so that DuckDB's memory_limit (75% of it,
runtime/dataset.py) is a quarter of the data's size (the inputs' size in memory, as Arrow; at
least 64 MiB, below which DuckDB cannot run the join: "floor" in the table).

Rows: for each size, wall time and peak RSS (the child's ru_maxrss, os.wait4) of
  - dagsmith: `dagsmith step IR per_user` in a fresh process (start-up, the IR, the COPY into
    parts, the sha256 of every part and the commit included);
  - duckdb: a fresh `python -c` doing the same COPY with the same settings (memory_limit,
    threads, temp_directory, preserve_insertion_order=false, part size: runtime/dataset.settings)
    in one process, nothing else.
Each figure is the minimum of --repeat runs. Targets (issue 24): dagsmith's peak RSS within
memory_limit + 300 MB, its time at most 1.2x DuckDB's. The 1-minute load average is printed: on
a shared machine the times say less than they seem.
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import subprocess
import sys
import tempfile
import time
from pathlib import Path

REPO = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(REPO / "src"))

MIN_LIMIT = 64 << 20
RSS_MARGIN = 300 << 20
TIME_TARGET = 1.2

SPEC = """
dagsmith: 1
pipeline: {{name: out-of-core}}
sources:
  events: {{type: parquet, uri: events.parquet}}
  users: {{type: parquet, uri: users.parquet}}
features:
  per_user:
    inputs: [events, users]
    key: [user_id]
    resources: {{memory: "{memory}"}}
    sql: {sql}
"""

SQL = ("SELECT e.user_id, u.region, count(*) AS events, sum(e.amount) AS total, max(e.day) AS last_day "
       "FROM events e JOIN users u USING (user_id) GROUP BY e.user_id, u.region")

PLAIN = """
import json, sys, duckdb
events, users, out, config, part = sys.argv[1:6]
con = duckdb.connect(config=json.loads(config))
con.read_parquet(events).create_view("events")
con.read_parquet(users).create_view("users")
con.execute(f"COPY ({sys.argv[6]}) TO '{out}' (FORMAT parquet, FILE_SIZE_BYTES {part}, FILENAME_PATTERN 'part-{{i}}')")
"""


def rows_of(text: str) -> int:
    text = text.strip()
    scale = {"k": 10**3, "M": 10**6, "G": 10**9}.get(text[-1], 1)
    return int(float(text[:-1] if text[-1] in "kMG" else text) * scale)


class Failed(Exception):
    """The child failed: its last words, for the table (DuckDB's "Out of Memory Error"...)."""


def measured(argv: list[str], env: dict | None = None) -> tuple[float, int]:
    """Wall seconds and peak RSS (bytes) of a child process; Failed when it fails."""
    started = time.perf_counter()
    proc = subprocess.Popen(argv, env=env, stdout=subprocess.PIPE, stderr=subprocess.PIPE)
    _, status, usage = os.wait4(proc.pid, 0)
    wall = time.perf_counter() - started
    proc.returncode = os.waitstatus_to_exitcode(status)
    out, err = proc.stdout.read().decode(), proc.stderr.read().decode()
    if proc.returncode != 0:
        text = (err.strip() or out.strip() or f"exit {proc.returncode}").splitlines()
        raise Failed(next((line for line in text if "Error" in line), text[-1])[:160])
    return wall, usage.ru_maxrss * 1024


def generate(folder: Path, n: int) -> tuple[Path, Path]:
    import duckdb

    users = max(1, n // 10)
    events_path, users_path = folder / "events.parquet", folder / "users.parquet"
    con = duckdb.connect(config={"preserve_insertion_order": False, "temp_directory": str(folder / "gen-tmp")})
    con.execute(f"COPY (SELECT i AS id, (hash(i) % {users})::BIGINT AS user_id, (i % 1000) / 10.0 AS amount, "
                f"(i % 365)::INTEGER AS day FROM range({n}) t(i)) TO '{events_path}' (FORMAT parquet)")
    con.execute(f"COPY (SELECT i AS user_id, ['north', 'south', 'east', 'west'][i % 4 + 1] AS region, "
                f"(i % 10)::INTEGER AS segment FROM range({users}) t(i)) TO '{users_path}' (FORMAT parquet)")
    con.close()
    shutil.rmtree(folder / "gen-tmp", ignore_errors=True)
    return events_path, users_path


def in_memory(path: Path) -> int:
    """The table's size in memory (Arrow): its first row group's bytes per row times the rows."""
    import pyarrow.parquet as pq

    parquet = pq.ParquetFile(path)
    first = parquet.read_row_group(0)
    return first.nbytes * parquet.metadata.num_rows // max(1, first.num_rows)


def commit_source(store, step_id: str, path: Path) -> None:
    staging = store.stage(store.step_key("bench", step_id))
    os.link(path, staging.path("table.parquet"))  # the generated file itself, no copy
    store.commit(staging)


def one_size(n: int, workdir: Path, repeat: int) -> dict:
    from dagsmith.compiler import compile_spec
    from dagsmith.runtime import dataset
    from dagsmith.runtime.store import LocalStore
    from dagsmith.spec import load_spec

    folder = workdir / f"rows-{n}"
    folder.mkdir(parents=True, exist_ok=True)
    events, users = generate(folder, n)
    size = in_memory(events) + in_memory(users)
    limit = max(MIN_LIMIT, size // 4)
    memory = -(-limit * 4 // 3)  # resources.memory whose 75% is `limit`, in bytes
    limit = dataset.memory_limit({"memory": memory})
    (folder / "pipeline.yaml").write_text(SPEC.format(memory=memory, sql=json.dumps(SQL)))
    ir = compile_spec(load_spec(folder / "pipeline.yaml"))
    (folder / "ir.json").write_text(ir.dumps())

    best = {"dagsmith": (float("inf"), 0), "duckdb": (float("inf"), 0)}
    failures: dict = {}
    for _ in range(repeat):
        store = LocalStore(folder / "store")
        for step_id, path in (("events", events), ("users", users)):
            commit_source(store, step_id, path)
        env = {**os.environ, "DAGSMITH_RUN_ID": "bench", "DAGSMITH_ROOT": str(folder), "PYTHONPATH": str(REPO / "src")}
        try:
            wall, rss = measured([str(Path(sys.executable).parent / "dagsmith"), "step", str(folder / "ir.json"), "per_user",
                                  "--store", str(folder / "store")], env)
            best["dagsmith"] = (min(best["dagsmith"][0], wall), max(best["dagsmith"][1], rss))
        except Failed as exc:
            failures["dagsmith"] = str(exc)
        out, spill = folder / "plain-out", folder / "plain-spill"
        shutil.rmtree(out, ignore_errors=True)
        spill.mkdir(exist_ok=True)
        try:
            config = json.dumps(dataset.settings(limit, str(spill), keep_order=False))
            wall, rss = measured([sys.executable, "-c", PLAIN, str(events), str(users), str(out), config,
                                  str(dataset.part_bytes(limit)), SQL])
            best["duckdb"] = (min(best["duckdb"][0], wall), max(best["duckdb"][1], rss))
        except Failed as exc:
            failures["duckdb"] = str(exc)
        shutil.rmtree(folder / "store", ignore_errors=True)
        shutil.rmtree(spill, ignore_errors=True)
    return {"rows": n, "data": size, "limit": limit, "floor": size // 4 < MIN_LIMIT, "failures": failures, **best}


def mib(value: int) -> str:
    return f"{value / 2**20:,.0f} MiB"


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--rows", default="1M,10M", help="sizes, comma-separated (1M, 10M, 100M)")
    parser.add_argument("--repeat", type=int, default=1)
    parser.add_argument("--workdir", help="where the data goes (default: a temporary folder, removed)")
    parser.add_argument("--keep", action="store_true", help="keep the workdir")
    args = parser.parse_args()
    workdir = Path(args.workdir or tempfile.mkdtemp(prefix="dagsmith-ooc-"))
    try:
        results = [one_size(rows_of(text), workdir, args.repeat) for text in args.rows.split(",")]
    finally:
        if not args.keep:
            shutil.rmtree(workdir, ignore_errors=True)
    print(f"load average (1 min): {os.getloadavg()[0]:.2f} on {os.cpu_count()} CPUs")
    header = ("rows", "data", "memory_limit", "dagsmith s", "duckdb s", "time ratio", "dagsmith RSS", "duckdb RSS",
              "RSS - limit", "targets")
    lines, notes = [], []
    for r in results:
        (ds, drss), (ps, prss) = r["dagsmith"], r["duckdb"]
        ok = not r["failures"] and drss <= r["limit"] + RSS_MARGIN and ds <= TIME_TARGET * ps
        failed = {who: "failed" for who in r["failures"]}
        lines.append((f"{r['rows']:,}", mib(r["data"]), mib(r["limit"]) + (" (floor)" if r["floor"] else ""),
                      failed.get("dagsmith") or f"{ds:.2f}", failed.get("duckdb") or f"{ps:.2f}",
                      "-" if failed else f"{ds / ps:.2f}x", failed.get("dagsmith") or mib(drss),
                      failed.get("duckdb") or mib(prss), failed.get("dagsmith") or mib(drss - r["limit"]),
                      "met" if ok else "MISSED"))
        notes += [f"{r['rows']:,} rows, {who}: {why}" for who, why in r["failures"].items()]
    widths = [max(len(str(row[i])) for row in (header, *lines)) for i in range(len(header))]
    for row in (header, tuple("-" * w for w in widths), *lines):
        print(" | ".join(str(cell).rjust(width) for cell, width in zip(row, widths)))
    for note in notes:
        print(note)


if __name__ == "__main__":
    main()
