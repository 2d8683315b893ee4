"""Prometheus metrics of the server, rendered as the text exposition format (version 0.0.4).

    dagsmith_requests_total{model,version,code}           counter: POST /predict requests
    dagsmith_prediction_errors_total{model,version}        counter: predictions that failed (500)
    dagsmith_request_duration_seconds{model,version}       histogram: time to answer a /predict
    dagsmith_model_version{model,alias}                    gauge: production / canary version
    dagsmith_canary_traffic_percent{model}                 gauge: the canary's share (0: none)
    dagsmith_alias_reloads_total{model}                    counter: aliases.json changes applied

`version` is the version the request was routed to (production or canary). No client library.

Where the numbers live:

- one process (`--workers 1`): a dict under a lock (`LocalValues`).
- several worker processes: each worker writes its own numbers into its own small file in a
  directory that the parent process made (`SharedValues`: the file is memory-mapped, one
  float64 per key, updated in place). /metrics is answered by whichever worker gets the
  request: it reads every worker's file and adds them up, so every scrape sees the whole
  server. A worker that died and was restarted leaves its file behind, so its counts stay in
  the sums and the counters never go down. `dagsmith_alias_reloads_total` is the largest
  count of any worker (each worker applies each change once), not the sum.
"""

from __future__ import annotations

import mmap
import os
import struct
import threading
from collections import defaultdict
from pathlib import Path

CONTENT_TYPE = "text/plain; version=0.0.4; charset=utf-8"
BUCKETS = (0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0)
SEP = "\x1f"  # between the parts of a key: kind, version, code / bucket index
SUFFIX = ".metrics"


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


class LocalValues:
    """The numbers of one process: key -> float."""

    def __init__(self):
        self._lock = threading.Lock()
        self._values: dict[str, float] = defaultdict(float)

    def add(self, updates) -> None:
        with self._lock:
            for key, amount in updates:
                self._values[key] += amount

    def own(self) -> dict[str, float]:
        with self._lock:
            return dict(self._values)

    def every_process(self) -> list[dict[str, float]]:
        return [self.own()]

    def close(self) -> None:
        pass


# A worker's file: an 8-byte header (the bytes in use, little-endian uint64), then entries
# [uint32 key length][key, UTF-8][zero padding to a multiple of 8][float64 value]. One process
# writes a file (its threads under a lock); an entry is written before the header grows over
# it, so a reader never sees half an entry.
_HEADER = struct.Struct("<Q")
_LENGTH = struct.Struct("<I")
_VALUE = struct.Struct("<d")


class SharedValues:
    """The numbers of this worker in `directory`/<name>.metrics, readable by the other workers."""

    def __init__(self, directory, name: str, size: int = 1 << 16):
        self.directory = Path(directory)
        self.path = self.directory / f"{name}{SUFFIX}"
        self._lock = threading.Lock()
        self._offsets: dict[str, int] = {}
        fd = os.open(self.path, os.O_RDWR | os.O_CREAT | os.O_TRUNC, 0o600)
        try:
            os.ftruncate(fd, size)
            self._map = mmap.mmap(fd, size)
        finally:
            os.close(fd)
        self._used = _HEADER.size
        _HEADER.pack_into(self._map, 0, self._used)

    def add(self, updates) -> None:
        with self._lock:
            for key, amount in updates:
                offset = self._offsets.get(key)
                if offset is None:
                    offset = self._append(key)
                _VALUE.pack_into(self._map, offset, _VALUE.unpack_from(self._map, offset)[0] + amount)

    def _append(self, key: str) -> int:
        data = key.encode("utf-8")
        start = self._used
        offset = start + _LENGTH.size + len(data)
        offset += -offset % 8
        end = offset + _VALUE.size
        if end > len(self._map):
            self._map.resize(max(2 * len(self._map), end))  # the file grows with it
        _LENGTH.pack_into(self._map, start, len(data))
        self._map[start + _LENGTH.size:start + _LENGTH.size + len(data)] = data
        _VALUE.pack_into(self._map, offset, 0.0)
        self._used = end
        _HEADER.pack_into(self._map, 0, end)  # published last
        self._offsets[key] = offset
        return offset

    def own(self) -> dict[str, float]:
        with self._lock:
            return {key: _VALUE.unpack_from(self._map, offset)[0] for key, offset in self._offsets.items()}

    def every_process(self) -> list[dict[str, float]]:
        return read_directory(self.directory)

    def close(self) -> None:
        with self._lock:
            self._map.close()


