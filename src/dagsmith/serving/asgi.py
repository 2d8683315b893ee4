"""The HTTP API of a ServingApp as an ASGI application (Starlette), served by uvicorn (server.py).

    POST /predict   {"rows": [{column: value, ...}, ...]} or a bare list of rows
                    -> 200 {"model", "version", "predictions": [...], "probabilities"?: [...]}
    GET  /health    -> 200 {"status": "ok", "model", "production", "canary", ...}
    GET  /metrics   -> Prometheus text (text/plain; version=0.0.4)

Every error is JSON {"error": reason}: 400 bad JSON / wrong shape / too deeply nested / NaN or
Infinity / an HTTP version other than 1.0 and 1.1, 404 unknown path, 405 wrong method, 408 the
body stalled (no byte for `read_timeout` seconds), 411 no Content-Length (and not chunked), 413
body too large, 414 request target past MAX_TARGET_BYTES, 422 missing feature or partition
column, unknown partition, a value of the wrong type or out of range, 431 more than
MAX_HEADER_COUNT header fields or a head past MAX_HEAD_BYTES (then the connection is closed);
500 the model failed (counted). An endpoint never lets an exception out.
Requests the HTTP parser (uvicorn) cannot read at all, e.g. a garbage request line, get its 400
(text/plain) and the connection is closed.

The body is read by the endpoint itself, chunk by chunk: the limit (413) is checked on the
declared Content-Length before reading and on the bytes as they come (chunked bodies), and each
wait for the next chunk is bounded by `read_timeout` (408, then the connection is closed). A
request line or headers that never end are timed out by server.py's protocol (`Connections`
tells it which connections have a request going on).

Predictions run in one thread per process (PREDICTION_THREADS), in the order the requests came
in: a prediction holds the GIL for most of its time, so more threads would only make each
request slower, while running it on the event loop's thread would stall accepting and reading
other requests. More throughput comes from more worker processes (`--workers`).
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import time
from concurrent.futures import ThreadPoolExecutor

from starlette.applications import Starlette
from starlette.exceptions import HTTPException
from starlette.requests import Request
from starlette.responses import Response
from starlette.routing import Route

from .. import __version__
from .app import PredictionFailed, RequestError, ServingApp
from .metrics import CONTENT_TYPE as METRICS_CONTENT_TYPE

MAX_BODY_BYTES = 16 * 1024 * 1024
READ_TIMEOUT = 30.0
# The request head, bounded as production servers bound it (server.py enforces these while the
# head is parsed; a request past them is answered and its connection closed): at most 100 header
# fields (gunicorn's limit_request_fields, Apache's LimitRequestFields), 32 KiB of request line and
# headers (nginx's large_client_header_buffers 4 8k), 8 KiB of request target (414 past it).
MAX_HEADER_COUNT = 100
MAX_HEAD_BYTES = 32 * 1024
MAX_TARGET_BYTES = 8 * 1024
PREDICTION_THREADS = 1
SERVER_HEADER = f"dagsmith-serve/{__version__}"
JSON = "application/json"


class ClientGone(Exception):
    """The client closed the connection before its body was complete: nobody to answer."""


class Connections:
    """What each open connection of this process has done, for server.py's protocol: requests
    begun and requests in flight, by client address. Used on the event loop's thread only."""

    def __init__(self):
        self._state: dict[tuple, list[int]] = {}

    def opened(self, peer) -> None:
        self._state[peer] = [0, 0]

    def closed(self, peer) -> None:
        self._state.pop(peer, None)

    def begin(self, peer) -> None:
        state = self._state.get(peer)
        if state is not None:
            state[0] += 1
            state[1] += 1

    def end(self, peer) -> None:
        state = self._state.get(peer)
        if state is not None:
            state[1] -= 1

    def begun(self, peer) -> int:
        return self._state.get(peer, (0, 0))[0]

    def in_flight(self, peer) -> int:
        return self._state.get(peer, (0, 0))[1]


