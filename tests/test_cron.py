"""dagsmith.cron: the one reading of `triggers.schedule` (spec checks, Step Functions), and the cron
Airflow and Argo are given (cron.written), which their cron readers must read as the spec means:
croniter itself (Airflow's), and the Argo interpreter's model of robfig/cron (Argo's)."""

from __future__ import annotations

import datetime as dt
from dataclasses import replace

import pytest
from croniter import CroniterBadDateError, croniter
from hypothesis import example, given, settings
from hypothesis import strategies as st

from backend_argo.interpreter import robfig_fires, robfig_schedule
from dagsmith import cron
from dagsmith.backends.airflow.backend import AirflowBackend
from dagsmith.backends.argo import workflow
from dagsmith.backends.plan import build_plan
from dagsmith_testing import REPO, compile_path


def _part(field: cron.Field):
    value = st.integers(field.low, field.high)
    named = st.sampled_from(field.names) if field.names else value
    step = st.integers(1, field.size).map(lambda s: f"/{s}")
    return st.one_of(
        st.just("*"), value.map(str), named.map(str),
        st.tuples(value, value).map(lambda t: f"{min(t)}-{max(t)}"),
        st.tuples(value, step).map(lambda t: f"{min(t[0], field.last)}{t[1]}"),  # N/S
        st.tuples(value, value, step).map(lambda t: f"{min(t[:2])}-{max(t[:2])}{t[2]}"),
        step.map(lambda s: f"*{s}"),
        value.map(lambda v: f"{v}-{v}"),  # one value as a range: croniter reads `a-a` as `*`
    )


def _field(field: cron.Field, few: tuple[str, ...] = ()):
    """A field's text; `few`: mostly these, so that a window of FIRES times spans many days."""
    parts = st.lists(_part(field), min_size=1, max_size=3).map(",".join)
    return st.one_of(st.sampled_from(few), parts) if few else parts


ANY_CRON = st.tuples(
    _field(cron.FIELDS[0], ("0", "30", "5-5", "*/20")), _field(cron.FIELDS[1], ("0", "3", "5-5", "*/8")),
    *(_field(f) for f in cron.FIELDS[2:]),
).map(" ".join)


def never_runs(expr: str) -> bool:
    try:
        cron.parse(expr)
    except cron.CronError as exc:
        assert "never runs" in str(exc), exc  # the strategy writes only crons of valid parts
        return True
    return False


CRONS = ANY_CRON.filter(lambda expr: not never_runs(expr))  # the spec refuses the others


@settings(max_examples=300, deadline=None)
@given(ANY_CRON)
@example("0 0 30/1 2 *").via("found by CI")  # random crons rarely never run: the cases that do
@example("0 0 31 2,4,6,9,11 *").via("every short month")
@example("0 0 30,31 feb *").via("a list")
@example("0 0 31 2 1").via("a weekday set too: it runs on Mondays")
@example("0 0 29 2 *").via("leap years")
def test_a_cron_is_refused_as_never_running_exactly_when_no_day_of_eight_years_matches(expr):
    """Eight years hold every weekday of every month day, and a leap February."""
    fields = [cron._field_values(text, field) for text, field in zip(expr.split(), cron.FIELDS)]
    dom, months, dow = fields[2], fields[3], {d % 7 for d in fields[4]}
    texts = expr.split()
    both = "*" not in texts[2].split(",") and "*" not in texts[4].split(",")
    day, runs = dt.date(2028, 1, 1), False
    while day < dt.date(2036, 1, 1) and not runs:
        in_dom, in_dow = day.day in dom, day.isoweekday() % 7 in dow
        runs = day.month in months and ((in_dom or in_dow) if both else (in_dom and in_dow))
        day += dt.timedelta(days=1)
    assert never_runs(expr) == (not runs)

START = dt.datetime(2027, 12, 30)  # a window over a leap February and every weekday of each month day
END = START + dt.timedelta(days=800)
FIRES = 25


def spec_fires(expr: str) -> list[dt.datetime]:
    """The first FIRES times in [START, END] the spec's cron matches, as docs/spec.md "Cron" says."""
    schedule = cron.parse(expr)
    minutes, hours, dom, months, dow = (sorted(v) for v in schedule.values)
    either = schedule.day_of_month_set and schedule.day_of_week_set
    out, day = [], START.date()
    while day <= END.date() and len(out) < FIRES:
        in_dom, in_dow = day.day in dom, day.isoweekday() % 7 in dow
        if day.month in months and ((in_dom or in_dow) if either else (in_dom and in_dow)):
            out += [t for h in hours for m in minutes if START < (t := dt.datetime(day.year, day.month, day.day, h, m))]
        day += dt.timedelta(days=1)
    return out[:FIRES]


