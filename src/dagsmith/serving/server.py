"""Running the HTTP server: uvicorn serving the ASGI app of asgi.py, in one or several processes.

The listening socket is bound here, before uvicorn starts: `--port 0` is resolved to a real port
that is printed, and `--backlog` is the listen queue of that socket (uvicorn listens with the
same backlog). Linux caps it at net.core.somaxconn.

- `workers == 1`: uvicorn runs in this process (the thread calling serve_forever). The models
  are loaded once, before the socket is bound.
- `workers > 1`: this process loads the models once to check them (ServingError, exit 2,
  before anything listens), binds the socket, then starts N worker processes (`spawn`), each of
  which loads the models and runs uvicorn on the shared socket; the kernel hands each new
  connection to one of them. A worker that dies is replaced. Metrics are added up over the
  workers (metrics.SharedValues, in a temporary directory removed at exit).

Stopping: SIGINT (Ctrl-C) or SIGTERM, or `stop()`. uvicorn stops accepting, closes idle
keep-alive connections, lets the requests in flight finish (at most `graceful_timeout`
seconds), then the process exits 0. With workers, the parent sends SIGTERM to each and waits.
"""

from __future__ import annotations

import asyncio
import json
import logging
import multiprocessing
import os
import shutil
import signal
import socket
import sys
import tempfile
import threading
import time
import dataclasses
from dataclasses import dataclass
from pathlib import Path

import uvicorn

from ..runtime.store import Store
from .app import ServingApp, ServingError
from .asgi import MAX_BODY_BYTES, MAX_HEAD_BYTES, MAX_HEADER_COUNT, MAX_TARGET_BYTES, READ_TIMEOUT, DagsmithASGI
from .metrics import SharedValues

DEFAULT_BACKLOG = 2048
DEFAULT_GRACEFUL_TIMEOUT = 30.0
STARTUP_FAILED = 3  # a worker's exit code when it could not load the models


@dataclass(frozen=True)
class Settings:
    """What a worker process needs to build its server (pickled to it)."""

    workdir: str
    model: str
    max_body: int
    read_timeout: float
    graceful_timeout: float | None
    access_log: bool
    reload_interval: float
    seed: object = None
    metrics_dir: str | None = None


def open_store(workdir) -> Store:
    return workdir if isinstance(workdir, Store) else Store.open(str(workdir) if isinstance(workdir, Path) else workdir)


def bind(host: str, port: int, backlog: int) -> socket.socket:
    """A listening TCP socket on host:port (port 0: a free one)."""
    family, kind, proto, _, address = socket.getaddrinfo(host, port, type=socket.SOCK_STREAM,
                                                         flags=socket.AI_PASSIVE)[0]
    sock = socket.socket(family, kind, proto)
    try:
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        if family == socket.AF_INET6:
            sock.setsockopt(socket.IPPROTO_IPV6, socket.IPV6_V6ONLY, 0)
        sock.bind(address)
        sock.listen(backlog)
    except OSError as exc:
        sock.close()
        raise ServingError(f"cannot listen on {host}:{port}: {exc.strerror or exc}") from None
    return sock


def log_config(access_log: bool) -> dict:
    """uvicorn's logging: everything on stderr. Without --access-log only errors (a request
    the HTTP parser cannot read is a warning: shown with --access-log)."""
    return {
        "version": 1,
        "disable_existing_loggers": False,
        "formatters": {"plain": {"format": "%(asctime)s %(message)s", "datefmt": "%H:%M:%S"}},
        "handlers": {"stderr": {"class": "logging.StreamHandler", "formatter": "plain", "stream": "ext://sys.stderr"}},
        "loggers": {
            "uvicorn": {"handlers": ["stderr"], "level": "INFO", "propagate": False},
            "uvicorn.error": {"level": "WARNING" if access_log else "ERROR"},
            "uvicorn.access": {"handlers": ["stderr"], "level": "INFO" if access_log else "WARNING", "propagate": False},
        },
    }


