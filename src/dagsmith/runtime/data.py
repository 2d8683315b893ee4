"""The training data: inputs -> one frame -> a partition -> the held-out split -> model inputs.

Train, select, evaluate and gate all call `training_frame`, so every one of them sees exactly
the same split of exactly the same rows. The rules (all deterministic):

1. Inputs: each table of the train step's `inputs` (source or feature outputs of this run);
   several tables are inner-joined on the columns they have in common. Decimal columns become
   floats, dates become datetimes. When the inputs have key columns (`config["exclude"]`, the
   features' `key`), rows are sorted by them first, so the split does not depend on the order a
   query happened to return rows in.
2. Partition: with `partition_by`, only the rows of one partition value (compared as JSON-safe
   scalars, so a date partition is its ISO string). Rows with a null partition are never used.
3. Split: `{test_size, seed}` -> sklearn `train_test_split(random_state=seed)`, stratified on
   the target for classifiers when every class can be split (else plain); `{column,
   test_value}` -> rows whose column equals test_value are held out; `{hash_of, test_fraction}`
   -> a row is held out when key_fraction(its key values) < test_fraction: the first 8 bytes of
   the SHA-256 of key_text (a canonical JSON array of the values) over 2**64, so a row's side
   depends on its key alone and adding rows moves no row (a null key is an error naming the
   column).
4. Features: every column except the target, the split column, the hash_of key columns, the
   partition column and `config["exclude"]`. Numbers stay as they are; booleans become 0/1; durations become
   seconds; **datetime columns are dropped** (a timestamp is rarely a feature a model can
   generalize from: derive day-of-week, age, ... in a feature step instead); text/categorical
   columns are one-hot encoded (`pandas.get_dummies`, columns named `col=value`) from the
   train rows, and the test rows are reindexed onto the train columns (unseen values -> all 0).
   A text column with more than MAX_CATEGORIES distinct values is dropped (an identifier, not
   a category). Dropped columns are in the model file, and in the train result's `warnings`
   with the other guard rails (guards.py: text columns that are mostly numbers, wide one-hot
   encodings).

The encoding is saved in the model file (`encoding`, `columns`), and `model_input(model,
frame)` applies it to new rows, e.g. when serving.
"""

from __future__ import annotations

import datetime as _dt
import decimal
import hashlib
import json
import math
from collections import OrderedDict
from dataclasses import dataclass, field
from typing import Any, NamedTuple

from .context import StepContext, StepFailed

MAX_CATEGORIES = 1000
_CACHE_SIZE = 8
_tables: "OrderedDict[tuple, Any]" = OrderedDict()
_prepared: "OrderedDict[tuple, Prepared]" = OrderedDict()


class TrainingFrame(NamedTuple):
    X_train: Any
    y_train: Any
    X_test: Any
    y_test: Any
    columns: list


@dataclass
class Prepared:
    """One partition's split, encoded, with what is needed to encode new rows the same way."""

    X_train: Any
    y_train: Any
    X_test: Any
    y_test: Any
    columns: list
    task: str  # what the split assumed: "classifier" | "regressor"
    encoding: dict
    dropped: dict = field(default_factory=dict)  # column -> reason
    test_rows: Any = None  # the raw held-out rows (to score a model with another encoding)
    warnings: list = field(default_factory=list)  # guard rails (guards.py): where inference may be wrong

    def frames(self) -> TrainingFrame:
        return TrainingFrame(self.X_train, self.y_train, self.X_test, self.y_test, self.columns)


# --- small helpers ----------------------------------------------------------------------------

def json_scalar(value):
    """A value as a JSON-safe scalar: numpy -> Python, dates -> ISO strings, Decimal -> float,
    missing (None, NaN, NaT, NA) -> None."""
    import pandas as pd

    if value is None or (pd.api.types.is_scalar(value) and pd.isna(value)):
        return None
    if type(value).__name__ == "datetime64":  # numpy: .item() would give nanoseconds as an int
        value = pd.Timestamp(value)
    if hasattr(value, "item") and not isinstance(value, (str, bytes)):
        try:
            value = value.item()
        except (ValueError, AttributeError):
            pass
    if isinstance(value, (_dt.datetime, _dt.date, _dt.time)):
        return value.isoformat()
    if hasattr(value, "isoformat"):  # pandas Timestamp
        return value.isoformat()
    if isinstance(value, decimal.Decimal):
        return float(value)
    if isinstance(value, bytes):
        return value.decode("utf-8", "replace")
    return value


