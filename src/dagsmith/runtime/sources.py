"""Source steps: csv / parquet / json / jsonl / xlsx files (a file, a glob, a folder; local or s3://), s3 prefixes,
and SQL queries on a named connection. Output: table.parquet.

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

from .context import StepContext, StepFailed

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
    import pyarrow.parquet as pq

    config = ctx.step.config
    data_fingerprint = fingerprint(ctx)
    table = _read_sql(ctx, config) if config["type"] == "sql" else _read_files(ctx, config)
    staging = ctx.stage()
    pq.write_table(table, staging.path("table.parquet"))
    ctx.store.commit(staging, {"data_fingerprint": data_fingerprint, "rows": table.num_rows})
    return {"rows": table.num_rows, "columns": table.num_columns, "data_fingerprint": data_fingerprint}


def _read_files(ctx: StepContext, config: dict):
    import duckdb

    uri = ctx.path(config["uri"])
    fmt = source_format(config)
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
        con = duckdb.connect()
        try:
            if fmt != "parquet":
                from .readers import read

                return read(con, fmt, [Path(p) for p in paths], config, f"source {ctx.step.id!r} ({config['uri']})", Path(tmp))
            return con.read_parquet(paths, union_by_name=True).to_arrow_table()
        except duckdb.Error as exc:
            raise StepFailed(f"source {ctx.step.id!r}: cannot read {fmt} from {config['uri']!r}: {exc}") from None
        finally:
            con.close()


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


def _read_sql(ctx: StepContext, config: dict):
    """Whatever goes wrong, the message (in run.json, on stderr) never holds the connection value."""
    variable = connection_env(config["connection"])
    target = os.environ.get(variable) or ""
    try:
        return _query(ctx, config, variable, target)
    except StepFailed as exc:
        raise StepFailed(_hide(str(exc), target, variable)) from None
    except Exception as exc:  # a driver's own error type: its text may quote the URL
        raise StepFailed(_hide(f"source {ctx.step.id!r}: query failed on connection {config['connection']!r}: "
                               f"{type(exc).__name__}: {exc}", target, variable)) from None


def _query(ctx: StepContext, config: dict, variable: str, target: str):
    import pyarrow as pa

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
            with engine.connect() as connection:
                frame = pd.read_sql(statement, connection, params=bound)
        except sqlalchemy.exc.SQLAlchemyError as exc:
            cause = exc.orig if hasattr(exc, "orig") else exc
            raise StepFailed(_hide(f"source {ctx.step.id!r}: query failed on connection {name!r}: {exc.__class__.__name__}: {cause}", target, variable)) from None
        finally:
            engine.dispose()
        return pa.Table.from_pandas(frame, preserve_index=False)
    if not Path(target).is_file():
        # Not a URL (no scheme://) and no such file: a mistyped URL (postgresql//u:pw@h) that must
        # not be repeated anywhere, since it may hold a password.
        raise StepFailed(
            f"source {ctx.step.id!r}: {variable} is neither a URL (scheme://...) nor an existing DuckDB "
            f"database file; its value is not shown, as it may hold a password"
        )
    import duckdb

    query, bound = ctx.values.bind_sql(config["query"])
    try:
        con = duckdb.connect(target, read_only=True)
    except duckdb.Error as exc:
        raise StepFailed(_hide(f"source {ctx.step.id!r}: cannot open DuckDB database of connection {name!r}: {exc}", target, variable)) from None
    try:
        return con.sql(query, params=bound).to_arrow_table()
    except duckdb.Error as exc:
        raise StepFailed(_hide(f"source {ctx.step.id!r}: query failed on connection {name!r}: {exc}", target, variable)) from None
    finally:
        con.close()
