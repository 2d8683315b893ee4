"""Validations of tables larger than memory: Great Expectations' SQL engine on DuckDB
(runtime/gx_duckdb.py, validate.check_parts) against its pandas engine (validate.check_table).

Every expectation in validate.SQL_EXPECTATIONS is run on generated tables (nulls, repeated
values, several part files) through both, and must give the same outcome, counts and observed
value: GX's pandas engine is the oracle. An expectation joins SQL_EXPECTATIONS only with a
generator here (test_every_sql_expectation_is_proven).
"""

from __future__ import annotations

import math
from types import SimpleNamespace

import pytest

pytest.importorskip("great_expectations")
pytest.importorskip("duckdb_engine")

import pyarrow as pa  # noqa: E402
import pyarrow.parquet as pq  # noqa: E402
from hypothesis import HealthCheck, given, settings  # noqa: E402
from hypothesis import strategies as st  # noqa: E402

from dagsmith.runtime import validate  # noqa: E402

COLUMNS = ("n", "x", "s", "k")  # int with nulls, float with nulls, text with nulls, int never null

ints = st.one_of(st.none(), st.integers(-5, 5))
# NaN is a missing value to GX's pandas engine: the SQL view makes it NULL (validate.check_parts)
floats = st.one_of(st.none(), st.just(float("nan")), st.floats(-100, 100, allow_nan=False).map(lambda v: round(v, 3)))
texts = st.one_of(st.none(), st.sampled_from(["a", "bb", "ccc", "a1", "Z", ""]))
rows = st.lists(st.tuples(ints, floats, texts, st.integers(0, 3)), min_size=1, max_size=40)
numeric = st.sampled_from(["n", "x"])
any_column = st.sampled_from(COLUMNS)
bound = st.one_of(st.none(), st.integers(-6, 6))


def _bounds(draw, low=-6, high=6):
    minimum, maximum = draw(bound), draw(bound)
    if minimum is None and maximum is None:
        minimum = low
    if minimum is not None and maximum is not None and minimum > maximum:
        minimum, maximum = maximum, minimum
    kwargs = {k: v for k, v in (("min_value", minimum), ("max_value", maximum)) if v is not None}
    if draw(st.booleans()):
        kwargs.update(strict_min=draw(st.booleans()), strict_max=draw(st.booleans()))
    return kwargs


@st.composite
def between(draw, name, columns=numeric):
    return name, {"column": draw(columns), **_bounds(draw)}


@st.composite
def mostly(draw, name, **fixed):
    kwargs = dict(fixed)
    if draw(st.booleans()):
        kwargs["mostly"] = draw(st.sampled_from([0.5, 0.9]))
    return name, kwargs


@st.composite
def in_set(draw, name, mostly_allowed=True):
    column = draw(st.sampled_from(["n", "s", "k"]))
    values = (st.sampled_from(["a", "bb", "ccc", "q"]) if column == "s" else st.integers(-5, 5))
    kwargs = {"column": column, "value_set": sorted(set(draw(st.lists(values, min_size=1, max_size=4))))}
    if mostly_allowed and draw(st.booleans()):
        kwargs["mostly"] = 0.5
    return name, kwargs


@st.composite
def row_count(draw, name):
    low, high = sorted((draw(st.integers(0, 40)), draw(st.integers(0, 40))))
    return name, {"min_value": low, **({"max_value": high} if draw(st.booleans()) else {})}