def read_file(path: Path) -> dict[str, float]:
    data = path.read_bytes()
    if len(data) < _HEADER.size:
        return {}
    used = min(_HEADER.unpack_from(data, 0)[0], len(data))
    values, position = {}, _HEADER.size
    while position + _LENGTH.size <= used:
        (length,) = _LENGTH.unpack_from(data, position)
        offset = position + _LENGTH.size + length
        offset += -offset % 8
        if offset + _VALUE.size > used:
            break
        key = data[position + _LENGTH.size:position + _LENGTH.size + length].decode("utf-8", "replace")
        values[key] = _VALUE.unpack_from(data, offset)[0]
        position = offset + _VALUE.size
    return values


def read_directory(directory: Path) -> list[dict[str, float]]:
    out = []
    for path in sorted(Path(directory).glob(f"*{SUFFIX}")):
        try:
            out.append(read_file(path))
        except OSError:  # a file being removed at shutdown
            continue
    return out


class Metrics:
    def __init__(self, model: str, values=None):
        self.model = model
        self.values = values if values is not None else LocalValues()

    def observe(self, version, code: int, seconds: float) -> None:
        version = str(version)
        for index, bound in enumerate(BUCKETS):
            if seconds <= bound:
                break
        else:
            index = len(BUCKETS)
        self.values.add((
            (f"requests{SEP}{version}{SEP}{int(code)}", 1.0),
            (f"bucket{SEP}{version}{SEP}{index}", 1.0),
            (f"sum{SEP}{version}", seconds),
            (f"count{SEP}{version}", 1.0),
        ))

    def prediction_error(self, version) -> None:
        self.values.add(((f"errors{SEP}{version}", 1.0),))

    def reloaded(self) -> None:
        self.values.add((("reloads", 1.0),))

    @property
    def reloads(self) -> int:
        """The changes of aliases.json this process applied."""
        return int(self.values.own().get("reloads", 0))

    def close(self) -> None:
        self.values.close()

    def render(self, production=None, canary=None, traffic_percent: float = 0.0) -> str:
        model = self.model
        requests: dict[tuple[str, int], float] = defaultdict(float)
        errors: dict[str, float] = defaultdict(float)
        buckets: dict[str, list[float]] = {}
        sums: dict[str, float] = defaultdict(float)
        counts: dict[str, float] = defaultdict(float)
        reloads = 0.0
        for values in self.values.every_process():
            for key, value in values.items():
                kind, *rest = key.split(SEP)
                if kind == "requests" and len(rest) == 2:
                    requests[(rest[0], int(rest[1]))] += value
                elif kind == "errors" and len(rest) == 1:
                    errors[rest[0]] += value
                elif kind == "bucket" and len(rest) == 2:
                    buckets.setdefault(rest[0], [0.0] * (len(BUCKETS) + 1))[int(rest[1])] += value
                elif kind == "sum" and len(rest) == 1:
                    sums[rest[0]] += value
                elif kind == "count" and len(rest) == 1:
                    counts[rest[0]] += value
                elif kind == "reloads":
                    reloads = max(reloads, value)
        out = [
            "# HELP dagsmith_requests_total Prediction requests (POST /predict), by routed version and HTTP status.",
            "# TYPE dagsmith_requests_total counter",
        ]
        for (version, code), n in sorted(requests.items(), key=lambda kv: (_vkey(kv[0][0]), kv[0][1])):
            out.append(f"dagsmith_requests_total{labels(model=model, version=version, code=code)} {number(n)}")
        out += [
            "# HELP dagsmith_prediction_errors_total Prediction requests that failed inside the model (HTTP 500).",
            "# TYPE dagsmith_prediction_errors_total counter",
        ]
        for version, n in sorted(errors.items(), key=lambda kv: _vkey(kv[0])):
            out.append(f"dagsmith_prediction_errors_total{labels(model=model, version=version)} {number(n)}")
        out += [
            "# HELP dagsmith_request_duration_seconds Time to answer a prediction request.",
            "# TYPE dagsmith_request_duration_seconds histogram",
        ]
        for version in sorted(buckets, key=_vkey):
            cumulative = 0.0
            for bound, n in zip(BUCKETS + (float("inf"),), buckets[version]):
                cumulative += n
                out.append(f"dagsmith_request_duration_seconds_bucket"
                           f"{labels(model=model, version=version, le=number(bound))} {number(cumulative)}")
            out.append(f"dagsmith_request_duration_seconds_sum{labels(model=model, version=version)} {sums[version]!r}")
            out.append(f"dagsmith_request_duration_seconds_count{labels(model=model, version=version)} "
                       f"{number(counts[version])}")
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
            f"dagsmith_alias_reloads_total{labels(model=model)} {number(reloads)}",
        ]
        return "\n".join(out) + "\n"


def _vkey(version: str):
    return (0, int(version), "") if version.isdigit() else (1, 0, version)
