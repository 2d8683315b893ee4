"""`triggers.schedule`: a 5-field cron (or a preset), read once for the spec checks and the backends
that write it (`written`: Airflow, Argo; Step Functions' EventBridge Scheduler). Imports nothing
of dagsmith but errors, so both sides may use it.

Meaning (docs/spec.md, "Cron"): fields `minute hour day-of-month month day-of-week`; each a list
of parts, a part `*`, `N` or `A-B` with an optional step `/S`: `*/S` steps over the whole field,
`A-B/S` from A to B, `N/S` from N to the field's end (as croniter, Airflow's, and robfig/cron,
Argo's, read it). A step is 1 to the field's size. Day of week: 0-7 or sun-sat, 0 and 7 both
Sunday; `*` and `N/S` there end at 6 (Saturday). When both day fields are set (neither has a
part `*`; `*/1` and `1-31` are set), a day matches either one (cron's OR); otherwise both must
match. The backends write this meaning, never the text as given (`written`, EventBridge's).
"""

from __future__ import annotations

from dataclasses import dataclass

from .errors import did_you_mean

PRESETS = {"@hourly": "0 * * * *", "@daily": "0 0 * * *", "@weekly": "0 0 * * 0", "@monthly": "0 0 1 * *",
           "@yearly": "0 0 1 1 *", "@annually": "0 0 1 1 *", "@midnight": "0 0 * * *"}
MONTHS = "jan feb mar apr may jun jul aug sep oct nov dec".split()
DAYS = "sun mon tue wed thu fri sat".split()


@dataclass(frozen=True)
class Field:
    name: str
    low: int
    high: int  # the highest value written (day of week: 7, Sunday again)
    last: int  # where `*` and `N/S` end (day of week: 6)
    names: tuple[str, ...] = ()
    offset: int = 0  # a name's value: its index + offset

    @property
    def size(self) -> int:
        """How many different values the field has (the largest step)."""
        return self.last - self.low + 1


FIELDS = (
    Field("minute", 0, 59, 59),
    Field("hour", 0, 23, 23),
    Field("day of month", 1, 31, 31),
    Field("month", 1, 12, 12, tuple(MONTHS), 1),
    Field("day of week", 0, 7, 6, tuple(DAYS), 0),
)
MINUTE, HOUR, DAY_OF_MONTH, MONTH, DAY_OF_WEEK = range(5)


class CronError(ValueError):
    """A cron the spec does not take; `hint` a "did you mean" for the diagnostic."""

    def __init__(self, message: str, hint: str | None = None):
        super().__init__(message)
        self.hint = hint


@dataclass(frozen=True)
class Schedule:
    """A cron as the values each field matches (day of week 0-6, Sunday 0)."""

    values: tuple[frozenset, ...]  # per field, in FIELDS order
    day_of_month_set: bool  # no part of the field is `*`
    day_of_week_set: bool


def parse(expr: str) -> Schedule:
    """The schedule `expr` names, or CronError naming the field and part that is wrong."""
    if expr != expr.strip(" ") or any(char.isspace() and char != " " for char in expr):
        raise CronError(f"cron expression {expr!r} must be one line: fields separated by spaces, nothing before or after")
    if expr.startswith("@"):
        if expr not in PRESETS:
            raise CronError(f"unknown cron preset {expr!r}: use one of {', '.join(PRESETS)}")
        expr = PRESETS[expr]
    texts = expr.split()
    if len(texts) != 5:
        raise CronError(f"cron expression {expr!r} has {len(texts)} fields, expected 5 (minute hour day month weekday)")
    values = tuple(frozenset(_field_values(text, field)) for text, field in zip(texts, FIELDS))
    schedule = Schedule(values, "*" not in texts[DAY_OF_MONTH].split(","), "*" not in texts[DAY_OF_WEEK].split(","))
    _check_it_runs(expr, schedule)
    return schedule


MONTH_DAYS = (31, 29, 31, 30, 31, 30, 31, 31, 30, 31, 30, 31)  # February: 29 in a leap year


def _check_it_runs(expr: str, schedule: Schedule) -> None:
    """A day of the month that none of its months has (`0 0 31 2 *`, `0 0 30,31 2,4 *`) never
    runs: every backend would take it and never start the pipeline. Only when the day of month
    alone decides (with a day of week set too, a matching weekday runs it: cron's OR)."""
    if not schedule.day_of_month_set or schedule.day_of_week_set:
        return
    first_day = min(schedule.values[DAY_OF_MONTH])
    if not any(first_day <= MONTH_DAYS[month - 1] for month in schedule.values[MONTH]):
        months = ", ".join(MONTHS[m - 1] for m in sorted(schedule.values[MONTH]))
        raise CronError(f"cron expression {_short(expr)} never runs: none of its months ({months}) has a day {first_day}")


def _field_values(text: str, field: Field) -> set[int]:
    out: set[int] = set()
    for part in text.split(","):
        out |= _part_values(part, field)
    if field is FIELDS[DAY_OF_WEEK]:
        out = {day % 7 for day in out}
    return out


