"""Tables as Parquet datasets: a query's result streamed by DuckDB into part files, and where a
manifest's table parts are.

A table of one part is one file (`table.parquet`, or a custom step's `tables/<name>.parquet`), as
before; a larger one is a folder of parts beside that name, `table/part-00000.parquet`,
`table/part-00001.parquet`, ..., each listed in the manifest with its sha256. Readers read the
parts in their number's order as one table (StepContext.table_parts / table_files / read_table).

DuckDB runs under the step's memory: `memory_limit` is MEMORY_SHARE of `resources.memory` (the
rest is for Python, pyarrow and DuckDB's allocations outside its buffer pool; DuckDB's own
default is 80% of the machine's RAM), with at most one thread per 125 MB of it (`threads`). What
does not fit spills to `temp_directory`, a folder on the task's disk beside the staging folder
(never committed, removed afterwards). A part is closed when it reaches 1/PART_SHARE of the limit
(1 MiB to 256 MiB), so no writer holds a whole table.
"""

from __future__ import annotations

import os
import re
import shutil
import tempfile
from contextlib import contextmanager
from decimal import Decimal
from pathlib import Path

from ..quantities import parse_quantity

MEMORY_SHARE = Decimal("0.75")  # of resources.memory, DuckDB's memory_limit
PART_SHARE = 16  # a part file's size: memory_limit / PART_SHARE
MIN_PART_BYTES = 1 << 20
MAX_PART_BYTES = 256 << 20  # without a memory limit: parts of at most 256 MiB
MEMORY_PER_THREAD = 125 * 10**6
_PART = re.compile(r"part-([0-9]+)\.parquet")


def memory_limit(resources: dict) -> int | None:
    """DuckDB's memory_limit in bytes for a step of these resources; None: no `memory` given."""
    memory = (resources or {}).get("memory")
    if memory is None:
        return None
    return max(1, int(parse_quantity(memory, "memory") * MEMORY_SHARE))


