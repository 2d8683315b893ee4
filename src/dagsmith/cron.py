"""`triggers.schedule`: a 5-field cron (or a preset), read once for the spec checks and the backends
that must write it in another language (Step Functions' EventBridge Scheduler). Imports nothing
of dagsmith but errors, so both sides may use it.

Meaning (docs/spec.md, "Cron"): fields `minute hour day-of-month month day-of-week`; each a list
of parts, a part `*`, `N` or `A-B` with an optional step `/S`: `*/S` steps over the whole field,
`A-B/S` from A to B, `N/S` from N to the field's end (as croniter, Airflow's, and robfig/cron,
Argo's, read it). A step is 1 to the field's size. Day of week: 0-7 or sun-sat, 0 and 7 both
Sunday; `*` and `N/S` there end at 6 (Saturday). When both day fields are set (neither has a
part `*`), a day matches either one (cron's OR, as croniter reads it); otherwise both must match.
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
    return Schedule(values, "*" not in texts[DAY_OF_MONTH].split(","), "*" not in texts[DAY_OF_WEEK].split(","))


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


def sunday_as_zero(expr: str) -> str:
    """`expr` with a day of week that names 7 (Sunday) rewritten with 0 and the same meaning, for
    readers that take 0-6 only: robfig/cron v3.0.1, which Argo validates and runs CronWorkflows
    with (argo-workflows workflow/validate/validate.go:449 cron.ParseStandard; robfig/cron
    spec.go:40 `dow = bounds{0, 6, ...}`, parser.go:307 "end of range above maximum"). A field with
    a part `*` stays `*`; any other is written as its days (never `*`: it stays set, so the
    day-of-month/day-of-week OR is unchanged)."""
    texts = PRESETS.get(expr, expr).split()
    if expr.startswith("@") or len(texts) != 5:
        return expr
    words = [word for part in texts[DAY_OF_WEEK].split(",") for word in part.partition("/")[0].split("-")]
    if not any(word.isascii() and word.isdigit() and int(word) == 7 for word in words):
        return expr
    if "*" in texts[DAY_OF_WEEK].split(","):
        texts[DAY_OF_WEEK] = "*"
    else:
        days = sorted(parse(expr).values[DAY_OF_WEEK])
        texts[DAY_OF_WEEK] = ",".join(runs(days))
    return " ".join(texts)


def runs(ordered: list[int], name=str) -> list[str]:
    """Sorted values as text: consecutive ones as `a-b` (three or more), the others one by one."""
    out, start = [], 0
    for index in range(1, len(ordered) + 1):
        if index == len(ordered) or ordered[index] != ordered[index - 1] + 1:
            run = ordered[start:index]
            out += [f"{name(run[0])}-{name(run[-1])}"] if len(run) >= 3 else [name(v) for v in run]
            start = index
    return out
