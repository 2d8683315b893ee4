"""Serving the local model registry over HTTP: `dagsmith serve`, `promote`, `rollback`.

    app.py      ServingApp: the deployment snapshot (production + canary models), canary
                routing, predictions, alias reloading; no HTTP in it
    server.py   the HTTP layer (http.server.ThreadingHTTPServer): /predict, /health, /metrics
    metrics.py  Prometheus counters and the latency histogram
    aliases.py  promote / rollback (aliases.json, one atomic write)

See docs/serving.md.
"""

from __future__ import annotations

from .aliases import promote, rollback
from .app import RequestError, ServingApp, ServingError
from .server import make_server, serve

__all__ = ["RequestError", "ServingApp", "ServingError", "make_server", "promote", "rollback", "serve"]