class UvicornServer(uvicorn.Server):
    """uvicorn's server, with dagsmith's signal rules: the first SIGINT/SIGTERM starts the
    graceful shutdown; another one while it runs is ignored (uvicorn's would cut the requests
    in flight short and print tracebacks); the wait is bounded by graceful_timeout. A worker
    process (`sigint=False`) stops on its parent's SIGTERM only: Ctrl-C in a terminal reaches
    the whole process group, and the parent decides."""

    sigint = True

    def handle_exit(self, sig, frame) -> None:
        if sig == signal.SIGINT and not self.sigint:
            return
        if self.should_exit:
            print(f"{time.strftime('%H:%M:%S')} already stopping: waiting for the requests in flight "
                  f"(at most {self.config.timeout_graceful_shutdown or 0:g} s; SIGKILL stops at once)",
                  file=sys.stderr, flush=True)
            return
        super().handle_exit(sig, frame)


def _refusal(status: int, reason: str) -> bytes:
    body = json.dumps({"error": reason}).encode() + b"\n"
    phrase = {414: b"URI Too Long", 431: b"Request Header Fields Too Large"}[status]
    return (b"HTTP/1.1 %d %s\r\ncontent-type: application/json\r\ncontent-length: %d\r\n"
            b"connection: close\r\n\r\n%s" % (status, phrase, len(body), body))


class LimitedHead:
    """A bounded request head for uvicorn's httptools protocol (which has no limit: 16 MB of
    headers were all kept, and the request served): at most MAX_HEADER_COUNT header fields and
    MAX_HEAD_BYTES of request line and headers (431), MAX_TARGET_BYTES of request target (414).
    Past a limit the answer is written, the connection closed, and nothing of the request goes
    further (the parser's remaining callbacks for it do nothing). The limits are checked on each
    complete piece (target, header) and, for one field that never ends (httptools gathers it before
    calling on_header), on the bytes of every chunk after the one the request began in that still
    leaves the head unfinished. uvicorn's h11 protocol (without httptools) bounds the head itself
    (h11_max_incomplete_event_size: 400), and the ASGI app counts the fields (431)."""

    def connection_made(self, transport):
        self._head_refused = False
        self._head_open = False  # a request head is being parsed
        self._head_chunk = 0  # chunks received
        super().connection_made(transport)

    def data_received(self, data):
        if self._head_refused:
            return
        self._head_chunk += 1
        super().data_received(data)
        if self._head_open and self._head_began != self._head_chunk:  # this whole chunk is head
            self._head_raw += len(data)
            if self._head_raw > MAX_HEAD_BYTES:
                self._refuse_head(431, f"the request line and headers are over {MAX_HEAD_BYTES} bytes")

    def _refuse_head(self, status: int, reason: str) -> None:
        if not self._head_refused:
            self._head_refused = True
            self.transport.write(_refusal(status, reason))
            self.transport.close()

    def on_message_begin(self):
        if self._head_refused:
            return
        self._head_open, self._head_began = True, self._head_chunk
        self._head_raw = self._head_bytes = self._head_count = 0
        super().on_message_begin()

    def on_url(self, url):
        if self._head_refused:
            return
        self._head_bytes += len(url)
        if self._head_bytes > MAX_TARGET_BYTES:
            self._refuse_head(414, f"the request target is over {MAX_TARGET_BYTES} bytes")
            return
        super().on_url(url)

    def on_header(self, name, value):
        if self._head_refused:
            return
        self._head_count += 1
        self._head_bytes += len(name) + len(value) + 4  # ": " and CRLF
        if self._head_count > MAX_HEADER_COUNT:
            self._refuse_head(431, f"more than {MAX_HEADER_COUNT} header fields")
        elif self._head_bytes > MAX_HEAD_BYTES:
            self._refuse_head(431, f"the request line and headers are over {MAX_HEAD_BYTES} bytes")
        else:
            super().on_header(name, value)

    def on_headers_complete(self):
        self._head_open = False
        if not self._head_refused:
            super().on_headers_complete()

    def on_body(self, body):
        if not self._head_refused:
            super().on_body(body)

    def on_message_complete(self):
        if not self._head_refused:
            super().on_message_complete()


