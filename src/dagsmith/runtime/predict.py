"""Step predict: batch scoring of a table, through the code path of `dagsmith serve`.

The model: `trained` (this run's model: the select step's choice per partition, or the train
step's model; model_version null), or a registry version of deployment.model_name
(`production`, `canary` as the aliases are when the step runs: after this run's deploy when the
spec has one; or a version number).

The input table is read in batches of `batch_rows` rows (parquet record batches) and each
batch is scored and written before the next is read, so the memory a step needs is bounded by
the batch, not the table. Each batch's rows become the JSON values a request would carry
(scoring.rows_of) and go through scoring.predict_version: the same routing by the partition
column, encoding and checks as serve, so the scores equal serve's answers for the same rows.

With `rows_per_task` N the step is a fan-out over row ranges (FanOut method "rows"): item i
scores rows [i*N, (i+1)*N) of the input (reading only the row groups that hold them) and commits
its part of the output table, items/<step>/<i>/table.parquet, with the item count in its
manifest (`items`); readers read the parts in item order as one table (StepContext.table_parts).
The parts' concatenation is exactly the table one task would write.

The output table (table.parquet) is the input rows, every column as it was, followed by:
  prediction     the model's prediction
  probability    classifiers: the probability the model gives the PREDICTED class (binary and
                 multiclass alike; with two classes it is max(p, 1-p), not p(positive));
                 regressors: null
  model_version  the registry version that scored the rows; null for this run's model
(`output_columns` chooses prediction and/or probability; model_version is always there.)

A row of a partitioned model needs the partition column; a row whose partition has no model,
or lacks a feature column, fails the step with serve's message naming the row (its index in
the input table) and the value: predictions are never silently left null.
"""

from __future__ import annotations

import dataclasses

from . import registry
from .context import StepContext, StepFailed
from .data import json_scalar, partition_key
from .fanout import item_count, row_range
from .scoring import PredictionFailed, RequestError, VersionModels, load_version, predict_version, rows_of, trained_version

OUTPUT_COLUMNS = ("prediction", "probability", "model_version")


def resolve_version(ctx: StepContext) -> int | None:
    """The registry version the step scores with (None: this run's model)."""
    config = ctx.step.config
    if config["model"] == "trained":
        return None
    return registry.resolve(ctx.store, config["model_name"], config["model"])


def _models(ctx: StepContext) -> VersionModels:
    version = resolve_version(ctx)
    if version is None:
        return trained_version(ctx)
    return load_version(ctx.store, ctx.step.config["model_name"], version)


def run(ctx: StepContext) -> dict:
    fanout = ctx.step.fanout
    if fanout is None:
        return _score(ctx, None)
    if ctx.item is not None:
        return _score(ctx, row_range(ctx))
    # A fan-out without --item (e.g. `dagsmith step IR STEP`): every item in turn, in this process.
    count = item_count(ctx)
    rows = 0
    for index in range(count):
        item_ctx = dataclasses.replace(ctx, item=index)
        result = _score(item_ctx, row_range(item_ctx))
        item_ctx.write_result(result)
        rows += result["rows"]
        summary = result
    out = {k: v for k, v in summary.items() if k not in ("rows", "range", "item")}
    return {**out, "rows": rows, "items": count}


