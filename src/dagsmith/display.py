"""Values as a person reads them, one way for the console summary and the HTML report: numbers
with an honest sign and magnitude, and text that cannot drive a terminal.

Imports nothing of dagsmith: the runner (console) and the report (HTML) both use it.
"""

from __future__ import annotations

import json
import math
import re
import unicodedata

SAMPLE_VALUES = 5  # failing values shown per expectation on the console
SAMPLE_LENGTH = 40  # characters of each shown value


def number(value, digits: int = 4, fixed: bool = False) -> str:
    """A metric, threshold or delta: 0.8463 (`fixed`: 0.8460 for aligned columns), 200, true,
    text; a float too small or too large for `digits` decimals in exponent form (-1e-10, 2.5e+06),
    so a non-zero value never reads as 0.0000 and its sign stays with it."""
    if value is None:
        return ""
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, int):
        return str(value)
    if isinstance(value, float):
        if math.isnan(value) or math.isinf(value):
            return str(value)
        if value != 0 and (abs(value) < 10 ** -(digits - 1) or abs(value) >= 1e6):
            return f"{value:.3g}"
        text = f"{value:.{digits}f}"
        if text.lstrip("-").strip("0.") == "":  # -0.0 (or a value rounding to 0): no sign on a zero
            text = text.lstrip("-")
        return text if fixed or "." not in text else text.rstrip("0").rstrip(".")
    if isinstance(value, (list, dict)):
        return json.dumps(value, sort_keys=True, default=str)
    return str(value)


def numbers(*values, digits: int = 4, fixed: bool = False) -> list[str]:
    """Several numbers compared with each other (a gate's observed value and threshold): when two
    different values would print the same, all are printed in full (repr), so a failing check
    never shows `0.9000 >= 0.9000`."""
    texts = [number(v, digits, fixed) for v in values]
    shown = {v: float(t) for v, t in zip(values, texts)
             if isinstance(v, (int, float)) and not isinstance(v, bool) and math.isfinite(v)}
    if len(set(shown.values())) < len(shown):  # 1 and 0.99999999 would read 1 and 1.0000
        return [repr(v) if isinstance(v, float) else text for v, text in zip(values, texts)]
    return texts


def signed(value, digits: int = 4, fixed: bool = False) -> str:
    """A delta with its sign attached: +0.01, -1e-10, 0."""
    text = number(value, digits, fixed)
    if isinstance(value, (int, float)) and not isinstance(value, bool) and value > 0 and not text.startswith("+"):
        return "+" + text
    return text


def written_as(gate: dict, key: str) -> str | None:
    """What a gate check's value or delta was written as, when it came from a parameter
    (`${params.min_auc}`, the check's `params`), terminal-safe; else None."""
    ref = gate["params"].get(key) if isinstance(gate.get("params"), dict) else None
    # only a reference as the spec allows it (a record read from a store is not trusted)
    return ref if isinstance(ref, str) and re.fullmatch(r"\$\{params\.[A-Za-z_][A-Za-z0-9_]{0,100}\}", ref) else None


def terminal_text(value, limit: int | None = None) -> str:
    """`value` as one line of text safe for a terminal: control characters (escape sequences,
    carriage returns, newlines, bidi overrides...) written as \\x1b, \\n, \\u202e; at most `limit`
    characters, with `...` when cut."""
    text = value if isinstance(value, str) else json.dumps(value, default=str, ensure_ascii=False) if isinstance(value, (list, dict)) else str(value)
    out = []
    for char in text:
        category = unicodedata.category(char)
        if category[0] == "C" or category in ("Zl", "Zp"):
            out.append(char.encode("unicode_escape").decode("ascii"))
        else:
            out.append(char)
    text = "".join(out)
    if limit is not None and len(text) > limit:
        text = text[: max(limit - 3, 0)] + "..."
    return text


NOTE_CHARS = 600  # an error's first line past this is cut (the whole text is in run.json)


def error_note(error: str) -> str:
    """A failed step's note (the run table, the report): the error's whole first line and the
    reader's `hint:` line when there is one; the rest of the text is in run.json."""
    lines = error.strip().splitlines() or [""]
    first = lines[0] if len(lines[0]) <= NOTE_CHARS else lines[0][:NOTE_CHARS] + "..."
    hints = [line for line in lines[1:] if line.startswith("hint: ")][:1]
    return "\n".join([first] + hints)


def sample(values, count: int = SAMPLE_VALUES, length: int = SAMPLE_LENGTH) -> str:
    """At most `count` values, each at most `length` characters, terminal-safe, quoted when text:
    `'x', None, 3 and 12 more`."""
    values = list(values)
    shown = []
    for value in values[:count]:
        shown.append(terminal_text(repr(value) if isinstance(value, str) else value, length) if value is not None else "None")
    text = ", ".join(shown)
    if len(values) > count:
        text += f" and {len(values) - count} more"
    return text
