"""Parsers for the small value languages inside a spec: durations, cron, quantities, import paths.

Each parser returns the parsed value or raises ValueError with a message fit for a user.
"""

from __future__ import annotations

import re

from .. import cron
from ..quantities import parse_quantity  # noqa: F401  (Kubernetes quantities, shared with the runtime)


class GivenText(str):
    """A parameter value given for one invocation (`--param NAME=VALUE`), put in the document as
    the parameter's default: data taken exactly as given, never spec text (no reference is
    looked for in it, `$${` stays `$${`)."""


class ValueProblem(ValueError):
    """A ValueError that may carry a "did you mean" hint for the diagnostic."""

    def __init__(self, message: str, hint: str | None = None):
        super().__init__(message)
        self.hint = hint


_DURATION_PART = re.compile(r"([0-9]+)([smhd])")
_SECONDS = {"s": 1, "m": 60, "h": 3600, "d": 86400}
# The longest duration every backend takes: Step Functions' TimeoutSeconds maximum (longer ones,
# e.g. 50000d, validated but then made Airflow's DagBag fail with an OverflowError).
MAX_DURATION_SECONDS = 99_999_999


def parse_duration(value: object) -> int:
    """'1h30m' -> 5400 seconds; a bare integer is already seconds."""
    if isinstance(value, bool):
        raise ValueError("expected a duration like 30s, 5m, 2h or 1d")
    if isinstance(value, int):
        if value < 0:
            raise ValueError("a duration cannot be negative")
        return _bounded(value, value)
    if not isinstance(value, str) or not re.fullmatch(r"([0-9]+[smhd])+", value):
        raise ValueError(f"invalid duration {_short(value)}: expected e.g. 30s, 5m, 2h, 1d or 1h30m")
    parts = _DURATION_PART.findall(value)
    units = [unit for _, unit in parts]
    if len(set(units)) != len(units):
        raise ValueError(f"invalid duration {_short(value)}: a unit appears twice")
    if any(len(number.lstrip("0")) > 12 for number, _ in parts):
        raise ValueError(f"invalid duration {_short(value)}: the number is too large")
    return _bounded(sum(int(n) * _SECONDS[u] for n, u in parts), value)


def _bounded(seconds: int, value: object) -> int:
    if seconds > MAX_DURATION_SECONDS:
        raise ValueError(f"duration {_short(value)} is too long: at most {MAX_DURATION_SECONDS:,} seconds (about 3 years)")
    return seconds


def _short(value: object) -> str:
    text = repr(value)
    return text if len(text) <= 80 else text[:77] + "..."


# --- cron ---------------------------------------------------------------------------------

CRON_PRESETS = tuple(cron.PRESETS)


def check_cron(expr: str) -> None:
    """Validate a 5-field cron expression or a preset; raise ValueError (cron.CronError, with a
    hint) naming the bad field: the one reading of a cron, dagsmith.cron, which backends use too."""
    cron.parse(expr)


# --- import paths -------------------------------------------------------------------------

_IDENT = r"[A-Za-z_][A-Za-z0-9_]*"
_DOTTED = rf"{_IDENT}(?:\.{_IDENT})*"


_CLASS_PATH = rf"{_IDENT}(?:\.{_IDENT})+"
_FUNCTION_REF = rf"{_DOTTED}:{_IDENT}(?:\.{_IDENT})*"


def check_class_path(value: str) -> None:
    """'sklearn.ensemble.GradientBoostingClassifier': a module path and a name, dotted."""
    if not re.fullmatch(_CLASS_PATH, value):
        fixed = value.strip().replace(":", ".")
        hint = f"did you mean '{fixed}'?" if re.fullmatch(_CLASS_PATH, fixed) else None
        raise ValueProblem(f"{_short(value)} is not an import path like package.module.ClassName", hint)


def check_function_ref(value: str) -> None:
    """'my_pkg.train:main': a module path, a colon, a function name."""
    if not re.fullmatch(_FUNCTION_REF, value):
        stripped = value.strip()
        fixed = ":".join(stripped.rsplit(".", 1)) if ":" not in stripped else stripped
        hint = f"did you mean '{fixed}'?" if fixed != value and re.fullmatch(_FUNCTION_REF, fixed) else None
        raise ValueProblem(f"{_short(value)} is not a function reference like package.module:function", hint)
