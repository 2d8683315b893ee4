"""Small pieces every drawing and table uses: escaping, numbers, durations, SVG elements.

Every value from a spec or a run goes through `esc` (text and attribute values alike): run
data is treated as hostile, so nothing it holds can become markup.
"""

from __future__ import annotations

import datetime as _dt
import html
import json
import math

from .. import display


def esc(value) -> str:
    """Text or an attribute value, escaped (quotes too)."""
    return html.escape(value if isinstance(value, str) else str(value), quote=True)


def script_json(data) -> str:
    """JSON for a <script type="application/json"> element: no `<`, `>` or `&` in it, so the text
    can neither close the element nor open a comment."""
    text = json.dumps(data, sort_keys=True, separators=(",", ":"), default=str, allow_nan=False)
    return text.replace("<", "\\u003c").replace(">", "\\u003e").replace("&", "\\u0026")


def num(value, digits: int = 4) -> str:
    """A metric or parameter as a person reads it: 0.8463, 200, 1e-05, -1e-10, true, text (the
    console summary's rule: dagsmith.display)."""
    return display.number(value, digits)


def seconds_text(seconds: float | None) -> str:
    if seconds is None:
        return ""
    if seconds < 60:
        return f"{seconds:.2f}s" if seconds < 10 else f"{seconds:.1f}s"
    minutes, rest = divmod(seconds, 60)
    if minutes < 60:
        return f"{int(minutes)}m{int(rest):02d}s"
    hours, minutes = divmod(minutes, 60)
    return f"{int(hours)}h{int(minutes):02d}m"


def parse_time(text) -> float | None:
    """An ISO time from the run record as seconds since the epoch, or None."""
    if not isinstance(text, str):
        return None
    try:
        return _dt.datetime.fromisoformat(text).timestamp()
    except ValueError:
        return None


def truncate(text: str, limit: int) -> str:
    return text if len(text) <= limit else text[: limit - 1] + "\u2026"


def is_number(value) -> bool:
    return isinstance(value, (int, float)) and not isinstance(value, bool) and math.isfinite(value)


def fmt(x: float) -> str:
    """A coordinate: short and deterministic."""
    return f"{x:.1f}".rstrip("0").rstrip(".")


def text(x: float, y: float, content: str, cls: str = "", anchor: str = "start") -> str:
    klass = f' class="{cls}"' if cls else ""
    anchor_attr = f' text-anchor="{anchor}"' if anchor != "start" else ""
    return f'<text x="{fmt(x)}" y="{fmt(y)}"{klass}{anchor_attr}>{esc(content)}</text>'


def nice_ticks(low: float, high: float, count: int = 5) -> list[float]:
    """About `count` round numbers spanning [low, high]."""
    if not (math.isfinite(low) and math.isfinite(high)):
        return []
    if high <= low:
        return [low]
    raw = (high - low) / max(count, 1)
    magnitude = 10 ** math.floor(math.log10(raw))
    step = next(m * magnitude for m in (1, 2, 2.5, 5, 10) if m * magnitude >= raw)
    first = math.ceil(low / step) * step
    ticks, value = [], first
    while value <= high + step * 1e-9 and len(ticks) < 50:
        ticks.append(round(value, 12))
        value += step
    return ticks
