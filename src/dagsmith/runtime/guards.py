"""Guard rails where inference can go wrong: warnings about how the training table became model
inputs (data.prepare decides the encoding; this says when to doubt it).

- A text column is **mostly numeric**: at least MOSTLY_NUMERIC (90%) of its non-null train values
  parse as numbers (`pandas.to_numeric`), e.g. a CSV column of measurements where a few cells
  are `NA`. It is one-hot encoded (or dropped as an identifier) instead of used as a number.
- **One-hot encoding adds more than MAX_ONE_HOT (50) columns** in all, listing the widest columns.
- **A column is dropped** (a datetime column, a text column with too many distinct values).

The train step puts them in its result's `warnings` (a list of lines, per item for a fan-out),
the local runner copies them into the run record (`warnings`, with `model_inputs`: how many
columns the model(s) take) for the summary, and the report reads them from the steps' result
files, so orchestrator runs show them too.
"""

from __future__ import annotations

import math

MOSTLY_NUMERIC = 0.9  # share of a text column's non-null values that parse as numbers
MAX_ONE_HOT = 50  # one-hot columns (all text columns together) past which a run warns
EXAMPLES = 3  # the non-numeric values a warning quotes


def guard_warnings(train_rows, encoding: dict, dropped: dict, columns: list, declare_hint: str) -> list[str]:
    """The warnings about one encoding decided from `train_rows` (the raw train rows):
    `columns` are the model input columns, `declare_hint` says where a column's type can be
    declared (e.g. `sources.penguins.columns / null_values`)."""
    warnings = []
    for column in [*encoding.get("categorical", []), *dropped]:
        text = numeric_text_warning(train_rows[column], column, declare_hint)
        if text:
            warnings.append(text)
    widths = one_hot_widths(encoding, columns)
    added = sum(widths.values())
    if added > MAX_ONE_HOT:
        widest = sorted(widths.items(), key=lambda kv: (-kv[1], kv[0]))
        listed = ", ".join(f"{name!r} ({count})" for name, count in widest[:5])
        more = f" and {len(widest) - 5} more" if len(widest) > 5 else ""
        warnings.append(f"one-hot encoding adds {added} columns (more than {MAX_ONE_HOT}): {listed}{more}; "
                        "a text column with many values may be numbers read as text, or an identifier")
    for column, reason in dropped.items():
        warnings.append(f"column {column!r} dropped (not a model input): {reason}")
    return warnings


def numeric_text_warning(series, column: str, declare_hint: str) -> str | None:
    """A warning when a text column's non-null values are mostly numbers, else None."""
    import pandas as pd

    if (pd.api.types.is_numeric_dtype(series) or pd.api.types.is_bool_dtype(series)
            or pd.api.types.is_datetime64_any_dtype(series) or pd.api.types.is_timedelta64_dtype(series)):
        return None
    values = series.dropna()
    if values.empty:
        return None
    text = values.astype(str).str.strip()  # a mixed column's numbers count as numbers; True, b"1" do not
    numbers = pd.to_numeric(text, errors="coerce").notna()
    share = float(numbers.mean())
    if share < MOSTLY_NUMERIC:
        return None
    others = text[~numbers].value_counts()
    examples = ", ".join(f"{value!r} ({count})" for value, count in others.head(EXAMPLES).items())
    return (f"column {column!r} is text but {math.floor(share * 100)}% of its values are numbers"
            + (f" (the others: {examples})" if examples else "")
            + f": declare its type or its null values ({declare_hint})")


def one_hot_widths(encoding: dict, columns: list) -> dict:
    """Text column -> how many one-hot columns it became (`column=value` in `columns`)."""
    plain = set(encoding.get("features", [])) - set(encoding.get("categorical", []))
    widths = {}
    for column in encoding.get("categorical", []):
        prefix = f"{column}="
        widths[column] = sum(1 for name in columns if name.startswith(prefix) and name not in plain)
    return widths


def summarize(results: list) -> tuple[list[str], list[int]]:
    """From train step results (one, or one per fan-out item): the distinct warnings in order,
    and the distinct numbers of model input columns, sorted."""
    warnings, counts = [], set()
    for result in results:
        if not isinstance(result, dict):
            continue
        for line in result.get("warnings") or []:
            if isinstance(line, str) and line not in warnings:
                warnings.append(line)
        inputs = result.get("model_inputs")  # an int, or a list of them (a whole fan-out's)
        counts.update(n for n in (inputs if isinstance(inputs, list) else [inputs])
                      if isinstance(n, int) and not isinstance(n, bool))
    return warnings, sorted(counts)


def model_inputs_text(counts: list) -> str | None:
    """`model inputs: 7 columns`, or a range when partitions' models differ."""
    if not counts:
        return None
    if len(counts) == 1:
        return f"model inputs: {counts[0]} column{'' if counts[0] == 1 else 's'}"
    return f"model inputs: {counts[0]} to {counts[-1]} columns (the partitions' models differ)"
