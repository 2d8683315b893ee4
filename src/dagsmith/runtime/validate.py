"""Validation steps: Great Expectations 1.x (an ephemeral context) on one table.

Each expectation's outcome is saved (validation.json). `on_failure: fail` fails the step after
saving, so the run stops downstream and still says which expectations failed and how often;
`warn` records and goes on.

One context per process: the first validation a process runs makes an ephemeral context, and the
next ones reuse it (a worker of the local runner runs many). Each validation adds its own pandas
data source, batch and suite, and deletes the data source when done: the context never keeps a
step's table alive after the step. `engine_info` says how often this process made a context and
used it (the step result's "gx").
"""

from __future__ import annotations

import os
import shutil
import sys
import warnings
from decimal import Decimal
from pathlib import Path

from .context import StepContext, StepFailed

_SOURCE = "dagsmith"  # the data source each validation adds to the context, and deletes
_TABLE = "dagsmith_table"  # the view over the table's parts, in check_parts' database
_INDEX = "dagsmith_index"  # in each expectation's meta: its place in the spec

# Expectations that run as SQL on DuckDB (check_parts) with the same outcome, counts and observed
# values as on pandas: each is proven so by tests/runtime/test_validate_sql.py. A validation whose
# expectations are all here never loads its table; any other runs on pandas, as before.
SQL_EXPECTATIONS = frozenset({
    "expect_column_values_to_not_be_null", "expect_column_values_to_be_null",
    "expect_column_values_to_be_between", "expect_column_values_to_be_in_set",
    "expect_column_values_to_not_be_in_set", "expect_column_values_to_be_unique",
    "expect_column_value_lengths_to_be_between",
    "expect_column_min_to_be_between", "expect_column_max_to_be_between",
    "expect_column_mean_to_be_between", "expect_column_median_to_be_between",
    "expect_column_stdev_to_be_between", "expect_column_unique_value_count_to_be_between",
    "expect_column_proportion_of_unique_values_to_be_between",
    "expect_column_proportion_of_non_null_values_to_be_between",
    "expect_column_distinct_values_to_be_in_set", "expect_column_distinct_values_to_contain_set",
    "expect_column_distinct_values_to_equal_set",
    "expect_table_row_count_to_be_between", "expect_table_row_count_to_equal",
    "expect_table_column_count_to_equal", "expect_table_columns_to_match_ordered_list",
    "expect_table_columns_to_match_set", "expect_column_to_exist",
})
# Left on pandas because GX's SQL engine answers differently there (the same test shows it):
# match_regex ("Regex is not supported for dialect duckdb"), column_sum (an all-null column: 0 on
# pandas, NULL in SQL), column_pair_values_a_to_be_greater_than_b and compound_columns_to_be_unique
# (rows with nulls are counted differently).

_engine: dict | None = None  # {"gx", "context"}: this process's context, made on first use
_stats = {"contexts": 0, "validations": 0}  # contexts made and validations run by this process


def _gx():
    os.environ.setdefault("GX_ANALYTICS_ENABLED", "false")
    # GX imports pyspark when it is installed, which warns about pandas 3 on every import: noise
    # in each validation's output, about an engine this step does not use.
    warnings.filterwarnings("ignore", message="PySpark does not yet fully support pandas", category=FutureWarning)
    try:
        import great_expectations as gx
    except ImportError:
        raise StepFailed("validation needs Great Expectations: pip install 'dagsmith[validation]'") from None
    return gx


def _context():
    """Great Expectations and this process's ephemeral context, made on first use."""
    global _engine
    if _engine is not None:
        return _engine["gx"], _engine["context"]
    gx = _gx()
    context = gx.get_context(mode="ephemeral")
    try:
        context.variables.progress_bars = {"globally": False}
    except Exception:  # noqa: BLE001 - progress bars are cosmetic; older configs lack the field
        pass
    _engine = {"gx": gx, "context": context}
    _stats["contexts"] += 1
    return gx, context


def engine_info() -> dict:
    """This process's Great Expectations use: its pid, how many contexts it made (1 once it has
    validated anything) and how many validations it ran."""
    return {"pid": os.getpid(), **_stats}


