"""The HTTP layer: a standard-library ThreadingHTTPServer in front of a ServingApp.

    POST /predict   {"rows": [{column: value, ...}, ...]} or a bare list of rows
                    -> 200 {"model", "version", "predictions": [...], "probabilities"?: [...]}
    GET  /health    -> 200 {"status": "ok", "model", "production", "canary", ...}
    GET  /metrics   -> Prometheus text (text/plain; version=0.0.4)

Every error is JSON {"error": reason}: 400 bad JSON / wrong shape, 404 unknown path, 405 wrong
method, 411 no Content-Length, 413 body too large, 422 missing feature or partition column,
unknown partition, a value of the wrong type; 500 the model failed (counted). A handler never
lets an exception out (no traceback reaches the client or the console).
HTTP/1.1 keep-alive is supported (Content-Length on every answer).
"""

from __future__ import annotations

import json
import signal
import socket
import sys
import threading
import time
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from urllib.parse import urlsplit

from .. import __version__
from ..runtime.store import Store
from .app import PredictionFailed, RequestError, ServingApp
from .metrics import CONTENT_TYPE as METRICS_CONTENT_TYPE

MAX_BODY_BYTES = 16 * 1024 * 1024
ROUTES = {"/predict": ("POST",), "/health": ("GET", "HEAD"), "/metrics": ("GET", "HEAD")}


class DagsmithHTTPServer(ThreadingHTTPServer):
    daemon_threads = True
    allow_reuse_address = True

    def __init__(self, address, app: ServingApp, *, max_body: int = MAX_BODY_BYTES, access_log: bool = False):
        self.app = app
        self.max_body = max_body
        self.access_log = access_log
        super().__init__(address, Handler)

    @property
    def url(self) -> str:
        host, port = self.server_address[:2]
        if ":" in host:
            host = f"[{host}]"
        return f"http://{host}:{port}"

    def handle_error(self, request, client_address):  # a broken connection: one line, no traceback
        exc = sys.exc_info()[1]
        if self.access_log and exc is not None:
            print(f"connection from {client_address[0]}: {type(exc).__name__}: {exc}", file=sys.stderr)


class Handler(BaseHTTPRequestHandler):
    protocol_version = "HTTP/1.1"
    server_version = f"dagsmith-serve/{__version__}"
    sys_version = ""
    server: DagsmithHTTPServer

    def version_string(self) -> str:
        """The Server header: http.server's is `server_version + " " + sys_version`, which
        leaves a trailing space when sys_version is empty (it is: no Python version is told)."""
        return self.server_version

    def setup(self):
        super().setup()
        try:
            self.connection.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
        except OSError:
            pass

    # --- answers ------------------------------------------------------------------------------

    def _send(self, code: int, body: bytes, content_type: str, headers: dict | None = None) -> None:
        self.send_response(code)
        self.send_header("Content-Type", content_type)
        self.send_header("Content-Length", str(len(body)))
        for name, value in (headers or {}).items():
            self.send_header(name, value)
        if self.close_connection:
            self.send_header("Connection", "close")
        # headers and body in ONE write: two small writes would meet Nagle + delayed ACK (40 ms)
        self._headers_buffer.append(b"\r\n")
        if self.command != "HEAD":
            self._headers_buffer.append(body)
        self.flush_headers()

    def _json(self, code: int, payload, headers: dict | None = None) -> None:
        body = (json.dumps(payload, allow_nan=False, default=str) + "\n").encode("utf-8")
        self._send(code, body, "application/json", headers)

    def _error(self, code: int, reason: str, headers: dict | None = None) -> None:
        self._json(code, {"error": reason}, headers)

    def send_error(self, code, message=None, explain=None):
        """What http.server sends on a malformed request line or headers: JSON as well."""
        self.close_connection = True
        try:
            self._error(code, message or explain or self.responses.get(code, ("error",))[0])
        except OSError:
            pass

    def log_message(self, format, *args):
        if self.server.access_log:
            super().log_message(format, *args)

    # --- dispatch -----------------------------------------------------------------------------

    def _route(self) -> None:
        path = urlsplit(self.path).path
        if len(path) > 1:
            path = path.rstrip("/")
        try:
            allowed = ROUTES.get(path)
            if allowed is None:
                self._drain()
                self._error(404, f"no such path {path!r}: POST /predict, GET /health, GET /metrics")
            elif self.command not in allowed:
                self._drain()
                self._error(405, f"{self.command} is not allowed on {path}: use {' or '.join(a for a in allowed if a != 'HEAD')}",
                            {"Allow": ", ".join(allowed)})
            elif path == "/predict":
                self._predict()
            elif path == "/health":
                self._json(200, self.server.app.health())
            else:
                self._send(200, self.server.app.render_metrics().encode("utf-8"), METRICS_CONTENT_TYPE)
        except (BrokenPipeError, ConnectionResetError):
            self.close_connection = True
        except Exception as exc:  # a bug in the server: answer 500, never a traceback
            self.close_connection = True
            try:
                self._error(500, f"internal error: {type(exc).__name__}: {exc}")
            except OSError:
                pass

    do_GET = do_POST = do_PUT = do_DELETE = do_PATCH = do_OPTIONS = do_HEAD = _route

    def __getattr__(self, name):  # any other method (BREW, TRACE, ...): 405 / 404, not http.server's 501
        if name.startswith("do_"):
            return self._route
        raise AttributeError(name)

    def _drain(self) -> None:
        """Read (and drop) a body sent to a path that does not take one, to keep the connection usable."""
        try:
            length = int(self.headers.get("Content-Length") or 0)
        except ValueError:
            length = -1
        if length < 0 or length > 4 * self.server.max_body:
            self.close_connection = True
        elif length:
            self._discard(length)

    def _discard(self, length: int) -> None:
        while length > 0:
            chunk = self.rfile.read(min(length, 1 << 16))
            if not chunk:
                self.close_connection = True
                return
            length -= len(chunk)

    def _body(self) -> bytes:
        if self.headers.get("Transfer-Encoding", "").lower() not in ("", "identity"):
            self.close_connection = True
            raise RequestError(411, "send the body with a Content-Length (chunked transfer encoding is not supported)")
        text = self.headers.get("Content-Length")
        if text is None:
            self.close_connection = True
            raise RequestError(411, "a Content-Length header is required")
        try:
            length = int(text)
            if length < 0:
                raise ValueError
        except ValueError:
            self.close_connection = True
            raise RequestError(400, f"bad Content-Length {text!r}") from None
        if length > self.server.max_body:
            if length <= 4 * self.server.max_body:  # read and drop it: the connection stays usable
                self._discard(length)
            else:  # too much to even read: answer at once and close the connection
                self.close_connection = True
            raise RequestError(413, f"the body is {length} bytes; the limit is {self.server.max_body}")
        body = self.rfile.read(length)
        if len(body) < length:
            self.close_connection = True
            raise RequestError(400, f"the body ended after {len(body)} of {length} bytes")
        return body

    def _predict(self) -> None:
        app = self.server.app
        started = time.perf_counter()
        deployment = app.deployment  # one snapshot for the whole request
        version = app.route(deployment, self.headers.get("X-Request-Id"))
        headers = {"X-Dagsmith-Version": str(version.version)}
        try:
            rows = app.parse_rows(self._body())
            code, payload = 200, app.predict(version, rows)
        except RequestError as exc:
            code, payload = exc.status, {"error": exc.reason}
        except PredictionFailed as exc:
            app.metrics.prediction_error(version.version)
            code, payload = 500, {"error": str(exc), "version": version.version}
        except Exception as exc:
            app.metrics.prediction_error(version.version)
            code, payload = 500, {"error": f"internal error: {type(exc).__name__}: {exc}", "version": version.version}
        try:
            body = (json.dumps(payload, allow_nan=False, default=str) + "\n").encode("utf-8")
        except ValueError as exc:
            app.metrics.prediction_error(version.version)
            code = 500
            body = (json.dumps({"error": f"the predictions are not JSON: {exc}"}) + "\n").encode("utf-8")
        app.metrics.observe(version.version, code, time.perf_counter() - started)
        self._send(code, body, "application/json", headers)