def croniter_fires(expr: str) -> list[dt.datetime]:
    """What Airflow 3.3.2 runs for `expr`: its cron timetables ask croniter for the next time after
    the last (airflow/timetables/_cron.py:159-160, `croniter(self._expression, start_time=naive)`,
    `get_next(datetime.datetime)`; a string schedule is a CronTriggerTimetable: airflow/sdk/definitions/dag.py:153-156)."""
    reader, out = croniter(expr, start_time=START), []
    while len(out) < FIRES:
        try:
            when = reader.get_next(dt.datetime)
        except CroniterBadDateError:  # no time in the years croniter searches
            break
        if when > END:
            break
        out.append(when)
    return out


@settings(max_examples=150, deadline=None)
@given(CRONS)
def test_croniter_runs_the_airflow_cron_at_the_times_the_spec_means(expr):
    assert croniter_fires(cron.written(expr)) == spec_fires(expr)


def robfig_fires_in_window(expr: str) -> list[dt.datetime]:
    """What Argo's CronWorkflow runs for `expr` (robfig/cron, as the interpreter models it)."""
    schedule = robfig_schedule(expr)
    (minutes, hours, *_), out, day = schedule[0], [], START.date()
    while day <= END.date() and len(out) < FIRES:
        first = dt.datetime(day.year, day.month, day.day, min(hours), min(minutes))
        if robfig_fires(schedule, first):  # the day and month match: every hour and minute of it
            out += [t for h in sorted(hours) for m in sorted(minutes)
                    if START < (t := dt.datetime(day.year, day.month, day.day, h, m)) and robfig_fires(schedule, t)]
        day += dt.timedelta(days=1)
    return out[:FIRES]


@settings(max_examples=150, deadline=None)
@given(CRONS)
def test_robfig_runs_the_argo_cron_at_the_times_the_spec_means(expr):
    assert robfig_fires_in_window(cron.written(expr)) == spec_fires(expr)


@pytest.mark.parametrize(("expr", "expected", "misread_by"), [
    ("0 3 * * 2-2", "0 3 * * 2", "croniter"),  # croniter: every day (`a-a` is `*`)
    ("0 0-0 * * *", "0 0 * * *", "croniter"),  # croniter: every hour
    ("0 0 */2 * 0-6", "0 0 * * *", "croniter"),  # croniter makes `0-6` a `*` when the other field has a `*`: an AND
    ("0 0 */1 * 1", "0 0 * * *", "robfig"),  # both set, one every day: robfig/cron reads `*/1` as `*` (Mondays)
    ("0 0 1 * 0-7", "0 0 * * *", None),
    ("0 0 */2 * 1", "0 0 1/2 * 1", None),  # a set day field never starts with `*` (robfig's star bit)
    ("0 0 * * 7", "0 0 * * 0", None),  # robfig/cron takes 0-6
    ("*/15 9-17 * * mon-fri", "*/15 9-17 * * 1-5", None),
    ("@daily", "0 0 * * *", None),
])
def test_written_cron(expr, expected, misread_by):
    assert cron.written(expr) == expected
    if misread_by == "croniter":  # the reason: the reader's own reading of the spec's text differs
        assert croniter_fires(expr) != spec_fires(expr)
    if misread_by == "robfig":
        assert robfig_fires_in_window(expr) != spec_fires(expr)


def test_airflow_and_argo_write_the_cron_of_the_times_the_spec_means(in_repo):
    ir = compile_path("examples/churn/pipeline.yaml")
    plan = build_plan(replace(ir, triggers={**ir.triggers, "schedule": "0 3 * * 2-2", "on_new_data": []}))
    assert AirflowBackend.schedule(plan, [])[0] == '"0 3 * * 2"'
    plan = build_plan(replace(ir, triggers={**ir.triggers, "schedule": "0 0 */1 * 1", "on_new_data": []}))
    assert workflow.cron_workflow(plan, workflow.Settings.of({})).spec.schedules == ["0 0 * * *"]