def check_table(frame, expectations: list[dict]) -> list[dict]:
    """Run expectations on a pandas DataFrame; one record per expectation."""
    def batch(context):
        source = context.data_sources.add_pandas(_SOURCE)
        return source.add_dataframe_asset("table").add_batch_definition_whole_dataframe("all").get_batch(
            batch_parameters={"dataframe": frame})

    return _validate(batch, expectations)


def check_parts(files: list[str], expectations: list[dict], staging, resources: dict) -> list[dict]:
    """Run expectations on the Parquet files of one table with GX's SQL engine on DuckDB, under
    the step's memory (runtime/dataset.py settings, spilling to the staging area): the table is
    read by the queries GX makes, never loaded whole. Only for expectations in SQL_EXPECTATIONS."""
    import tempfile

    import duckdb

    from . import gx_duckdb
    from .dataset import memory_limit, settings

    gx_duckdb.register()
    folder = Path(tempfile.mkdtemp(prefix="dagsmith-validate-", dir=staging.store.staging_root()))
    database = folder / "table.duckdb"
    try:
        # The table is a view over its parts in a database file of its own, so GX inspects its
        # columns and types as a table's. Paths are quoted literals (a quote doubled), never SQL.
        # Defining the views reads only the files' footers: no memory limit, no spill folder yet.
        listed = ", ".join("'" + str(path).replace("'", "''") + "'" for path in files)
        con = duckdb.connect(str(database))
        try:
            con.execute(f"CREATE VIEW {_TABLE}_parts AS SELECT * FROM read_parquet([{listed}])")
            # A float NaN is a missing value to GX's pandas engine (pandas' isna), a number to
            # DuckDB: the view makes it NULL, so both engines count the same values.
            floats = [name for name, kind, *_ in con.execute(f"DESCRIBE {_TABLE}_parts").fetchall()
                      if kind in ("FLOAT", "DOUBLE")]
            replaced = ", ".join(f"CASE WHEN isnan({_quote(n)}) THEN NULL ELSE {_quote(n)} END AS {_quote(n)}" for n in floats)
            con.execute(f"CREATE VIEW {_TABLE} AS SELECT *{f' REPLACE ({replaced})' if floats else ''} FROM {_TABLE}_parts")
        finally:
            con.close()
        config = settings(memory_limit(resources), str(folder / "spill"), True)

        def batch(context):
            source = context.data_sources.add_sql(
                _SOURCE, connection_string=f"duckdb+dagsmith:///{database}",
                kwargs={"connect_args": {"config": config}})
            return source.add_table_asset("table", table_name=_TABLE).add_batch_definition_whole_table("all").get_batch()

        return _validate(batch, expectations)
    finally:
        shutil.rmtree(folder, ignore_errors=True)


def _quote(name: str) -> str:
    return '"' + name.replace('"', '""') + '"'


def _validate(make_batch, expectations: list[dict]) -> list[dict]:
    """Expectations run on the batch `make_batch(context)` gives, in a data source of this
    process's context that is deleted when done; one record per expectation."""
    global _engine
    gx, context = _context()
    from great_expectations.expectations.registry import get_expectation_impl

    try:
        batch = make_batch(context)
        suite = gx.ExpectationSuite(name="dagsmith")
        for index, e in enumerate(expectations):
            suite.add_expectation(get_expectation_impl(e["type"])(**e["kwargs"], meta={_INDEX: index}))
        outcome = batch.validate(suite)
    except BaseException:
        _engine = None  # whatever state the context was left in, the next validation starts afresh
        raise
    finally:
        if _engine is not None:  # else the step raised, and the next validation starts afresh anyway
            try:
                _drop_source(context)  # with it, the engine that holds the frame or the database
            except Exception:  # noqa: BLE001 - the outcome stands; the next validation gets a new context
                _engine = None
    _stats["validations"] += 1
    # GX returns results in its own order (with default kwargs dropped, and no ids in a suite
    # never saved): each is matched to its expectation by the index in its meta.
    by_index = {result.expectation_config.meta[_INDEX]: result for result in outcome.results}
    return [_record(expectation, by_index[index]) for index, expectation in enumerate(expectations)]


