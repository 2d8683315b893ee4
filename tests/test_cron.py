"""dagsmith.cron: the one reading of `triggers.schedule` (spec checks, Step Functions, Argo)."""

from __future__ import annotations

from hypothesis import given, settings
from hypothesis import strategies as st

from dagsmith import cron

DAY_PARTS = st.one_of(
    st.just("*"), st.integers(0, 7).map(str), st.sampled_from(cron.DAYS),
    st.tuples(st.integers(0, 7), st.integers(0, 7), st.integers(1, 7)).map(lambda t: f"{min(t[:2])}-{max(t[:2])}/{t[2]}"),
    st.tuples(st.integers(0, 6), st.integers(1, 7)).map(lambda t: f"{t[0]}/{t[1]}"),
)


@settings(max_examples=200, deadline=None)
@given(st.lists(DAY_PARTS, min_size=1, max_size=3), st.sampled_from(["*", "1", "1-15"]))
def test_sunday_as_zero_keeps_the_days_and_names_no_7(parts, day_of_month):
    expr = f"0 3 {day_of_month} * {','.join(parts)}"
    written = cron.sunday_as_zero(expr)
    assert cron.parse(written) == cron.parse(expr)  # the same days, the same day-field OR
    words = [w for part in written.split()[4].split(",") for w in part.partition("/")[0].split("-")]
    assert "7" not in words