def partition_key(partition) -> str:
    """How a partition value is written as a JSON object key."""
    return partition if isinstance(partition, str) else json.dumps(partition)


def train_step(ir):
    """The IR's train step (there is at most one)."""
    for step in ir.steps:
        if step.kind == "train":
            return step
    raise StepFailed(f"pipeline {ir.name!r} has no training step")


def _lru_get(cache: OrderedDict, key):
    if key in cache:
        cache.move_to_end(key)
        return cache[key]
    return None


def _lru_put(cache: OrderedDict, key, value) -> None:
    cache[key] = value
    cache.move_to_end(key)
    while len(cache) > _CACHE_SIZE:
        cache.popitem(last=False)


# --- loading ------------------------------------------------------------------------------------

def table_to_pandas(table):
    import pyarrow as pa

    columns = []
    for column in table.columns:
        if pa.types.is_decimal(column.type):
            column = column.cast(pa.float64())
        columns.append(column)
    table = pa.table(columns, names=table.column_names)
    return table.to_pandas(date_as_object=False)


def load_inputs(ctx: StepContext, inputs: list[str], sort_by: list[str] = ()):
    """The input tables of this run as one pandas DataFrame (joined on common columns)."""
    fingerprints = tuple((name, ctx.table_fingerprint(name)) for name in inputs)
    key = (ctx.store.uri, ctx.values.run_id, fingerprints, tuple(sort_by))
    cached = _lru_get(_tables, key)
    if cached is not None:
        return cached
    frame = None
    for name in inputs:
        df = table_to_pandas(ctx.read_table(name))
        if frame is None:
            frame = df
            continue
        common = [c for c in frame.columns if c in df.columns]
        if not common:
            raise StepFailed(f"training inputs cannot be joined: {name!r} has no column in common with "
                             f"{', '.join(repr(i) for i in inputs[:inputs.index(name)])}; "
                             "join them in a feature step instead")
        frame = frame.merge(df, on=common, how="inner")
    if frame is None:
        raise StepFailed("training has no inputs")
    keys = [c for c in sort_by if c in frame.columns]
    if keys:
        frame = frame.sort_values(keys, kind="mergesort").reset_index(drop=True)
    _lru_put(_tables, key, frame)
    return frame


def partition_mask(series, value):
    """Rows of `series` equal to the JSON-safe partition value."""
    import pandas as pd

    if pd.api.types.is_datetime64_any_dtype(series) or series.dtype == object:
        return series.map(json_scalar) == value
    if isinstance(value, str) and not (pd.api.types.is_string_dtype(series) or isinstance(series.dtype, pd.CategoricalDtype)):
        return series.astype(str) == value
    return series == value


def distinct_partitions(frame, column: str) -> list:
    """Sorted distinct non-null values of a column, as JSON-safe scalars."""
    if column not in frame.columns:
        raise StepFailed(f"partition_by column {column!r} is not in the training data "
                         f"(columns: {', '.join(map(str, frame.columns))})")
    values = {json_scalar(v) for v in frame[column].dropna().unique()}
    values.discard(None)
    try:
        return sorted(values)
    except TypeError:  # mixed types
        return sorted(values, key=lambda v: json.dumps(v, sort_keys=True))


# --- task -------------------------------------------------------------------------------------

def user_path(root) -> None:
    """Put the spec's folder (and the shipped code package, first) on sys.path, so user modules
    (entrypoints, their models) import: userscode.user_path."""
    from .userscode import user_path as add

    add(root)


def import_object(path: str, what: str = "estimator"):
    """`package.module.Name` or `package.module:name` -> the object."""
    import importlib

    module_name, sep, attr = path.partition(":")
    if not sep:
        module_name, _, attr = path.rpartition(".")
    if not module_name or not attr:
        raise StepFailed(f"{what} {path!r} is not an import path like package.module.Name or package.module:name")
    try:
        module = importlib.import_module(module_name)
    except ImportError as exc:
        raise StepFailed(f"cannot import {what} {path!r}: {exc}") from None
    obj = module
    for part in attr.split("."):
        try:
            obj = getattr(obj, part)
        except AttributeError:
            raise StepFailed(f"cannot import {what} {path!r}: module {module_name!r} has no {attr!r}") from None
    return obj