def _dumps(payload) -> bytes:
    return (json.dumps(payload, allow_nan=False, default=str) + "\n").encode("utf-8")


def error_response(code: int, reason: str, headers: dict | None = None) -> Response:
    return Response(_dumps({"error": reason}), code, headers=headers, media_type=JSON)


class DagsmithASGI:
    """The ASGI callable: normalizes the path (a trailing "/" is ignored), refuses HTTP
    versions other than 1.0/1.1, adds the Server header (and X-Dagsmith-Worker with several
    workers), then hands the request to the Starlette routes."""

    def __init__(self, app: ServingApp, *, max_body: int = MAX_BODY_BYTES, read_timeout: float = READ_TIMEOUT,
                 worker: int | None = None, watch: bool = True, on_ready=None,
                 prediction_threads: int = PREDICTION_THREADS):
        self.app = app
        self.on_ready = on_ready
        self.connections = Connections()
        self.prediction_threads = prediction_threads
        self.executor: ThreadPoolExecutor | None = None
        self.max_body = max_body
        self.read_timeout = read_timeout
        self.watch = watch
        extra = [(b"server", SERVER_HEADER.encode())]
        if worker is not None:
            extra.append((b"x-dagsmith-worker", str(worker).encode()))
        self._extra_headers = extra
        self.starlette = Starlette(
            routes=[
                Route("/predict", self.predict, methods=["POST"]),
                Route("/health", self.health, methods=["GET"]),  # HEAD too (Starlette adds it)
                Route("/metrics", self.metrics, methods=["GET"]),
            ],
            exception_handlers={HTTPException: self.http_exception, Exception: self.internal_error},
            lifespan=self.lifespan,
        )

    async def __call__(self, scope, receive, send):
        if scope["type"] != "http":
            await self.starlette(scope, receive, send)
            return
        extra = self._extra_headers

        async def send_with_headers(message):
            if message["type"] == "http.response.start":
                message = {**message, "headers": [*message.get("headers", ()), *extra]}
            await send(message)

        if len(scope.get("headers") or ()) > MAX_HEADER_COUNT:  # whatever parser read them (server.py refuses earlier)
            response = error_response(431, f"more than {MAX_HEADER_COUNT} header fields", {"Connection": "close"})
            await response(scope, receive, send_with_headers)
            return
        if scope.get("http_version") not in ("1.0", "1.1"):
            response = error_response(400, f"HTTP/{scope.get('http_version')} is not supported: "
                                           "send HTTP/1.1 (or HTTP/1.0)", {"Connection": "close"})
            await response(scope, receive, send_with_headers)
            return
        path = scope["path"]
        if len(path) > 1 and path.endswith("/"):
            scope = {**scope, "path": path.rstrip("/") or "/"}
        client = tuple(scope["client"][:2]) if scope.get("client") else None
        self.connections.begin(client)
        try:
            await self.starlette(scope, receive, send_with_headers)
        finally:
            self.connections.end(client)

    @contextlib.asynccontextmanager
    async def lifespan(self, _starlette):
        self.executor = ThreadPoolExecutor(self.prediction_threads, thread_name_prefix="dagsmith-predict")
        if self.watch:
            self.app.start_watching()
        if self.on_ready is not None:
            self.on_ready()
        try:
            yield
        finally:  # after uvicorn's graceful shutdown: the requests in flight have been answered
            self.app.stop_watching()
            self.executor.shutdown(wait=False, cancel_futures=True)

    # --- errors -------------------------------------------------------------------------------

    async def http_exception(self, request: Request, exc: HTTPException) -> Response:
        path = request.url.path
        if exc.status_code == 404:
            return error_response(404, f"no such path {path!r}: POST /predict, GET /health, GET /metrics")
        if exc.status_code == 405:
            allow = (exc.headers or {}).get("Allow", "")
            methods = [m.strip() for m in allow.split(",") if m.strip() and m.strip() != "HEAD"]
            return error_response(405, f"{request.method} is not allowed on {path}: use {' or '.join(methods)}",
                                  {"Allow": allow})
        return error_response(exc.status_code, str(exc.detail), exc.headers)

    async def internal_error(self, request: Request, exc: Exception) -> Response:  # a bug in the server
        return error_response(500, f"internal error: {type(exc).__name__}: {exc}", {"Connection": "close"})

    # --- endpoints ----------------------------------------------------------------------------

    async def health(self, request: Request) -> Response:
        return Response(_dumps(self.app.health()), 200, media_type=JSON)

    async def metrics(self, request: Request) -> Response:
        return Response(self.app.render_metrics().encode("utf-8"), 200, media_type=METRICS_CONTENT_TYPE)

    async def read_body(self, request: Request) -> bytes:
        """The whole body, within the limit; RequestError 411/413/408/400; ClientGone."""
        headers = request.headers
        declared = headers.get("content-length")
        chunked = "chunked" in headers.get("transfer-encoding", "").lower()
        if declared is None and not chunked:
            raise RequestError(411, "a Content-Length header is required (or Transfer-Encoding: chunked)")
        expected = None
        if declared is not None:
            try:
                expected = int(declared)
            except ValueError:  # the HTTP parser refuses most bad values before this
                raise RequestError(400, f"bad Content-Length {declared!r}") from None
            if expected > self.max_body:
                raise RequestError(413, f"the body is {expected} bytes; the limit is {self.max_body}")
        chunks, size = [], 0
        loop = asyncio.get_running_loop()
        try:
            async with asyncio.timeout(self.read_timeout) as deadline:
                while True:
                    message = await request.receive()
                    if message["type"] == "http.disconnect":
                        raise ClientGone
                    chunk = message.get("body", b"")
                    if chunk:
                        size += len(chunk)
                        if size > self.max_body:
                            raise RequestError(413, f"the body is more than {self.max_body} bytes, the limit")
                        chunks.append(chunk)
                    if not message.get("more_body", False):
                        break
                    deadline.reschedule(loop.time() + self.read_timeout)  # the timeout is per wait
        except TimeoutError:
            of = f" of {expected}" if expected is not None else ""
            raise RequestError(408, f"the body stalled: no data for {self.read_timeout:g} s after {size}{of} bytes "
                                    "(the read timeout)") from None
        return chunks[0] if len(chunks) == 1 else b"".join(chunks)

    async def predict(self, request: Request) -> Response:
        app = self.app
        started = time.perf_counter()
        deployment = app.deployment  # one snapshot for the whole request
        version = app.route(deployment, request.headers.get("x-request-id"))
        headers = {"X-Dagsmith-Version": str(version.version)}
        try:
            try:
                body = await self.read_body(request)
            except RequestError:
                headers["Connection"] = "close"  # the rest of the body is not read
                raise
            rows = app.parse_rows(body)
            loop = asyncio.get_running_loop()
            try:
                code, payload = 200, await loop.run_in_executor(self.executor, app.predict, version, rows)
            except asyncio.CancelledError:  # the graceful shutdown's timeout ran out
                headers["Connection"] = "close"
                code, payload = 503, {"error": "the server stopped before the prediction was done "
                                               "(the graceful shutdown timeout ran out)"}
        except ClientGone:
            return Response(b"", 499)  # nobody reads it; not counted
        except RequestError as exc:
            code, payload = exc.status, {"error": exc.reason}
        except PredictionFailed as exc:
            app.metrics.prediction_error(version.version)
            code, payload = 500, {"error": str(exc), "version": version.version}
        except Exception as exc:
            app.metrics.prediction_error(version.version)
            code, payload = 500, {"error": f"internal error: {type(exc).__name__}: {exc}", "version": version.version}
        try:
            content = _dumps(payload)
        except ValueError as exc:
            app.metrics.prediction_error(version.version)
            code, content = 500, _dumps({"error": f"the predictions are not JSON: {exc}"})
        app.metrics.observe(version.version, code, time.perf_counter() - started)
        return Response(content, code, headers=headers, media_type=JSON)
