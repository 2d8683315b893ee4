"""`triggers.schedule` on Step Functions: the EventBridge Scheduler expression fires at exactly the
times the spec's cron does.

The cron's times are read as docs/spec.md says (a day matching either day field when both are
set, i.e. neither has a part `*`, as croniter reads it); the EventBridge expression is read by a
matcher written from the cron reference
(https://docs.aws.amazon.com/eventbridge/latest/userguide/eb-cron-expressions.html): fields
`min hour dom month dow year`; `,` lists, `a-b` ranges, `*` all, `a/n` from a every n to the
field's end, `?` any (in exactly one day field), day of week 1-7 or SUN-SAT with 1 = SUN, and no
`/` in the day of week.
"""

from __future__ import annotations

import re

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from dagsmith.backends.stepfunctions.cfn import cron_expression

EB_FIELDS = {  # (low, high, names, wildcards) per the reference's table
    "minute": (0, 59, None, ",-*/"), "hour": (0, 23, None, ",-*/"), "dom": (1, 31, None, ",-*?/"),
    "month": (1, 12, "JAN FEB MAR APR MAY JUN JUL AUG SEP OCT NOV DEC".split(), ",-*/"),
    "dow": (1, 7, "SUN MON TUE WED THU FRI SAT".split(), ",-*?"),
}


def eb_values(text: str, field: str) -> set[int] | None:
    """The values an EventBridge field matches (None: `?`); AssertionError for what it does not take."""
    low, high, names, wildcards = EB_FIELDS[field]
    if text == "?":
        assert "?" in wildcards
        return None
    assert set(re.sub(r"[A-Z0-9]", "", text)) <= set(wildcards), f"{field} takes no {text!r}"

    def value(word: str) -> int:
        number = names.index(word) + low if names and word in names else int(word)
        assert low <= number <= high, f"{field}: {word} is out of {low}-{high}"
        return number

    out: set[int] = set()
    for part in text.split(","):
        if part == "*":
            out |= set(range(low, high + 1))
        elif "/" in part:
            start, step = part.split("/")
            assert start != "*" and int(step) >= 1  # only the documented a/n
            out |= set(range(value(start), high + 1, int(step)))
        elif "-" in part:
            first, last = (value(w) for w in part.split("-"))
            assert first <= last, f"{field}: range {part} runs backwards"
            out |= set(range(first, last + 1))
        else:
            out.add(value(part))
    return out


def eb_days(expression: str):
    """(minutes, hours, months, predicate on (day of month, cron weekday 0 = Sunday))."""
    match = re.fullmatch(r"cron\((\S+) (\S+) (\S+) (\S+) (\S+) \*\)", expression)
    assert match, expression
    minute, hour, dom, month, dow = (eb_values(text, field) for text, field in zip(match.groups(), EB_FIELDS))
    assert (dom is None) != (dow is None), f"{expression}: exactly one day field is '?'"
    return minute, hour, month, lambda day, weekday: (dom is None or day in dom) and (dow is None or weekday + 1 in dow)


def cron_days(expr: str):
    """The same for the spec's cron, read as docs/spec.md says ("Cron"; croniter, Airflow's, agrees
    but for a one-value range `a-a`, which croniter 7.0.0 reads as `*`)."""
    full = [range(60), range(24), range(1, 32), range(1, 13), range(7)]
    names = [[], [], [], "jan feb mar apr may jun jul aug sep oct nov dec".split(), "sun mon tue wed thu fri sat".split()]
    values = []
    for index, text in enumerate(expr.split()):
        low, last = full[index][0], full[index][-1]

        def number(word: str) -> int:
            return names[index].index(word) + low if word in names[index] else int(word)

        out: set[int] = set()
        for part in text.split(","):
            body, _, step = part.partition("/")
            step = int(step or 1)
            if body == "*":
                first, end = low, last
            elif "-" in body:
                first, end = (number(w) for w in body.split("-"))
            else:
                first = number(body)
                end = last if "/" in part else first
            out |= {v % 7 if index == 4 else v for v in range(first, end + 1, step)}
        values.append(out)
    minute, hour, dom, month, dow = values
    fields = expr.split()
    either = "*" not in fields[2].split(",") and "*" not in fields[4].split(",")
    return minute, hour, month, lambda day, weekday: (day in dom or weekday in dow) if either else (day in dom and weekday in dow)


def same_times(expr: str, expression: str) -> None:
    ours, theirs = eb_days(expression), cron_days(expr)
    assert ours[:3] == theirs[:3], (expr, expression)
    assert all(ours[3](d, w) == theirs[3](d, w) for d in range(1, 32) for w in range(7)), (expr, expression)


FIELD_RANGES = [(0, 59, None), (0, 23, None), (1, 31, None), (1, 12, "jan feb mar apr may jun jul aug sep oct nov dec".split()),
                (0, 7, "sun mon tue wed thu fri sat".split())]


@st.composite
def cron_parts(draw, index: int) -> str:
    low, high, names = FIELD_RANGES[index]
    last = 6 if index == 4 else high
    size = last - low + 1

    def word(number: int) -> str:
        if names and number - low < len(names) and draw(st.booleans()):
            return names[number - low]
        return str(number)

    kind = draw(st.sampled_from(["star", "star-step", "value", "range", "range-step", "from-step"]))
    step = draw(st.integers(1, size))
    if kind == "star":
        return "*"
    if kind == "star-step":
        return f"*/{step}"
    a = draw(st.integers(low, high))
    if kind == "value":
        return word(a)
    if kind == "from-step":
        return f"{word(min(a, last))}/{step}"
    b = draw(st.integers(a, high))
    return f"{word(a)}-{word(b)}" + (f"/{step}" if kind == "range-step" else "")


@st.composite
def crons(draw) -> str:
    fields = []
    for index in range(5):
        if index in (2, 4) and draw(st.booleans()):
            fields.append("*")  # the day fields are usually `*`
            continue
        fields.append(",".join(draw(st.lists(cron_parts(index), min_size=1, max_size=3))))
    return " ".join(fields)


@settings(max_examples=200, deadline=None)
@given(crons())
def test_eventbridge_fires_when_the_cron_does(expr):
    try:
        expression = cron_expression(expr)
    except ValueError as exc:
        fields = expr.split()
        if "never runs" in str(exc):
            return  # the spec refuses it for every backend (tests/test_cron.py: exactly the crons that never run)
        # refused only when both day fields are set and neither matches every day (EventBridge takes one)
        assert "both the day of the month and of the week" in str(exc) or "characters" in str(exc), exc
        if "both" in str(exc):
            assert "*" not in fields[2].split(",") + fields[4].split(",")
            _, _, _, days = cron_days(expr)
            assert not all(days(d, w) for d in range(1, 32) for w in range(7))
        return
    same_times(expr, expression)


@pytest.mark.parametrize(("cron", "expected"), [
    ("0 3 * * */2", "cron(0 3 ? * SUN,TUE,THU,SAT *)"),  # issue 22: was */3
    ("0 3 * * 1-7", "cron(0 3 * * ? *)"),  # issue 22: was 2-1
    ("0 3 * * 5-7", "cron(0 3 ? * SUN,FRI,SAT *)"),  # issue 22: was 6-1
    ("*/15 2 1 * *", "cron(0/15 2 1 * ? *)"),
    ("0 3 1 * 0-6", "cron(0 3 * * ? *)"),  # either day field: every day
])
def test_the_examples_of_issue_22(cron, expected):
    assert cron_expression(cron) == expected
    same_times(cron, expected)