GENERATORS = {
    "expect_column_values_to_not_be_null": lambda: any_column.flatmap(lambda c: mostly("expect_column_values_to_not_be_null", column=c)),
    "expect_column_values_to_be_null": lambda: any_column.flatmap(lambda c: mostly("expect_column_values_to_be_null", column=c)),
    "expect_column_values_to_be_between": lambda: between("expect_column_values_to_be_between"),
    "expect_column_values_to_be_in_set": lambda: in_set("expect_column_values_to_be_in_set"),
    "expect_column_values_to_not_be_in_set": lambda: in_set("expect_column_values_to_not_be_in_set"),
    "expect_column_values_to_be_unique": lambda: any_column.flatmap(lambda c: mostly("expect_column_values_to_be_unique", column=c)),
    "expect_column_value_lengths_to_be_between": lambda: st.builds(
        lambda lo, hi: ("expect_column_value_lengths_to_be_between", {"column": "s", "min_value": min(lo, hi), "max_value": max(lo, hi)}),
        st.integers(0, 3), st.integers(0, 3)),
    "expect_column_values_to_match_regex": lambda: st.sampled_from(["^a", "[0-9]", "^[a-c]+$"]).map(
        lambda r: ("expect_column_values_to_match_regex", {"column": "s", "regex": r})),
    "expect_column_min_to_be_between": lambda: between("expect_column_min_to_be_between"),
    "expect_column_max_to_be_between": lambda: between("expect_column_max_to_be_between"),
    "expect_column_mean_to_be_between": lambda: between("expect_column_mean_to_be_between"),
    "expect_column_median_to_be_between": lambda: between("expect_column_median_to_be_between"),
    "expect_column_sum_to_be_between": lambda: between("expect_column_sum_to_be_between"),
    "expect_column_stdev_to_be_between": lambda: between("expect_column_stdev_to_be_between"),
    "expect_column_unique_value_count_to_be_between": lambda: between("expect_column_unique_value_count_to_be_between", any_column),
    "expect_column_proportion_of_unique_values_to_be_between": lambda: st.builds(
        lambda c, lo: ("expect_column_proportion_of_unique_values_to_be_between", {"column": c, "min_value": lo}),
        any_column, st.sampled_from([0, 0.25, 0.5, 1])),
    "expect_column_proportion_of_non_null_values_to_be_between": lambda: st.builds(
        lambda c, lo: ("expect_column_proportion_of_non_null_values_to_be_between", {"column": c, "min_value": lo}),
        any_column, st.sampled_from([0, 0.5, 0.9, 1])),
    "expect_column_distinct_values_to_be_in_set": lambda: in_set("expect_column_distinct_values_to_be_in_set", False),
    "expect_column_distinct_values_to_contain_set": lambda: in_set("expect_column_distinct_values_to_contain_set", False),
    "expect_column_distinct_values_to_equal_set": lambda: in_set("expect_column_distinct_values_to_equal_set", False),
    "expect_table_row_count_to_be_between": lambda: row_count("expect_table_row_count_to_be_between"),
    "expect_table_row_count_to_equal": lambda: st.integers(0, 40).map(lambda v: ("expect_table_row_count_to_equal", {"value": v})),
    "expect_table_column_count_to_equal": lambda: st.integers(3, 5).map(lambda v: ("expect_table_column_count_to_equal", {"value": v})),
    "expect_table_columns_to_match_ordered_list": lambda: st.sampled_from([list(COLUMNS), ["n", "x", "k", "s"]]).map(
        lambda c: ("expect_table_columns_to_match_ordered_list", {"column_list": c})),
    "expect_table_columns_to_match_set": lambda: st.sampled_from([list(COLUMNS), ["n", "x"], ["n", "x", "s", "k", "z"]]).map(
        lambda c: ("expect_table_columns_to_match_set", {"column_set": c})),
    "expect_column_to_exist": lambda: st.sampled_from(["n", "s", "missing"]).map(lambda c: ("expect_column_to_exist", {"column": c})),
    "expect_column_pair_values_a_to_be_greater_than_b": lambda: st.booleans().map(
        lambda e: ("expect_column_pair_values_a_to_be_greater_than_b", {"column_A": "k", "column_B": "n", "or_equal": e})),
    "expect_compound_columns_to_be_unique": lambda: st.sampled_from([["k", "n"], ["k", "s"]]).map(
        lambda c: ("expect_compound_columns_to_be_unique", {"column_list": c})),
}


def _table(data):
    n, x, s, k = zip(*data)
    return pa.table({"n": pa.array(n, pa.int64()), "x": pa.array(x, pa.float64()),
                     "s": pa.array(s, pa.string()), "k": pa.array(k, pa.int64())})


def _write_parts(table, folder, parts: int) -> list[str]:
    files, size = [], max(1, math.ceil(table.num_rows / parts))
    for i, start in enumerate(range(0, table.num_rows, size)):
        path = folder / f"part-{i}.parquet"
        pq.write_table(table.slice(start, size), path)
        files.append(str(path))
    return files


def _staging(folder):
    return SimpleNamespace(store=SimpleNamespace(staging_root=lambda: str(folder)))