def _drop_source(context) -> None:
    source = context.data_sources.get(_SOURCE)
    engine = getattr(source, "_cached_engine", None) or getattr(getattr(source, "_execution_engine", None), "engine", None)
    context.data_sources.delete(_SOURCE)
    if engine is not None and hasattr(engine, "dispose"):
        engine.dispose()  # closes the DuckDB database file before its folder is removed


def _record(expectation: dict, result) -> dict:
    raised = bool(result.exception_info and result.exception_info.get("raised_exception"))
    details = result.result or {}
    record = {
        "type": expectation["type"],
        "kwargs": expectation["kwargs"],
        "success": bool(result.success) and not raised,
        "unexpected_count": details.get("unexpected_count"),
        "element_count": details.get("element_count"),
        "observed_value": _plain(details.get("observed_value")),
    }
    if details.get("partial_unexpected_list"):  # the failing values GX reports (at most 20)
        record["partial_unexpected_list"] = [_short(v) for v in _plain(details["partial_unexpected_list"])[:20]]
    if raised:
        record["error"] = str(result.exception_info.get("exception_message"))
    return record


def _short(value, limit: int = 200):
    """A reported value kept small: run records and reports show it, whatever the data holds."""
    return value[:limit] + "..." if isinstance(value, str) and len(value) > limit else value


def _plain(value):
    """GX returns numpy scalars; the record is JSON."""
    if hasattr(value, "item"):
        return value.item()
    if isinstance(value, Decimal):  # DuckDB's SUM of integers or decimals, through SQLAlchemy
        return int(value) if value.as_tuple().exponent >= 0 else float(value)
    if isinstance(value, (list, tuple)):
        return [_plain(v) for v in value]
    return value


def in_sql(expectations: list[dict]) -> bool:
    """Whether these expectations run as SQL (check_parts): all in SQL_EXPECTATIONS, and GX's
    DuckDB dialect (duckdb-engine, in the validation extra) is installed."""
    if not expectations or any(e["type"] not in SQL_EXPECTATIONS for e in expectations):
        return False
    try:
        import duckdb_engine  # noqa: F401
    except ImportError:
        return False
    return True


def _rows(files: list[str]) -> int:
    import pyarrow.parquet as pq

    return sum(pq.ParquetFile(path).metadata.num_rows for path in files)


def run(ctx: StepContext) -> dict:
    config = ctx.step.config
    preloaded = "great_expectations" in sys.modules  # imported before this step (the runner preloads it)
    engine = "sql" if in_sql(config["expectations"]) else "pandas"
    staging = ctx.stage()
    try:
        if engine == "sql":
            files = [str(path) for path in ctx.table_files(config["table"])]
            records = check_parts(files, config["expectations"], staging, ctx.step.resources)
            rows = _rows(files)
        else:
            frame = ctx.read_table(config["table"]).to_pandas()
            records = check_table(frame, config["expectations"])
            rows = len(frame)
    except BaseException:
        staging.discard()
        raise
    failed = [r for r in records if not r["success"]]
    summary = {
        "name": ctx.step.id,
        "table": config["table"],
        "on_failure": config["on_failure"],
        "success": not failed,
        "rows": rows,
        "engine": engine,
        "expectations": records,
    }
    result = {"validation": summary, "gx": {**engine_info(), "preloaded": preloaded}}
    if failed and config["on_failure"] == "fail":
        staging.discard()
        ctx.write_result(result)
        described = "; ".join(
            f"{r['type']}({', '.join(f'{k}={v!r}' for k, v in r['kwargs'].items())}): "
            + (r["error"] if "error" in r else f"{r['unexpected_count']} unexpected of {r['element_count']}" if r["unexpected_count"] is not None else f"observed {r['observed_value']!r}")
            for r in failed
        )
        raise StepFailed(f"validation {ctx.step.id!r} failed on table {config['table']!r}: {described}")
    staging.write_json("validation.json", summary)
    ctx.store.commit(staging)
    return result
