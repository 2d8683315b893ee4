"""JSON request bodies, parsed with bounds: no value can make the parser (or later pandas and
the model) fail with a 500.

- depth: a body nested deeper than MAX_DEPTH arrays/objects is refused (400) before
  json.loads sees it (json.loads recurses once per level; 100,000 levels are a RecursionError).
  A request is 3 levels deep ({"rows": [{column: value}]}).
- NaN, Infinity, -Infinity are not JSON (RFC 8259). json.loads would accept them; here each
  becomes a `BadNumber` marker, so the error can name the row and the column (400).
- integers: up to 18 digits become an int. Longer ones become an int if they fit 64 bits, a
  float if they fit a float64, and a `BadNumber` (422) otherwise; json.loads would build any
  int up to 4,300 digits (and then pandas overflows) or fail on longer ones.
- numbers such as 1e999 parse as infinity: `check_value` refuses them (422) where the value
  is used.
"""

from __future__ import annotations

import json
import math
import re

# The row values' checks are the scoring path's (shared with dagsmith.load_model); re-exported here.
from ..runtime.scoring import BadNumber, RequestError, check_value  # noqa: F401

MAX_DEPTH = 64
INT64_MIN, INT64_MAX = -(2**63), 2**63 - 1
# A JSON string (brackets inside one do not nest anything); unrolled so a long string is one match.
_STRING = re.compile(rb'"[^"\\]*(?:\\.[^"\\]*)*"', re.S)


def _constant(text: str) -> BadNumber:
    return BadNumber(text, 400, "is not valid JSON (JSON has no NaN or Infinity; send null for a missing value)")


def _integer(text: str):
    if len(text) <= 18:
        return int(text)
    as_float = float(text)  # never raises; a too-long integer becomes inf
    if not math.isfinite(as_float):
        return BadNumber(text, 422, "is out of range: a number must fit a 64-bit float (at most about ±1.8e308)")
    if len(text) <= 20:
        value = int(text)
        if INT64_MIN <= value <= INT64_MAX:
            return value
    return as_float


def max_depth(body: bytes) -> int:
    """How deeply arrays and objects nest in `body` (brackets inside strings do not count)."""
    import numpy as np

    stripped = _STRING.sub(b"", body)
    codes = np.frombuffer(stripped, dtype=np.uint8)
    steps = ((codes == 0x5B) | (codes == 0x7B)).astype(np.int64) - ((codes == 0x5D) | (codes == 0x7D))
    return int(np.cumsum(steps).max()) if steps.size else 0


def loads(body: bytes, max_depth_allowed: int = MAX_DEPTH):
    """bytes -> a JSON value, or RequestError(400)."""
    # Cheap first: a body with few opening brackets cannot nest deeply.
    if body.count(b"[") + body.count(b"{") > max_depth_allowed:
        depth = max_depth(body)
        if depth > max_depth_allowed:
            raise RequestError(400, f"the JSON nests arrays and objects {depth} levels deep; the limit is "
                                 f"{max_depth_allowed} (a request is 3 levels: {{\"rows\": [{{column: value}}]}})")
    try:
        text = body.decode("utf-8")
    except UnicodeDecodeError:
        raise RequestError(400, "the body is not UTF-8 text") from None
    try:
        return json.loads(text, parse_constant=_constant, parse_int=_integer)
    except RecursionError:  # not reached after the depth check; kept as a guard
        raise RequestError(400, "the JSON nests arrays and objects too deeply") from None
    except ValueError as exc:
        raise RequestError(400, f"the body is not valid JSON: {exc}") from None