def _same(a, b) -> bool:
    if isinstance(a, float) or isinstance(b, float):
        if a is None or b is None:
            return a is b
        return math.isclose(a, b, rel_tol=1e-9, abs_tol=1e-9)
    if isinstance(a, list) and isinstance(b, list):
        return len(a) == len(b) and all(_same(x, y) for x, y in zip(a, b))
    return a == b


def _compare(by_pandas: list[dict], by_sql: list[dict]) -> list[str]:
    differences = []
    for p, s in zip(by_pandas, by_sql):
        for field in ("success", "unexpected_count", "element_count", "observed_value", "error"):
            if not _same(p.get(field), s.get(field)):
                differences.append(f"{p['type']}({p['kwargs']}): {field} pandas={p.get(field)!r} sql={s.get(field)!r}")
    return differences


@st.composite
def suites(draw):
    names = draw(st.lists(st.sampled_from(sorted(validate.SQL_EXPECTATIONS)), min_size=1, max_size=8, unique=True))
    return [dict(zip(("type", "kwargs"), draw(GENERATORS[name]()))) for name in names]


@pytest.mark.slow  # ~25 s: two GX engines on 30 generated tables
@settings(max_examples=30, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture, HealthCheck.too_slow])
@given(data=rows, parts=st.integers(1, 3), expectations=suites())
def test_sql_engine_agrees_with_pandas_engine(tmp_path_factory, data, parts, expectations):
    folder = tmp_path_factory.mktemp("parts")
    files = _write_parts(_table(data), folder, parts)
    by_pandas = validate.check_table(pq.read_table(files).to_pandas(), expectations)
    by_sql = validate.check_parts(files, expectations, _staging(folder), {"memory": "256Mi"})
    assert _compare(by_pandas, by_sql) == []
    assert [r["type"] for r in by_sql] == [e["type"] for e in expectations]


def test_every_sql_expectation_is_proven():
    assert validate.SQL_EXPECTATIONS <= set(GENERATORS)


def test_each_record_is_its_own_expectations_result(tmp_path):
    """GX returns results in an order of its own, with default kwargs dropped: each record is
    matched to its expectation (pairing them by position gave one expectation's outcome to
    another)."""
    files = _write_parts(_table([(1, 0.5, None, 0), (2, 1.5, "a", 1), (2, None, "bb", 2)]), tmp_path, 2)
    expectations = [
        {"type": "expect_column_max_to_be_between", "kwargs": {"column": "n", "max_value": 1, "strict_max": False}},
        {"type": "expect_column_stdev_to_be_between", "kwargs": {"column": "x", "max_value": 0.1}},
        {"type": "expect_column_values_to_not_be_in_set", "kwargs": {"column": "n", "value_set": [3]}},
        {"type": "expect_column_values_to_not_be_null", "kwargs": {"column": "s"}},
        {"type": "expect_table_row_count_to_equal", "kwargs": {"value": 3}},
    ]
    truth = [False, False, True, False, True]
    for records in (validate.check_table(pq.read_table(files).to_pandas(), expectations),
                    validate.check_parts(files, expectations, _staging(tmp_path), {})):
        assert [r["type"] for r in records] == [e["type"] for e in expectations]
        assert [r["success"] for r in records] == truth
        assert records[0]["observed_value"] == 2 and records[3]["unexpected_count"] == 1


def test_hostile_column_names_and_paths_stay_names(tmp_path):
    """A column name with a double quote and a part file with a single quote in its folder are
    quoted, never SQL."""
    folder = tmp_path / "it's"
    folder.mkdir()
    table = pa.table({'a"; DROP VIEW x; --': pa.array([1.0, float("nan"), None]), "k": pa.array([1, 2, 3])})
    files = _write_parts(table, folder, 2)
    expectations = [{"type": "expect_column_values_to_not_be_null", "kwargs": {"column": 'a"; DROP VIEW x; --'}}]
    [record] = validate.check_parts(files, expectations, _staging(tmp_path), {})
    assert (record["success"], record["unexpected_count"], record["element_count"]) == (False, 2, 3)


def test_sql_needs_every_expectation_in_sql_and_duckdb_engine():
    assert validate.in_sql([{"type": "expect_column_values_to_not_be_null", "kwargs": {"column": "a"}}])
    assert not validate.in_sql([{"type": "expect_column_values_to_not_be_null", "kwargs": {"column": "a"}},
                                {"type": "expect_column_values_to_match_regex", "kwargs": {"column": "a", "regex": "x"}}])
    assert not validate.in_sql([])