def timed_protocol(connections, read_timeout: float) -> type:
    """uvicorn's HTTP protocol (httptools, else h11), plus a timeout for the request line and
    headers. uvicorn has none: its keep-alive timeout starts after a first answer and any byte
    stops it, so a client that sends half a request line would hold its connection forever.

    Every `read_timeout` seconds the protocol looks at its connection. With a request in flight
    or a new request begun since the last look, it looks again later. Otherwise, if bytes came
    since the last look (a request line or headers that never ended), it answers 408 and closes;
    if nothing came (a connection opened and left silent), it closes it. A body that stalls is
    the ASGI app's (asgi.read_body): 408 after `read_timeout` without a byte."""
    from uvicorn.protocols.http.auto import AutoHTTPProtocol

    body = json.dumps({"error": f"the request stalled: no complete request line and headers within "
                                f"{read_timeout:g} s (the read timeout)"}).encode() + b"\n"
    answer = (b"HTTP/1.1 408 Request Timeout\r\ncontent-type: application/json\r\n"
              b"content-length: %d\r\nconnection: close\r\n\r\n%s" % (len(body), body))

    class TimedProtocol(LimitedHead, AutoHTTPProtocol):
        def connection_made(self, transport):
            self._dagsmith_received = 0
            self._dagsmith_timer = None
            super().connection_made(transport)
            info = transport.get_extra_info("peername")
            self._dagsmith_peer = (str(info[0]), int(info[1])) if isinstance(info, (list, tuple)) else None
            if self._dagsmith_peer is not None:
                connections.opened(self._dagsmith_peer)
                self._dagsmith_arm()

        def data_received(self, data):
            self._dagsmith_received += len(data)
            super().data_received(data)

        def _dagsmith_arm(self):
            look = (connections.begun(self._dagsmith_peer), self._dagsmith_received)
            self._dagsmith_timer = asyncio.get_running_loop().call_later(read_timeout, self._dagsmith_check, look)

        def _dagsmith_check(self, look):
            transport = self.transport
            if transport.is_closing():
                return
            begun, received = look
            if connections.in_flight(self._dagsmith_peer) or connections.begun(self._dagsmith_peer) != begun:
                self._dagsmith_arm()  # busy, or it made progress: look again later
                return
            if self._dagsmith_received != received:  # bytes, but no request: a stalled request line or headers
                transport.write(answer)
            transport.close()

        def connection_lost(self, exc):
            if self._dagsmith_timer is not None:
                self._dagsmith_timer.cancel()
            if self._dagsmith_peer is not None:
                connections.closed(self._dagsmith_peer)
            super().connection_lost(exc)

    return TimedProtocol


def uvicorn_server(asgi_app, settings: Settings, backlog: int) -> UvicornServer:
    config = uvicorn.Config(
        asgi_app,
        http=timed_protocol(asgi_app.connections, settings.read_timeout),
        lifespan="on",
        log_config=log_config(settings.access_log),
        access_log=settings.access_log,
        server_header=False,  # the ASGI app sends Server: dagsmith-serve/<version>
        h11_max_incomplete_event_size=MAX_HEAD_BYTES,  # the head's bound when h11 parses (no httptools)
        proxy_headers=False,
        timeout_graceful_shutdown=settings.graceful_timeout,
        backlog=backlog,
    )
    return UvicornServer(config)


def _ignore(signum, frame):  # uvicorn re-raises the signal it stopped on: nothing more to do
    pass