def _part_values(part: str, field: Field) -> set[int]:
    body, slash, step_text = part.partition("/")
    step = 1
    if slash:
        if not (step_text.isascii() and step_text.isdigit()) or not step_text.strip("0"):
            raise CronError(f"cron {field.name}: step {step_text!r} must be a positive number")
        if len(step_text.lstrip("0")) > 6 or int(step_text) > field.size:
            raise CronError(f"cron {field.name}: step {_short(step_text)} is larger than the field: at most {field.size} "
                            f"(the {field.name} has {field.size} values)")
        step = int(step_text)
    if body == "*":
        return set(range(field.low, field.last + 1, step))
    start, dash, end = body.partition("-")
    first = _value(start, field)
    if dash:
        last = _value(end, field)
        if last < first:
            raise CronError(f"cron {field.name}: range {body!r} runs backwards")
    elif slash:
        if first > field.last:  # `7/2`: Sunday again, past the week's end
            raise CronError(f"cron {field.name}: {part!r} starts after the field's last value ({field.last}); "
                            f"write {field.low}/{step} or a range")
        last = field.last  # `N/S`: from N to the field's end
    else:
        last = first
    return set(range(first, last + 1, step))


def _value(text: str, field: Field) -> int:
    if field.names and text.lower() in field.names:
        return field.names.index(text.lower()) + field.offset
    if not (text.isascii() and text.isdigit()):  # str.isdigit() is also true for '٣' and '１'
        hint = None
        if field.names and text.isalpha() and len(text) >= 3:  # 'sept' -> 'sep', 'thurs' -> 'thu', 'jnu' -> 'jun'
            short = text.lower()[:3]
            hint = f"did you mean '{short}'?" if short in field.names else did_you_mean(text.lower(), list(field.names))
        names = f" or a name ({field.names[0]}..{field.names[-1]})" if field.names else ""
        raise CronError(f"cron {field.name}: {_short(text)} is not a number{names}", hint)
    if len(text.lstrip("0")) > 6:
        raise CronError(f"cron {field.name}: {_short(text)} is out of range {field.low}-{field.high}")
    if not field.low <= int(text) <= field.high:
        raise CronError(f"cron {field.name}: {int(text)} is out of range {field.low}-{field.high}")
    return int(text)


def _short(text: str) -> str:
    return repr(text) if len(text) <= 24 else repr(text[:21] + "...")


def written(expr: str) -> str:
    """`expr` written from the times it matches, in forms that Airflow's and Argo's cron readers
    read as the spec does, where each reads some spellings its own way:

    - croniter 7.0.0 (Airflow 3.3.2's cron timetables, a string schedule being one: airflow/sdk/
      definitions/dag.py:153-156; their times: airflow/timetables/_cron.py:159, 171
      `croniter(self._expression, start_time=naive)`) reads a
      one-value range `a-a` as the whole field (croniter/croniter.py:1180-1181), so `0 3 * * 2-2`
      would run daily; and it writes a full day field as `*` depending on the other field's text
      (croniter.py:1275-1282), which turns cron's OR into an AND;
    - robfig/cron v3.0.1 (Argo's CronWorkflows) reads a day field starting with `*` whose step is
      1 (`*/1`) as `*` (parser.go:262-265, 297-299): an AND where the spec means the OR
      (spec.go:184-187 dayMatches); and it takes day of week 0-6 only (spec.go:40, parser.go:307).

    So each field is `*` when it matches every value, else its values: `*/S` or `N/S` when they
    run from N (the field's first for `*`) to its end by S > 1, else a list of values and `a-b`
    runs of three or more (never `a-a`, never 7). The days follow the one rule of docs/spec.md:
    when both day fields are set, a day matching either runs: written as both lists, or as `* *`
    when one of them matches every day; otherwise a day matches both: the field not set is `*`.
    A day field is never written `*`-first unless it matches every day."""
    schedule = parse(expr)
    texts = [_written_field(values, field, day=index in (DAY_OF_MONTH, DAY_OF_WEEK))
             for index, (values, field) in enumerate(zip(schedule.values, FIELDS))]
    if schedule.day_of_month_set and schedule.day_of_week_set and "*" in (texts[DAY_OF_MONTH], texts[DAY_OF_WEEK]):
        texts[DAY_OF_MONTH] = texts[DAY_OF_WEEK] = "*"  # either matches every day: every day does
    return " ".join(texts)


def _written_field(values: frozenset, field: Field, day: bool) -> str:
    if len(values) == field.size:
        return "*"
    ordered = sorted(values)
    if len(ordered) >= 3:
        first, step = ordered[0], ordered[1] - ordered[0]
        if step > 1 and ordered == list(range(first, field.last + 1, step)):
            # a day field never starts with `*` unless it is `*`: robfig/cron's star bit
            return f"*/{step}" if first == field.low and not day else f"{first}/{step}"
    return ",".join(runs(ordered))


def runs(ordered: list[int], name=str) -> list[str]:
    """Sorted values as text: consecutive ones as `a-b` (three or more), the others one by one."""
    out, start = [], 0
    for index in range(1, len(ordered) + 1):
        if index == len(ordered) or ordered[index] != ordered[index - 1] + 1:
            run = ordered[start:index]
            out += [f"{name(run[0])}-{name(run[-1])}"] if len(run) >= 3 else [name(v) for v in run]
            start = index
    return out
