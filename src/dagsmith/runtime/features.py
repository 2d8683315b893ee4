"""Feature steps: DuckDB SQL over the inputs (each a view under its own name), or a Python
transform `module:function(frames: dict[str, DataFrame]) -> DataFrame`. Output: table.parquet, or
for a large SQL result the parts table/part-<n>.parquet (runtime/dataset.py).

${params.X} in SQL becomes a bound parameter ($p_X), also inside a quoted literal ('${params.X}'
becomes the parameter, 'a-${params.X}' a concatenation with it): a value with a quote, `--`,
`;` or `${` in it can neither break the query nor inject into it (RunValues.bind_sql).
"""

from __future__ import annotations

from .context import TABLE_FILE, StepContext, StepFailed
from .dataset import copy_query, staged_parts
from .userscode import import_function


def run(ctx: StepContext) -> dict:
    config = ctx.step.config
    staging = ctx.stage()
    if "sql" in config:
        rows, columns = _sql(ctx, config, staging)
    else:
        import pyarrow.parquet as pq

        table = _transform(ctx, config)
        pq.write_table(table, staging.path(TABLE_FILE))
        rows, columns = table.num_rows, table.num_columns
    parts = staged_parts(staging, TABLE_FILE)
    ctx.store.commit(staging, {"rows": rows})
    return {"rows": rows, "columns": columns, **({"parts": len(parts)} if len(parts) > 1 else {})}


def _sql(ctx: StepContext, config: dict, staging) -> tuple[int, int]:
    """The query streamed by DuckDB into the staged table (parts under the step's memory, see
    runtime/dataset.py); its row and column counts. Row order: a feature with a `key` is read by key (training
    sorts by it), so DuckDB may reorder its rows (preserve_insertion_order off, less memory); one
    without keeps its query's order (a predict or a custom step reading it sees that order)."""
    import duckdb

    inputs = {name: [str(path) for path in ctx.table_files(name)] for name in config["inputs"]}
    query, bound = ctx.values.bind_sql(config["sql"])
    try:
        return copy_query(query, bound, inputs, staging, TABLE_FILE, resources=ctx.step.resources,
                          keep_order=not config.get("key"))
    except duckdb.Error as exc:
        raise StepFailed(f"feature {ctx.step.id!r}: SQL failed: {exc}") from None


def _transform(ctx: StepContext, config: dict):
    import pandas as pd
    import pyarrow as pa

    function = import_function(config["transform"], ctx.root)
    frames = {name: ctx.read_table(name).to_pandas() for name in config["inputs"]}
    result = function(frames)
    if not isinstance(result, pd.DataFrame):
        raise StepFailed(f"feature {ctx.step.id!r}: {config['transform']} returned {type(result).__name__}, expected a pandas DataFrame")
    return pa.Table.from_pandas(result, preserve_index=False)
