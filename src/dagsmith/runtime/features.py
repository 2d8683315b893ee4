"""Feature steps: DuckDB SQL over the inputs (each a view under its own name), or a Python
transform `module:function(frames: dict[str, DataFrame]) -> DataFrame`. Output: table.parquet.

${params.X} in SQL becomes a bound parameter ($p_X), also inside a quoted literal ('${params.X}'
becomes the parameter, 'a-${params.X}' a concatenation with it): a value with a quote, `--`,
`;` or `${` in it can neither break the query nor inject into it (RunValues.bind_sql).
"""

from __future__ import annotations

from .context import StepContext, StepFailed
from .userscode import import_function


def run(ctx: StepContext) -> dict:
    import pyarrow.parquet as pq

    config = ctx.step.config
    table = _sql(ctx, config) if "sql" in config else _transform(ctx, config)
    staging = ctx.stage()
    pq.write_table(table, staging.path("table.parquet"))
    ctx.store.commit(staging, {"rows": table.num_rows})
    return {"rows": table.num_rows, "columns": table.num_columns}


def _sql(ctx: StepContext, config: dict):
    import duckdb

    con = duckdb.connect()
    try:
        for name in config["inputs"]:
            con.read_parquet(_parquet_files(ctx, name)).create_view(name)
        query, bound = ctx.values.bind_sql(config["sql"])
        return con.sql(query, params=bound).to_arrow_table()
    except duckdb.Error as exc:
        raise StepFailed(f"feature {ctx.step.id!r}: SQL failed: {exc}") from None
    finally:
        con.close()


def _parquet_files(ctx: StepContext, name: str):
    """What DuckDB's read_parquet reads for table `name`: its file, or its parts in order (a
    predict fanned out over row ranges; DuckDB keeps the files' order, preserve_insertion_order)."""
    files = [str(path) for path in ctx.table_files(name)]
    return files[0] if len(files) == 1 else files


def _transform(ctx: StepContext, config: dict):
    import pandas as pd
    import pyarrow as pa

    function = import_function(config["transform"], ctx.root)
    frames = {name: ctx.read_table(name).to_pandas() for name in config["inputs"]}
    result = function(frames)
    if not isinstance(result, pd.DataFrame):
        raise StepFailed(f"feature {ctx.step.id!r}: {config['transform']} returned {type(result).__name__}, expected a pandas DataFrame")
    return pa.Table.from_pandas(result, preserve_index=False)
