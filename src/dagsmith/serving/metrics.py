"""Prometheus metrics of the server, rendered as the text exposition format (version 0.0.4).

    dagsmith_requests_total{model,version,code}           counter: POST /predict requests
    dagsmith_prediction_errors_total{model,version}        counter: predictions that failed (500)
    dagsmith_request_duration_seconds{model,version}       histogram: time to answer a /predict
    dagsmith_model_version{model,alias}                    gauge: production / canary version
    dagsmith_canary_traffic_percent{model}                 gauge: the canary's share (0: none)
    dagsmith_alias_reloads_total{model}                    counter: aliases.json changes applied

`version` is the version the request was routed to (production or canary). No client library:
a few dicts under one lock.
"""

from __future__ import annotations

import threading
from collections import defaultdict

CONTENT_TYPE = "text/plain; version=0.0.4; charset=utf-8"
BUCKETS = (0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0)


def escape(value) -> str:
    """A label value, escaped as the exposition format requires."""
    return str(value).replace("\\", "\\\\").replace("\n", "\\n").replace('"', '\\"')


def labels(**pairs) -> str:
    return "{" + ",".join(f'{k}="{escape(v)}"' for k, v in pairs.items()) + "}"


def number(value: float) -> str:
    if value == float("inf"):
        return "+Inf"
    if float(value).is_integer():
        return str(int(value))
    return repr(float(value))


class Metrics:
    def __init__(self, model: str):
        self.model = model
        self._lock = threading.Lock()
        self._requests: dict[tuple[str, int], int] = defaultdict(int)  # (version, code) -> n
        self._errors: dict[str, int] = defaultdict(int)  # version -> n
        self._buckets: dict[str, list[int]] = {}  # version -> count per bucket (not cumulative)
        self._sum: dict[str, float] = defaultdict(float)
        self._count: dict[str, int] = defaultdict(int)
        self.reloads = 0

    def observe(self, version, code: int, seconds: float) -> None:
        version = str(version)
        with self._lock:
            self._requests[(version, int(code))] += 1
            counts = self._buckets.get(version)
            if counts is None:
                counts = self._buckets[version] = [0] * (len(BUCKETS) + 1)
            for i, bound in enumerate(BUCKETS):
                if seconds <= bound:
                    counts[i] += 1
                    break
            else:
                counts[-1] += 1
            self._sum[version] += seconds
            self._count[version] += 1

    def prediction_error(self, version) -> None:
        with self._lock:
            self._errors[str(version)] += 1

    def reloaded(self) -> None:
        with self._lock:
            self.reloads += 1

    def render(self, production=None, canary=None, traffic_percent: float = 0.0) -> str:
        model = self.model
        with self._lock:
            requests = dict(self._requests)
            errors = dict(self._errors)
            buckets = {v: list(c) for v, c in self._buckets.items()}
            sums, counts, reloads = dict(self._sum), dict(self._count), self.reloads
        out = [
            "# HELP dagsmith_requests_total Prediction requests (POST /predict), by routed version and HTTP status.",
            "# TYPE dagsmith_requests_total counter",
        ]
        for (version, code), n in sorted(requests.items(), key=lambda kv: (_vkey(kv[0][0]), kv[0][1])):
            out.append(f"dagsmith_requests_total{labels(model=model, version=version, code=code)} {n}")
        out += [
            "# HELP dagsmith_prediction_errors_total Prediction requests that failed inside the model (HTTP 500).",
            "# TYPE dagsmith_prediction_errors_total counter",
        ]
        for version, n in sorted(errors.items(), key=lambda kv: _vkey(kv[0])):
            out.append(f"dagsmith_prediction_errors_total{labels(model=model, version=version)} {n}")
        out += [
            "# HELP dagsmith_request_duration_seconds Time to answer a prediction request.",
            "# TYPE dagsmith_request_duration_seconds histogram",
        ]
        for version in sorted(buckets, key=_vkey):
            cumulative = 0
            for bound, n in zip(BUCKETS + (float("inf"),), buckets[version]):
                cumulative += n
                out.append(f"dagsmith_request_duration_seconds_bucket"
                           f"{labels(model=model, version=version, le=number(bound))} {cumulative}")
            out.append(f"dagsmith_request_duration_seconds_sum{labels(model=model, version=version)} {sums[version]!r}")
            out.append(f"dagsmith_request_duration_seconds_count{labels(model=model, version=version)} {counts[version]}")
        out += [
            "# HELP dagsmith_model_version The version each alias points to (-1: none).",
            "# TYPE dagsmith_model_version gauge",
            f"dagsmith_model_version{labels(model=model, alias='production')} {production if production is not None else -1}",
            f"dagsmith_model_version{labels(model=model, alias='canary')} {canary if canary is not None else -1}",
            "# HELP dagsmith_canary_traffic_percent Share of requests routed to the canary (0: no canary).",
            "# TYPE dagsmith_canary_traffic_percent gauge",
            f"dagsmith_canary_traffic_percent{labels(model=model)} {number(traffic_percent)}",
            "# HELP dagsmith_alias_reloads_total Changes of aliases.json applied without a restart.",
            "# TYPE dagsmith_alias_reloads_total counter",
            f"dagsmith_alias_reloads_total{labels(model=model)} {reloads}",
        ]
        return "\n".join(out) + "\n"


def _vkey(version: str):
    return (0, int(version), "") if version.isdigit() else (1, 0, version)
