"""Serving the local model registry over HTTP: `dagsmith serve`, `promote`, `rollback`.

    app.py       ServingApp: the deployment snapshot (production + canary models), canary
                 routing, predictions, alias reloading; no HTTP in it
    jsonbody.py  request bodies parsed with bounds (depth, NaN/Infinity, huge numbers)
    asgi.py      the HTTP API as an ASGI app (Starlette): /predict, /health, /metrics
    server.py    uvicorn serving it: the listening socket, worker processes, graceful stop
    metrics.py   Prometheus counters and the latency histogram (added up over workers)
    aliases.py   promote / rollback (aliases.json, one atomic write)

server.py and asgi.py need uvicorn and starlette (`pip install 'dagsmith[serve]'`); they are
imported on first use of make_server / serve / Server, so promote and rollback work without.
See docs/serving.md.
"""

from __future__ import annotations

from .aliases import promote, rollback
from .app import RequestError, ServingApp, ServingError

__all__ = ["RequestError", "Server", "ServingApp", "ServingError", "make_server", "promote", "rollback", "serve"]

_SERVER_NAMES = ("Server", "make_server", "serve")


def __getattr__(name: str):
    if name not in _SERVER_NAMES:
        raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
    try:
        from .server import Server, make_server, serve
    except ImportError as exc:
        if exc.name in ("uvicorn", "starlette", "anyio", "h11"):
            raise ServingError(f"`dagsmith serve` needs uvicorn and starlette, which are not installed "
                               f"({exc}): pip install 'dagsmith[serve]'") from None
        raise
    return {"Server": Server, "make_server": make_server, "serve": serve}[name]