def make_estimator(config: dict, params: dict | None = None):
    """An unfitted estimator of the train config, with model.params merged with `params`."""
    cls = import_object(config["model"]["estimator"])
    merged = {**(config["model"].get("params") or {}), **(params or {})}
    try:
        return cls(**merged)
    except TypeError as exc:
        raise StepFailed(f"{config['model']['estimator']}({', '.join(f'{k}={v!r}' for k, v in merged.items())}): {exc}") from None


def estimator_task(estimator) -> str | None:
    from sklearn.base import is_classifier, is_regressor

    try:
        if is_classifier(estimator):
            return "classifier"
        if is_regressor(estimator):
            return "regressor"
    except (TypeError, AttributeError):
        pass
    if hasattr(estimator, "predict_proba"):
        return "classifier"
    return None


def target_task(y) -> str:
    """Guess from the target: text/bool/category or an integer with few values -> classifier."""
    import pandas as pd

    if pd.api.types.is_bool_dtype(y) or not pd.api.types.is_numeric_dtype(y):
        return "classifier"
    if pd.api.types.is_integer_dtype(y) and y.nunique() <= 10:
        return "classifier"
    return "regressor"


def split_task(config: dict, y) -> str:
    """The task the split assumes (stratification): the estimator's, or guessed from the target."""
    if config["model"].get("estimator"):
        task = estimator_task(make_estimator(config))
        if task:
            return task
    return target_task(y)


# --- features ---------------------------------------------------------------------------------

def _looks_temporal(series) -> bool:
    sample = series.dropna()
    if sample.empty:
        return False
    return isinstance(sample.iloc[0], (_dt.date, _dt.datetime, _dt.time))


def plan_encoding(frame, features: list[str]) -> tuple[dict, dict]:
    """Decide, from the train rows, how each feature column becomes model input."""
    import pandas as pd

    encoding = {"features": [], "categorical": [], "boolean": [], "duration": []}
    dropped = {}
    for column in features:
        series = frame[column]
        if pd.api.types.is_datetime64_any_dtype(series) or (series.dtype == object and _looks_temporal(series)):
            dropped[column] = "datetime column (derive numbers from it in a feature step)"
            continue
        if pd.api.types.is_timedelta64_dtype(series):
            encoding["duration"].append(column)
        elif pd.api.types.is_bool_dtype(series):
            encoding["boolean"].append(column)
        elif pd.api.types.is_numeric_dtype(series):
            pass
        else:
            distinct = series.nunique(dropna=True)
            if distinct > MAX_CATEGORIES:
                dropped[column] = f"text column with {distinct} distinct values (> {MAX_CATEGORIES}: an identifier?)"
                continue
            encoding["categorical"].append(column)
        encoding["features"].append(column)
    return encoding, dropped


def encode(frame, encoding: dict, columns: list | None = None):
    """Raw rows -> model input columns (one-hot, 0/1, seconds); reindexed onto `columns` if given."""
    import pandas as pd

    missing = [c for c in encoding["features"] if c not in frame.columns]
    if missing:
        raise StepFailed(f"the data lacks feature columns the model needs: {', '.join(missing)}")
    X = frame[encoding["features"]].copy()
    for column in encoding["boolean"]:
        X[column] = X[column].astype("float64") if X[column].isna().any() else X[column].astype("int8")
    for column in encoding["duration"]:
        X[column] = X[column].dt.total_seconds()
    if encoding["categorical"]:
        for column in encoding["categorical"]:
            if X[column].dtype == object:  # mixed values: one text per value, nulls stay null
                X[column] = X[column].map(_category_text)
        X = pd.get_dummies(X, columns=encoding["categorical"], prefix_sep="=", dummy_na=False, dtype="int8")
    X.columns = [str(c) for c in X.columns]
    if columns is not None:
        X = X.reindex(columns=list(columns), fill_value=0)
    return X


def _category_text(value):
    value = json_scalar(value)
    if value is None or isinstance(value, str):
        return value
    return json.dumps(value)


def model_input(model: dict, frame):
    """New raw rows -> what `model["estimator"].predict` takes (the training encoding)."""
    return encode(frame, model["encoding"], model["columns"])


