"""Source steps: csv / parquet / json / jsonl / xlsx files (a file, a glob, a folder; local or s3://), s3 prefixes,
and SQL queries on a named connection. Output: table.parquet, or for a large table its parts
table/part-<n>.parquet (runtime/dataset.py).

Connections are names: `connection: warehouse` reads DAGSMITH_CONN_WAREHOUSE from the
environment, a SQLAlchemy URL (postgresql://..., sqlite:///file.db) or a DuckDB database file.
A query's references are bound parameters on both (RunValues.bind_sql), never pasted.
"""

from __future__ import annotations

import glob
import hashlib
import json
import os
import re
import tempfile
from pathlib import Path

from .context import TABLE_FILE, StepContext, StepFailed
from .dataset import ChunkTypesDiffer, copy_to, limited_connection, staged_parts, write_batches

SQL_CHUNK_ROWS = 50_000  # rows of a SQLAlchemy source's result read, and written as a part, at a time

_GLOB = re.compile(r"[*?\[]")


def connection_env(name: str) -> str:
    return "DAGSMITH_CONN_" + re.sub(r"[^A-Za-z0-9]", "_", name).upper()


def source_format(config: dict) -> str:
    """The file format of a source step's config: csv | parquet | json | jsonl | xlsx."""
    return config.get("format") or ("parquet" if config["type"] == "s3" else config["type"])


def list_local(path: str, fmt: str) -> list[Path]:
    if _GLOB.search(path):
        files = [Path(p) for p in glob.glob(path, recursive=True) if Path(p).is_file()]
    elif Path(path).is_dir():
        files = [p for p in Path(path).rglob(f"*.{fmt}") if p.is_file()]
    elif Path(path).is_file():
        files = [Path(path)]
    else:
        files = []
    return sorted(files)


def list_s3(uri: str, fmt: str) -> list[dict]:
    """The objects of an s3:// source: the one object it names, or the files of its format under it."""
    from .s3 import list_objects

    objects = list_objects(uri)
    if uri.endswith("/") or len(objects) != 1 or objects[0]["Key"] != uri.split("/", 3)[3]:
        objects = [o for o in objects if o["Key"].endswith(f".{fmt}")]
    return objects



def fingerprint(ctx: StepContext) -> str | None:
    """What the data is now: paths, sizes and mtimes (or S3 keys, sizes and ETags).
    None for SQL: a query's result can change without any trace, so it is never cached."""
    config = ctx.step.config
    if config["type"] == "sql":
        return None
    uri = ctx.path(config["uri"])
    fmt = source_format(config)
    if uri.startswith("s3://"):
        entries = [[o["Key"], o["Size"], o["ETag"]] for o in list_s3(uri, fmt)]
    else:
        entries = [[str(p), p.stat().st_size, p.stat().st_mtime_ns] for p in list_local(uri, fmt)]
    return hashlib.sha256(json.dumps(entries).encode()).hexdigest()


def run(ctx: StepContext) -> dict:
    config = ctx.step.config
    data_fingerprint = fingerprint(ctx)
    staging = ctx.stage()
    reader = _read_sql if config["type"] == "sql" else _read_files
    rows, columns = reader(ctx, config, staging)
    parts = staged_parts(staging, TABLE_FILE)
    ctx.store.commit(staging, {"data_fingerprint": data_fingerprint, "rows": rows})
    return {"rows": rows, "columns": columns, "data_fingerprint": data_fingerprint,
            **({"parts": len(parts)} if len(parts) > 1 else {})}


def _read_files(ctx: StepContext, config: dict, staging) -> tuple[int, int]:
    """The files streamed by DuckDB into the staged table under the step's memory, in file order
    (preserve_insertion_order on); an xlsx sheet is read whole by openpyxl first. Its row and
    column counts."""
    import duckdb

    uri = ctx.path(config["uri"])
    fmt = source_format(config)
    label = f"source {ctx.step.id!r} ({config['uri']})"
    with tempfile.TemporaryDirectory(prefix="dagsmith-src-") as tmp:
        if uri.startswith("s3://"):
            from .s3 import download, split_uri

            bucket, _ = split_uri(uri)
            files = [download(bucket, o["Key"], Path(tmp) / o["Key"]) for o in list_s3(uri, fmt)]
        else:
            files = list_local(uri, fmt)
        if not files:
            raise StepFailed(f"source {ctx.step.id!r}: no {fmt} files at {config['uri']!r} (resolved to {uri})")
        paths = [str(p) for p in files]
        try:
            with limited_connection(staging, ctx.step.resources, keep_order=True) as con:
                if fmt != "parquet":
                    from .readers import read, reading

                    query = read(con, fmt, [Path(p) for p in paths], config, label, Path(tmp))
                    with reading(label, fmt):
                        return copy_to(con, query, {}, staging, TABLE_FILE, ctx.step.resources)
                return copy_to(con, "SELECT * FROM read_parquet($files, union_by_name=true)", {"files": paths},
                               staging, TABLE_FILE, ctx.step.resources)
        except duckdb.Error as exc:
            raise StepFailed(f"source {ctx.step.id!r}: cannot read {fmt} from {config['uri']!r}: {exc}") from None