def _score(ctx: StepContext, rows_range: tuple[int, int, int] | None) -> dict:
    """Score the input table, or (a row fan-out's item) rows [start, stop) of it, and commit the
    output table (the item's part of it, whose manifest says how many parts there are)."""
    import pyarrow as pa
    import pyarrow.parquet as pq

    from .data import user_path

    config = ctx.step.config
    wanted = [c for c in ("prediction", "probability") if c in config.get("output_columns", ("prediction", "probability"))]
    batch_rows = int(config.get("batch_rows") or 10_000)
    source = config["input"]
    user_path(ctx.root)  # a model from an entrypoint unpickles classes of the user's modules
    models = _models(ctx)
    files = ctx.table_files(source)
    schema = pq.ParquetFile(files[0]).schema_arrow
    clash = [c for c in (*wanted, "model_version") if c in schema.names]
    if clash:
        raise StepFailed(f"predict {ctx.step.id!r}: the input table {source!r} already has the column(s) "
                         f"{', '.join(repr(c) for c in clash)} the scores are written as: rename them in a feature step")
    first, last, count = rows_range if rows_range is not None else (0, None, None)

    staging = ctx.stage()
    writer = None
    prediction_type = "float64" if models.task == "regressor" else None
    offset = first  # the index in the input table of the batch's first row (messages name it)
    try:
        for batch in batches(files, batch_rows, first, last):
            table = pa.Table.from_batches([batch])
            rows = rows_of(_frame(table))
            try:
                predictions, probabilities = predict_version(models, rows, offset)
            except RequestError as exc:
                raise StepFailed(f"predict {ctx.step.id!r} cannot score table {source!r}: {exc.reason}") from None
            except PredictionFailed as exc:
                raise StepFailed(f"predict {ctx.step.id!r}: {exc}") from None
            columns = {}
            if "prediction" in wanted:
                if prediction_type is None:  # the first batch's type, kept for every batch
                    prediction_type = pa.array(predictions).type
                columns["prediction"] = pa.array(predictions, type=prediction_type)
            if "probability" in wanted:
                columns["probability"] = pa.array(_of_predicted(predictions, probabilities), type=pa.float64())
            columns["model_version"] = pa.array([models.version] * len(rows), type=pa.int64())
            for name, values in columns.items():
                table = table.append_column(name, values)
            if writer is None:
                writer = pq.ParquetWriter(staging.path("table.parquet"), table.schema)
            writer.write_table(table.cast(writer.schema))
            offset += len(rows)
        if writer is None:  # an empty input (or range): an empty table of the same columns
            prediction_type = prediction_type or _class_type(models)
            empty = schema.empty_table()
            for name in (*wanted, "model_version"):
                empty = empty.append_column(name, pa.array([], type=pa.float64() if name == "probability" else
                                                            pa.int64() if name == "model_version" else prediction_type or pa.null()))
            pq.write_table(empty, staging.path("table.parquet"))
    finally:
        if writer is not None:
            writer.close()
    ctx.store.commit(staging, None if count is None else {"items": count})
    result = {"rows": offset - first, "model": "trained" if models.version is None else config["model_name"],
              "model_version": models.version, "columns": [*wanted, "model_version"]}
    if models.partition_by:
        result["partition_by"] = models.partition_by
    if count is not None:
        result.update(item=ctx.item, range=[first, offset])
    return result


def batches(files: list, batch_rows: int, start: int = 0, stop: int | None = None):
    """Record batches of at most `batch_rows` rows of the table in `files` (its parts, in order),
    rows [start, stop) only: the row groups wholly outside the range are never read."""
    import pyarrow.parquet as pq

    position = 0  # the table's row index of the current file's first row
    for path in files:
        parquet = pq.ParquetFile(path)
        groups, cursor = [], None
        for group in range(parquet.num_row_groups):
            size = parquet.metadata.row_group(group).num_rows
            if position + size > start and (stop is None or position < stop):
                cursor = position if cursor is None else cursor
                groups.append(group)
            position += size
        if not groups:
            continue
        for batch in parquet.iter_batches(batch_size=batch_rows, row_groups=groups):
            low = max(start - cursor, 0)
            high = len(batch) if stop is None else min(len(batch), stop - cursor)
            cursor += len(batch)
            if high > low:
                yield batch if (low, high) == (0, len(batch)) else batch.slice(low, high - low)
            if stop is not None and cursor >= stop:
                break


def _class_type(models: VersionModels):
    """The arrow type of a classifier's predictions (its classes'), for an empty table."""
    import pyarrow as pa

    model = next(iter(models.models.values()))
    classes = model.get("classes")
    try:
        return pa.array([json_scalar(c) for c in classes]).type if classes else None
    except (pa.ArrowInvalid, pa.ArrowTypeError):
        return None


def _frame(table):
    """A record batch as pandas, decimals as floats and dates as datetimes, as training reads
    its tables (data.load_inputs)."""
    import pyarrow as pa

    columns = [c.cast(pa.float64()) if pa.types.is_decimal(c.type) else c for c in table.columns]
    return pa.table(columns, names=table.column_names).to_pandas(date_as_object=False)


def _of_predicted(predictions: list, probabilities: list | None) -> list:
    """Each row's probability of its predicted class (None without probabilities)."""
    if probabilities is None:
        return [None] * len(predictions)
    out = []
    for prediction, probs in zip(predictions, probabilities):
        if probs is None:
            out.append(None)
            continue
        value = probs.get(partition_key(json_scalar(prediction)))
        out.append(value if value is not None else max((p for p in probs.values() if p is not None), default=None))
    return out
