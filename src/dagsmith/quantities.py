"""Kubernetes quantities ('500m', '2Gi'): the spec checks them (spec/values.py) and the runtime
sizes DuckDB's memory_limit from a step's `resources.memory` (runtime/duckdb_limits.py)."""

from __future__ import annotations

import math
import re
from decimal import Decimal


def _short(value: object) -> str:
    text = repr(value)
    return text if len(text) <= 80 else text[:77] + "..."


_QUANTITY = re.compile(r"([0-9]+(?:\.[0-9]*)?|\.[0-9]+)(Ki|Mi|Gi|Ti|Pi|Ei|m|k|M|G|T|P|E|[eE][+-]?[0-9]+)?")  # fullmatch
_SUFFIX = {
    None: 1, "m": Decimal("0.001"), "k": 10**3, "M": 10**6, "G": 10**9, "T": 10**12, "P": 10**15, "E": 10**18,
    "Ki": 2**10, "Mi": 2**20, "Gi": 2**30, "Ti": 2**40, "Pi": 2**50, "Ei": 2**60,
}


def parse_quantity(value: object, what: str) -> Decimal:
    """'500m' -> 0.5, '2Gi' -> 2147483648 (Kubernetes quantity syntax). Must be > 0."""
    if isinstance(value, bool):
        raise ValueError(f"invalid {what} quantity {value!r}")
    try:
        if isinstance(value, (int, float)):
            if isinstance(value, float) and not math.isfinite(value):
                raise ValueError(f"invalid {what} quantity {value!r}")
            number = Decimal(str(value))
        else:
            match = _QUANTITY.fullmatch(str(value))
            if not match:
                raise ValueError(f"invalid {what} quantity {_short(value)}: expected e.g. 500m, 2, 512Mi, 2Gi")
            number = Decimal(match.group(1))
            suffix = match.group(2)
            if suffix and re.fullmatch(r"[eE][+-]?[0-9]+", suffix):
                exponent = int(suffix[1:]) if len(suffix) < 8 else 10**9
                if abs(exponent) > 60:
                    raise ValueError(f"invalid {what} quantity {_short(value)}: the exponent is out of range")
                number = number.scaleb(exponent)
            else:
                number *= _SUFFIX[suffix]
    except (ArithmeticError, KeyError) as exc:  # decimal's InvalidOperation, Overflow...
        raise ValueError(f"invalid {what} quantity {_short(value)}") from exc
    if number <= 0:
        raise ValueError(f"{what} must be greater than 0, got {_short(value)}")
    if number.adjusted() > 60:
        raise ValueError(f"{what} quantity {_short(value)} is too large")
    return number