class Server:
    """A bound server for `model` in the registry of `workdir` (a path, an s3:// URI or a
    Store). The models are loaded (ServingError if they cannot be) and the socket is listening;
    serve_forever() serves until stop() or SIGINT/SIGTERM (in the main thread)."""

    def __init__(self, workdir, model: str, host: str = "127.0.0.1", port: int = 0, *, workers: int = 1,
                 backlog: int = DEFAULT_BACKLOG, read_timeout: float | None = None, max_body: int | None = None,
                 graceful_timeout: float | None = DEFAULT_GRACEFUL_TIMEOUT, access_log: bool = False,
                 reload_interval: float = 0.5, seed=None, log=None):
        if workers < 1:
            raise ServingError(f"--workers must be at least 1, got {workers}")
        self.model = model
        self.workers = workers
        self.backlog = backlog
        self.settings = Settings(
            workdir=str(open_store(workdir).uri) if workers > 1 else "",
            model=model,
            max_body=MAX_BODY_BYTES if max_body is None else max_body,
            read_timeout=READ_TIMEOUT if read_timeout is None else read_timeout,
            graceful_timeout=graceful_timeout,
            access_log=access_log,
            reload_interval=reload_interval,
            seed=seed,
        )
        kwargs = {} if log is None else {"log": log}
        # loads every model first: a model that cannot be served is an error before anything listens
        self.app = ServingApp(open_store(workdir), model, reload_interval=reload_interval, seed=seed, **kwargs)
        self.description = self.app.deployment.describe()
        self.metrics_dir = None
        if workers > 1:
            self.app = None  # each worker loads its own; this process only supervises
            self.metrics_dir = tempfile.mkdtemp(prefix="dagsmith-serve-metrics-")
            self.settings = dataclasses.replace(self.settings, metrics_dir=self.metrics_dir)
        self.socket = bind(host, port, backlog)
        self.server_address = self.socket.getsockname()[:2]
        self._stop = threading.Event()
        self._uvicorn = None
        self._processes: dict[int, multiprocessing.Process] = {}

    @property
    def url(self) -> str:
        host, port = self.server_address
        if ":" in host:
            host = f"[{host}]"
        return f"http://{host}:{port}"

    # --- serving ------------------------------------------------------------------------------

    def serve_forever(self, ready=None) -> None:
        """Serve until stop() or, in the main thread, SIGINT / SIGTERM; then stop gracefully.
        `ready()` is called once the server answers (every worker has loaded its models)."""
        try:
            if self.workers == 1:
                self._serve_here(ready)
            else:
                self._serve_workers(ready)
        finally:
            self.close()

    def stop(self) -> None:
        """Ask serve_forever to stop (from any thread); requests in flight finish."""
        self._stop.set()
        if self._uvicorn is not None:
            self._uvicorn.should_exit = True

    def _serve_here(self, ready) -> None:
        app = DagsmithASGI(self.app, max_body=self.settings.max_body, read_timeout=self.settings.read_timeout,
                           on_ready=ready)
        server = uvicorn_server(app, self.settings, self.backlog)
        self._uvicorn = server
        if self._stop.is_set():
            return
        main = threading.current_thread() is threading.main_thread()
        previous = {}
        if main:  # uvicorn handles SIGINT/SIGTERM while it runs, then raises the signal again: ignore it then
            previous = {sig: signal.signal(sig, _ignore) for sig in (signal.SIGINT, signal.SIGTERM)}
        try:
            server.run(sockets=[self.socket])
        finally:
            for sig, handler in previous.items():
                signal.signal(sig, handler)

    def _serve_workers(self, ready) -> None:
        context = multiprocessing.get_context("spawn")
        readiness = context.Queue()
        main = threading.current_thread() is threading.main_thread()
        previous = {}
        if main:
            def on_signal(signum, frame):
                self._stop.set()
            previous = {sig: signal.signal(sig, on_signal) for sig in (signal.SIGINT, signal.SIGTERM)}
        try:
            for index in range(1, self.workers + 1):
                self._processes[index] = self._start_worker(context, index, readiness)
            waiting = set(self._processes)
            while not self._stop.wait(0.1):
                while waiting:
                    try:
                        waiting.discard(readiness.get_nowait())
                    except Exception:  # queue.Empty
                        break
                    if not waiting and ready is not None:
                        ready()
                for index, process in list(self._processes.items()):
                    if process.exitcode is None:
                        continue
                    if process.exitcode == STARTUP_FAILED or index in waiting:
                        self._stop.set()
                        raise ServingError(f"worker {index} of {self.model!r} failed to start "
                                           f"(exit code {process.exitcode}); see the messages above")
                    print(f"{time.strftime('%H:%M:%S')} worker {index} (pid {process.pid}) exited with code "
                          f"{process.exitcode}; starting a new one", file=sys.stderr, flush=True)
                    self._processes[index] = self._start_worker(context, index, readiness)
        finally:
            if main:  # a second Ctrl-C while the workers finish must not interrupt the wait
                for sig in previous:
                    signal.signal(sig, _ignore)
            self._stop_workers()
            readiness.close()
            for sig, handler in previous.items():
                signal.signal(sig, handler)

    def _start_worker(self, context, index: int, readiness) -> multiprocessing.Process:
        process = context.Process(target=worker_main, args=(self.settings, index, self.socket, self.backlog, readiness),
                                  name=f"dagsmith-serve-worker-{index}", daemon=False)
        process.start()
        return process

    def _stop_workers(self) -> None:
        for process in self._processes.values():
            if process.exitcode is None:
                try:
                    os.kill(process.pid, signal.SIGTERM)
                except ProcessLookupError:
                    pass
        limit = (self.settings.graceful_timeout or 0) + 10
        deadline = time.monotonic() + limit
        for process in self._processes.values():
            process.join(max(0.1, deadline - time.monotonic()))
            if process.exitcode is None:  # stuck past the graceful timeout
                process.kill()
                process.join(5)
        self._processes.clear()

    def close(self) -> None:
        if self.app is not None:
            self.app.stop_watching()
        try:
            self.socket.close()
        except OSError:
            pass
        if self.metrics_dir is not None:
            shutil.rmtree(self.metrics_dir, ignore_errors=True)