# Driver modules SQLAlchemy imports for a URL scheme -> what to install (the package and the extra).
_DRIVERS = {
    "psycopg2": "psycopg2-binary", "psycopg": "psycopg[binary]", "pg8000": "pg8000", "asyncpg": "asyncpg",
    "pymysql": "PyMySQL", "MySQLdb": "mysqlclient", "mysql": "mysql-connector-python",
    "pyodbc": "pyodbc", "pymssql": "pymssql", "cx_Oracle": "cx_Oracle", "oracledb": "oracledb",
    "snowflake": "snowflake-sqlalchemy", "databricks": "databricks-sqlalchemy",
    "google": "sqlalchemy-bigquery", "redshift_connector": "sqlalchemy-redshift",
}


def _hide(text: str, value: str, variable: str) -> str:
    """A message without the connection value, nor any part of it (it may hold a password in any
    form: the driver may print its pieces)."""
    from ..errors import hide_value

    return hide_value(text, value, variable) or ""


def _tables(frames):
    """pandas chunks as Arrow tables (as pandas typed them: the parts are unified after)."""
    import pyarrow as pa

    for frame in frames:
        yield pa.Table.from_pandas(frame, preserve_index=False)


def _read_sql(ctx: StepContext, config: dict, staging) -> tuple[int, int]:
    """The query's result into the staged table; its row and column counts. Whatever goes wrong, the message (in run.json, on stderr) never holds the connection value."""
    variable = connection_env(config["connection"])
    target = os.environ.get(variable) or ""
    try:
        return _query(ctx, config, variable, target, staging)
    except StepFailed as exc:
        raise StepFailed(_hide(str(exc), target, variable)) from None
    except Exception as exc:  # a driver's own error type: its text may quote the URL
        raise StepFailed(_hide(f"source {ctx.step.id!r}: query failed on connection {config['connection']!r}: "
                               f"{type(exc).__name__}: {exc}", target, variable)) from None


def _query(ctx: StepContext, config: dict, variable: str, target: str, staging) -> tuple[int, int]:
    """On a SQLAlchemy URL the result streams in chunks (pandas.read_sql, chunksize), a part each; on a
    DuckDB database file DuckDB streams it into parts under the step's memory, as a feature."""
    name = config["connection"]
    if not target:
        raise StepFailed(
            f"source {ctx.step.id!r}: connection {name!r} is not set: "
            f"export {variable} (a SQLAlchemy URL or a DuckDB database file)"
        )
    if "://" in target:
        import pandas as pd
        import sqlalchemy

        # References become :name binds, found from the SQL's tokens; every other ':' is escaped
        # (\:), so text() binds nothing else: the driver gets the query exactly as written.
        query, bound = ctx.values.bind_sql(config["query"], style="sqlalchemy")
        statement = sqlalchemy.text(query)
        try:
            engine = sqlalchemy.create_engine(target)
        except ModuleNotFoundError as exc:
            driver = (exc.name or "").split(".")[0]
            package = _DRIVERS.get(driver, driver or "its driver")
            raise StepFailed(
                f"source {ctx.step.id!r}: connection {name!r} needs a database driver that is not installed ({driver or 'unknown'}): "
                f"pip install {package} (in the environment that runs dagsmith)"
            ) from None
        except (sqlalchemy.exc.SQLAlchemyError, ValueError) as exc:
            raise StepFailed(
                f"source {ctx.step.id!r}: {variable} is not a usable SQLAlchemy URL: "
                f"{_hide(f'{exc.__class__.__name__}: {exc}', target, variable)}"
            ) from None
        try:
            # The result streams (a server-side cursor where the driver has one) in chunks of
            # SQL_CHUNK_ROWS, each written as a part when read: one chunk is in memory at a time.
            with engine.connect() as connection:
                chunks = pd.read_sql(statement, connection.execution_options(stream_results=True), params=bound,
                                     chunksize=SQL_CHUNK_ROWS)
                return write_batches(_tables(chunks), staging, TABLE_FILE)
        except ChunkTypesDiffer as exc:
            raise StepFailed(f"source {ctx.step.id!r}: {exc}") from None
        except sqlalchemy.exc.SQLAlchemyError as exc:
            cause = exc.orig if hasattr(exc, "orig") else exc
            raise StepFailed(_hide(f"source {ctx.step.id!r}: query failed on connection {name!r}: {exc.__class__.__name__}: {cause}", target, variable)) from None
        finally:
            engine.dispose()
    if not Path(target).is_file():
        # Not a URL (no scheme://) and no such file: a mistyped URL (postgresql//u:pw@h) that must
        # not be repeated anywhere, since it may hold a password.
        raise StepFailed(
            f"source {ctx.step.id!r}: {variable} is neither a URL (scheme://...) nor an existing DuckDB "
            f"database file; its value is not shown, as it may hold a password"
        )
    import duckdb

    query, bound = ctx.values.bind_sql(config["query"])
    opened = False
    try:
        with limited_connection(staging, ctx.step.resources, True, target, read_only=True) as con:
            opened = True
            return copy_to(con, query, bound, staging, TABLE_FILE, ctx.step.resources)
    except duckdb.Error as exc:
        what = "query failed on connection" if opened else "cannot open DuckDB database of connection"
        raise StepFailed(_hide(f"source {ctx.step.id!r}: {what} {name!r}: {exc}", target, variable)) from None