def make_server(workdir, model: str, host: str = "127.0.0.1", port: int = 0, *,
                reload_interval: float = 0.5, seed=None, max_body: int = MAX_BODY_BYTES,
                access_log: bool = False, log=None) -> DagsmithHTTPServer:
    """A bound (not yet serving) server for `model` in the registry of `workdir` (a path, an
    s3:// URI or a Store). Loads the production and canary models first (ServingError if it
    cannot); starts the aliases watcher. Call serve_forever(), then shutdown(); server_close()."""
    store = workdir if isinstance(workdir, Store) else Store.open(str(workdir) if isinstance(workdir, Path) else workdir)
    kwargs = {} if log is None else {"log": log}
    app = ServingApp(store, model, reload_interval=reload_interval, seed=seed, **kwargs)
    server = DagsmithHTTPServer((host, port), app, max_body=max_body, access_log=access_log)
    app.start_watching()
    return server


def close(server: DagsmithHTTPServer) -> None:
    server.app.stop_watching()
    server.server_close()


def serve(workdir, model: str, host: str = "127.0.0.1", port: int = 8080, *, access_log: bool = False,
          reload_interval: float = 0.5, echo=print) -> None:
    """`dagsmith serve`: serve until Ctrl-C (or SIGTERM), then stop cleanly."""
    server = make_server(workdir, model, host, port, access_log=access_log, reload_interval=reload_interval)
    main = threading.current_thread() is threading.main_thread()
    previous = {}
    if main:
        def stop(signum, frame):
            raise KeyboardInterrupt
        previous = {signal.SIGTERM: signal.signal(signal.SIGTERM, stop), signal.SIGINT: signal.getsignal(signal.SIGINT)}
    echo(f"serving model {model!r} ({server.app.deployment.describe()}) on {server.url}")
    echo(f"  POST {server.url}/predict   GET {server.url}/health   GET {server.url}/metrics   (Ctrl-C stops)")
    sys.stdout.flush()
    try:
        server.serve_forever(poll_interval=0.2)
    except KeyboardInterrupt:
        pass
    finally:
        if main:  # a second Ctrl-C / SIGTERM while closing must not turn into a traceback
            signal.signal(signal.SIGINT, signal.SIG_IGN)
            signal.signal(signal.SIGTERM, signal.SIG_IGN)
        close(server)
        for signum, handler in previous.items():
            signal.signal(signum, handler)
    echo("stopped")
