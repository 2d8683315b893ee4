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

from . import registry
from .context import StepContext, StepFailed
from .data import json_scalar, partition_key
from .scoring import PredictionFailed, RequestError, VersionModels, load_version, predict_version, rows_of, trained_version

OUTPUT_COLUMNS = ("prediction", "probability", "model_version")


def resolve_version(ctx: StepContext) -> int | None:
    """The registry version the step scores with (None: this run's model)."""
    config = ctx.step.config
    if config["model"] == "trained":
        return None
    return registry.resolve(ctx.store, config["model_name"], config["model"])


def model_fingerprint(ctx: StepContext):
    """What identifies the model the step would score with, for the cache key: this run's model
    is in the key through its step's fingerprint (a dependency); a registry version by its
    number and the fingerprint of its files. None: it cannot be resolved (the step will fail)."""
    try:
        version = resolve_version(ctx)
    except StepFailed:
        return None
    if version is None:
        return "trained"
    manifest = ctx.store.manifest(registry.version_key(ctx.step.config["model_name"], version))
    return None if manifest is None else {"version": version, "fingerprint": manifest.get("fingerprint")}


def _models(ctx: StepContext) -> VersionModels:
    version = resolve_version(ctx)
    if version is None:
        return trained_version(ctx)
    return load_version(ctx.store, ctx.step.config["model_name"], version)


def run(ctx: StepContext) -> dict:
    import pyarrow as pa
    import pyarrow.parquet as pq

    from .data import user_path

    config = ctx.step.config
    wanted = [c for c in ("prediction", "probability") if c in config.get("output_columns", ("prediction", "probability"))]
    batch_rows = int(config.get("batch_rows") or 10_000)
    source = config["input"]
    user_path(ctx.root)  # a model from an entrypoint unpickles classes of the user's modules
    models = _models(ctx)
    parquet = pq.ParquetFile(ctx.table_file(source))
    clash = [c for c in (*wanted, "model_version") if c in parquet.schema_arrow.names]
    if clash:
        raise StepFailed(f"predict {ctx.step.id!r}: the input table {source!r} already has the column(s) "
                         f"{', '.join(repr(c) for c in clash)} the scores are written as: rename them in a feature step")

    staging = ctx.stage()
    writer = None
    prediction_type = "float64" if models.task == "regressor" else None
    offset = 0
    try:
        for batch in parquet.iter_batches(batch_size=batch_rows):
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
        if writer is None:  # an empty input: an empty table of the same columns
            prediction_type = prediction_type or _class_type(models)
            empty = parquet.schema_arrow.empty_table()
            for name in (*wanted, "model_version"):
                empty = empty.append_column(name, pa.array([], type=pa.float64() if name == "probability" else
                                                            pa.int64() if name == "model_version" else prediction_type or pa.null()))
            pq.write_table(empty, staging.path("table.parquet"))
    finally:
        if writer is not None:
            writer.close()
    ctx.store.commit(staging)
    result = {"rows": offset, "model": "trained" if models.version is None else config["model_name"],
              "model_version": models.version, "columns": [*wanted, "model_version"]}
    if models.partition_by:
        result["partition_by"] = models.partition_by
    return result


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