# --- the split --------------------------------------------------------------------------------

_ITEM = object()


def training_frame(ctx: StepContext, partition=_ITEM) -> TrainingFrame:
    """(X_train, y_train, X_test, y_test, columns) of the training data.

    `partition`: the partition value; by default the partition of ctx.item when ctx is an item
    of the train fan-out, else all rows (unpartitioned training).
    """
    return prepare(ctx, partition).frames()


def prepare(ctx: StepContext, partition=_ITEM) -> Prepared:
    step = train_step(ctx.ir)
    config = step.config
    if partition is _ITEM:
        partition = None
        if ctx.item is not None and ctx.step.id == step.id and step.fanout is not None and step.fanout.partition_by:
            from .fanout import decode, partitions_of

            partition, _, _ = decode(step.fanout, ctx.item, partitions_of(ctx))
    partition_by = config.get("partition_by")
    inputs = list(config["inputs"])
    exclude = list(config.get("exclude") or [])
    fingerprints = tuple((name, ctx.table_fingerprint(name)) for name in inputs)
    key = (ctx.store.uri, ctx.values.run_id, fingerprints, json.dumps(config, sort_keys=True, default=str),
           json.dumps(partition, default=str))
    cached = _lru_get(_prepared, key)
    if cached is not None:
        return cached

    frame = load_inputs(ctx, inputs, sort_by=exclude)
    target = config["target"]
    if target not in frame.columns:
        raise StepFailed(f"target column {target!r} is not in the training data (columns: {', '.join(map(str, frame.columns))})")
    if partition_by:
        if partition_by not in frame.columns:
            raise StepFailed(f"partition_by column {partition_by!r} is not in the training data")
        if partition is not None:
            frame = frame[partition_mask(frame[partition_by], partition)]
            if frame.empty:
                raise StepFailed(f"partition {partition_by}={partition!r} has no rows in the training data")
    nulls = int(frame[target].isna().sum())
    if nulls:
        raise StepFailed(f"target column {target!r} has {nulls} null value(s)"
                         + (f" in partition {partition!r}" if partition is not None else "")
                         + ": filter them out in a feature step")
    split = config.get("split") or {"test_size": 0.2, "seed": 0}
    task = split_task(config, frame[target])
    train_rows, test_rows = _split(frame, split, target, task, partition)

    split_column = split.get("column")
    skip = {target, split_column, partition_by, *exclude, *(split.get("hash_of") or ())} - {None}
    features = [c for c in frame.columns if c not in skip]
    encoding, dropped = plan_encoding(train_rows, features)
    if not encoding["features"]:
        raise StepFailed("no feature columns are left for training (all are the target, the split or partition "
                         "column, keys, or dropped: " + ", ".join(f"{c}: {r}" for c, r in dropped.items()) + ")")
    X_train = encode(train_rows, encoding)
    columns = list(X_train.columns)
    X_test = encode(test_rows, encoding, columns)
    from .guards import guard_warnings

    warnings = guard_warnings(train_rows, encoding, dropped, columns, _declare_hint(ctx.ir, inputs))
    prepared = Prepared(
        X_train=X_train.reset_index(drop=True), y_train=train_rows[target].reset_index(drop=True),
        X_test=X_test.reset_index(drop=True), y_test=test_rows[target].reset_index(drop=True),
        columns=columns, task=task, encoding=encoding, dropped=dropped, test_rows=test_rows.reset_index(drop=True),
        warnings=warnings,
    )
    _lru_put(_prepared, key, prepared)
    return prepared


def _declare_hint(ir, inputs: list[str]) -> str:
    """Where a training column's type can be declared: its source's `columns` / `null_values`,
    or, for a feature, a CAST in its query."""
    sources = [name for name in inputs if ir.has_step(name) and ir.step(name).kind == "source"]
    hint = " or ".join(f"sources.{name}.columns / null_values" for name in sources)
    if len(sources) < len(inputs):
        hint = (hint + ", or " if hint else "the source's columns / null_values, or ") + "a CAST in the feature that makes it"
    return hint