def part_bytes(limit: int | None) -> int:
    if limit is None:
        return MAX_PART_BYTES
    return max(MIN_PART_BYTES, min(MAX_PART_BYTES, limit // PART_SHARE))


def threads(limit: int | None, cpus: int | None = None) -> int | None:
    """DuckDB's threads under `limit`: at most one per MEMORY_PER_THREAD (DuckDB's "minimum of
    125 MB of memory per thread", duckdb-web docs/stable/guides/performance/environment.md,
    "Minimum Required Memory"), at least 1; None (DuckDB's default, one per CPU) when the limit
    allows them all."""
    cpus = cpus or os.cpu_count() or 1
    if limit is None or limit // MEMORY_PER_THREAD >= cpus:
        return None
    return max(1, limit // MEMORY_PER_THREAD)


def settings(limit: int | None, spill: str, keep_order: bool) -> dict:
    """The DuckDB configuration of a query under `limit` bytes (None: DuckDB's defaults)."""
    config = {"temp_directory": spill, "preserve_insertion_order": keep_order}
    if limit is not None:
        config["memory_limit"] = f"{limit}B"
    if threads(limit) is not None:
        config["threads"] = threads(limit)
    return config


def parts_of(manifest: dict, file: str) -> list[str]:
    """The names in `manifest` of table `file`'s parts, in order: [file] when it is one file,
    else `<file without .parquet>/part-<n>.parquet` by n. [] when the manifest has neither."""
    files = manifest.get("files") or {}
    if file in files:
        return [file]
    folder = file.removesuffix(".parquet") + "/"
    numbered = []
    for name in files:
        if name.startswith(folder) and (match := _PART.fullmatch(name[len(folder):])):
            numbered.append((int(match.group(1)), name))
    return [name for _, name in sorted(numbered)]


def staged_parts(staging, file: str) -> list[str]:
    """The names of table `file`'s parts in a staging folder, in order (as parts_of)."""
    names = {path.relative_to(staging.dir).as_posix(): {} for path in staging.dir.rglob("*.parquet")}
    return parts_of({"files": names}, file)


def copy_query(query: str, params: dict, inputs: dict[str, list[str]], staging, file: str, *,
               resources: dict, keep_order: bool) -> tuple[int, int]:
    """Run `query` (inputs: view name -> its Parquet files) with DuckDB under the step's memory
    and write its result into `staging` as table `file` (one file, or a folder of parts); its row
    and column counts. `keep_order`: the rows keep the query's order (preserve_insertion_order; an ORDER BY
    is kept either way); without it DuckDB may reorder rows, which needs less memory.
    Raises duckdb.Error."""
    with limited_connection(staging, resources, keep_order) as con:
        for name, files in inputs.items():
            con.read_parquet(files[0] if len(files) == 1 else files).create_view(name)
        return copy_to(con, query, params, staging, file, resources)


@contextmanager
def limited_connection(staging, resources: dict, keep_order: bool, database: str = ":memory:", **options):
    """A DuckDB connection under the step's memory (settings), spilling to a folder of the staging
    area that is removed afterwards. `database`, `options`: duckdb.connect's (a source's database
    file, read_only). Raises duckdb.Error."""
    import duckdb

    spill = Path(tempfile.mkdtemp(prefix="dagsmith-spill-", dir=staging.store.staging_root()))
    try:
        con = duckdb.connect(database, config=settings(memory_limit(resources), str(spill), keep_order), **options)
        try:
            yield con
        finally:
            con.close()
    finally:
        shutil.rmtree(spill, ignore_errors=True)


def copy_to(con, query: str, params: dict, staging, file: str, resources: dict) -> tuple[int, int]:
    """COPY `query`'s result on `con` (a limited_connection) into `staging` as table `file`, in
    parts of part_bytes; its row and column counts. Raises duckdb.Error."""
    limit = memory_limit(resources)
    out = staging.path(file.removesuffix(".parquet"))  # staging.path makes the parent folder
    # The target is a folder of our staging area: a quote in it is doubled, never SQL. The
    # query keeps its line numbers (DuckDB's messages cite them); a newline ends a trailing
    # -- comment; a final `;` is dropped.
    target = str(out).replace("'", "''")
    body = query.rstrip().rstrip(";").rstrip()
    rows = con.execute(f"COPY ({body}\n) TO '{target}' (FORMAT parquet, FILE_SIZE_BYTES {part_bytes(limit)}, "
                       "FILENAME_PATTERN 'part-{i}')", params).fetchone()[0]
    first = str(next(out.glob("part-*.parquet")))  # there is one, if only of no rows
    columns = len(con.execute("SELECT * FROM read_parquet(?) LIMIT 0", [first]).description)
    _name_parts(out, Path(staging.path(file)))
    return int(rows), columns


class ChunkTypesDiffer(ValueError):
    """write_batches: a column is of one type in a chunk and of another, not promotable, in the next."""


def write_batches(batches, staging, file: str) -> tuple[int, int]:
    """Write `batches` (pyarrow Tables of the same columns, in order: a result read in chunks)
    into `staging` as table `file`, one part per batch, named as copy_to names DuckDB's; its row and
    column counts. Parts are written as they come, so one batch is in memory at a time. A chunk's
    types are what its rows show (a column of nulls only, integers with a null read as floats):
    the parts are then cast to the types of all of them (Arrow's permissive promotion: null to
    any type, integer to float), part by part, so the table has one schema. A column whose
    chunks disagree otherwise (numbers here, text there) raises ChunkTypesDiffer."""
    import pyarrow as pa
    import pyarrow.parquet as pq

    out = staging.path(file.removesuffix(".parquet"))
    out.mkdir(parents=True, exist_ok=True)
    rows, schemas, paths = 0, [], []
    for index, batch in enumerate(batches):
        path = out / f"part-{index}.parquet"
        pq.write_table(batch, path)
        rows += batch.num_rows
        schemas.append(batch.schema.remove_metadata())
        paths.append(path)
    if not paths:
        raise ValueError("internal error (please report): a table was read in no chunks, not even an empty one")
    try:
        schema = pa.unify_schemas(schemas, promote_options="permissive")
    except (pa.ArrowTypeError, pa.ArrowInvalid) as exc:
        raise ChunkTypesDiffer(f"the result's columns change type from one chunk of rows to the next: {exc}") from None
    for path, own in zip(paths, schemas):
        if not own.equals(schema):
            pq.write_table(pq.read_table(path).cast(schema), path)
    _name_parts(out, Path(staging.path(file)))
    return rows, len(schema)


def _name_parts(folder: Path, single: Path) -> None:
    """DuckDB's part-<i>.parquet files -> part-<00000>.parquet (names that sort), or the one file
    `single` when there is only one part (the layout one-file readers and older stores have)."""
    written = sorted((int(_PART.fullmatch(p.name).group(1)), p) for p in folder.iterdir() if _PART.fullmatch(p.name))
    if len(written) == 1:
        written[0][1].replace(single)
        folder.rmdir()
        return
    for index, path in written:
        path.replace(folder / f"part-{index:05d}.parquet")