def worker_main(settings: Settings, index: int, sock: socket.socket, backlog: int, readiness) -> None:
    """One worker process: load the models, serve the shared socket until SIGTERM (from the
    parent). SIGINT is the parent's to handle. SIGTERM keeps its default action outside
    uvicorn's run: while loading it ends the worker at once, and after the graceful shutdown
    uvicorn raises it again, which ends the worker too."""
    signal.signal(signal.SIGINT, signal.SIG_IGN)
    signal.signal(signal.SIGTERM, signal.SIG_DFL)
    values = SharedValues(settings.metrics_dir, f"worker-{index}-{os.getpid()}") if settings.metrics_dir else None
    try:
        app = ServingApp(open_store(settings.workdir), settings.model, reload_interval=settings.reload_interval,
                         seed=settings.seed, metrics_values=values)
    except Exception as exc:
        print(f"worker {index}: {exc}", file=sys.stderr, flush=True)
        sys.exit(STARTUP_FAILED)
    asgi_app = DagsmithASGI(app, max_body=settings.max_body, read_timeout=settings.read_timeout, worker=index,
                            on_ready=lambda: readiness.put(index))
    server = uvicorn_server(asgi_app, settings, backlog)
    server.sigint = False
    try:
        server.run(sockets=[sock])
    finally:
        logging.shutdown()
        if values is not None:
            values.close()
    sys.exit(0 if server.started else STARTUP_FAILED)


def make_server(workdir, model: str, host: str = "127.0.0.1", port: int = 0, **kwargs) -> Server:
    """A bound server (see Server); call serve_forever(), and stop() from another thread."""
    return Server(workdir, model, host, port, **kwargs)


def serve(workdir, model: str, host: str = "127.0.0.1", port: int = 8080, *, workers: int = 1,
          backlog: int = DEFAULT_BACKLOG, read_timeout: float | None = None,
          graceful_timeout: float | None = DEFAULT_GRACEFUL_TIMEOUT, access_log: bool = False,
          reload_interval: float = 0.5, echo=print) -> None:
    """`dagsmith serve`: serve until Ctrl-C (or SIGTERM), then stop gracefully."""
    server = Server(workdir, model, host, port, workers=workers, backlog=backlog, read_timeout=read_timeout,
                    graceful_timeout=graceful_timeout, access_log=access_log, reload_interval=reload_interval)

    def ready():
        url = server.url
        more = f", {workers} workers" if workers > 1 else ""
        echo(f"serving model {model!r} ({server.description}) on {url}")
        echo(f"  POST {url}/predict   GET {url}/health   GET {url}/metrics   (Ctrl-C stops{more})")
        sys.stdout.flush()

    server.serve_forever(ready)
    echo("stopped")