def _split(frame, split: dict, target: str, task: str, partition):
    where = f" (partition {partition!r})" if partition is not None else ""
    if "column" in split:
        column, test_value = split["column"], split.get("test_value", "test")
        if column not in frame.columns:
            raise StepFailed(f"split column {column!r} is not in the training data")
        mask = frame[column] == test_value
        if not mask.any():
            mask = frame[column].astype(str) == str(test_value)
        test, train = frame[mask], frame[~mask]
    elif "hash_of" in split:
        mask = hash_test_mask(frame, list(split["hash_of"]), split.get("test_fraction", 0.2), where)
        test, train = frame[mask], frame[~mask]
    else:
        from sklearn.model_selection import train_test_split

        test_size, seed = split.get("test_size", 0.2), split.get("seed", 0)
        if len(frame) < 2:
            raise StepFailed(f"{len(frame)} row(s){where}: too few to split into train and test")
        stratify = None
        if task == "classifier":
            counts = frame[target].value_counts()
            n_test = math.ceil(test_size * len(frame)) if isinstance(test_size, float) else int(test_size)
            if len(counts) > 1 and counts.min() >= 2 and len(counts) <= n_test <= len(frame) - len(counts):
                stratify = frame[target]
        try:
            train, test = train_test_split(frame, test_size=test_size, random_state=seed, stratify=stratify)
        except ValueError:
            train, test = train_test_split(frame, test_size=test_size, random_state=seed)
    if train.empty or test.empty:
        raise StepFailed(f"the split leaves {len(train)} train and {len(test)} test rows{where}: both need rows")
    return train, test


def key_text(values) -> str:
    """The canonical text of one row's key values, what the split hashes: a compact JSON array
    (UTF-8, no spaces) of the values as JSON-safe scalars (json_scalar: dates and times as ISO
    text, Decimals as numbers), where a whole float is written as an integer, so `7` and `7.0`
    (an integer column that became float) are the same key."""
    out = []
    for value in values:
        value = json_scalar(value)
        if isinstance(value, float) and value.is_integer() and abs(value) < 2**63:
            value = int(value)
        out.append(value)
    return json.dumps(out, ensure_ascii=False, separators=(",", ":"))


def key_fraction(values) -> float:
    """Where a row's key falls in [0, 1): the first 8 bytes of the SHA-256 of key_text, as a
    big-endian integer, over 2**64. The same key gives the same number on every machine, Python
    version and run (never Python's hash(), which is salted per process)."""
    digest = hashlib.sha256(key_text(values).encode("utf-8")).digest()
    return int.from_bytes(digest[:8], "big") / 2.0**64


def hash_test_mask(frame, columns: list[str], test_fraction: float, where: str = ""):
    """The held-out rows of a hash split: key_fraction(row's key values) < test_fraction. A row's
    side depends on its key alone, never on the other rows, so adding rows moves none."""
    import pandas as pd

    missing = [c for c in columns if c not in frame.columns]
    if missing:
        raise StepFailed(f"split hash_of column{'s' if len(missing) > 1 else ''} {', '.join(map(repr, missing))} "
                         f"not in the training data (columns: {', '.join(map(str, frame.columns))})")
    for column in columns:
        nulls = int(frame[column].isna().sum())
        if nulls:
            raise StepFailed(f"split hash_of column {column!r} has {nulls} null value(s){where}: a row without a key "
                             "has no stable side; fill or filter them in a feature step")
    texts = [column_key_texts(frame[column]) for column in columns]
    sha256 = hashlib.sha256
    scale = 2.0**64
    held_out = [int.from_bytes(sha256(("[" + ",".join(parts) + "]").encode("utf-8")).digest()[:8], "big") / scale < test_fraction
                for parts in zip(*texts)]
    return pd.Series(held_out, index=frame.index, dtype=bool)


def column_key_texts(series) -> list[str]:
    """Each value's part of key_text, a column at a time (the same text key_text writes, faster:
    integers and plain text without a per-value json_scalar)."""
    import pandas as pd

    if pd.api.types.is_integer_dtype(series) and not pd.api.types.is_bool_dtype(series):
        return [str(int(v)) for v in series.tolist()]
    if series.dtype == object or pd.api.types.is_string_dtype(series):
        dumps = json.dumps
        return [dumps(v, ensure_ascii=False) if isinstance(v, str) else key_text([v])[1:-1] for v in series.tolist()]
    return [key_text([v])[1:-1] for v in series.tolist()]
