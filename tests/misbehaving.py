"""Local servers that misbehave as deploy targets do in the wild (tests of `dagsmith deploy`):
one that answers every request with the same canned answer (an SSO login page, garbage, a
gateway error), one that trickles a byte at a time, one that accepts and never answers, and a
port where nothing listens. Each runs on 127.0.0.1 in a thread, for one test."""

from __future__ import annotations

import socket
import threading
import time
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

LOGIN_PAGE = b"<!DOCTYPE html><html><head><title>Sign in</title></head><body><form action='/sso/login'>...</form></body></html>"


def closed_port() -> str:
    """http://127.0.0.1:PORT where nothing listens (connection refused)."""
    probe = socket.socket()
    probe.bind(("127.0.0.1", 0))
    port = probe.getsockname()[1]
    probe.close()
    return f"http://127.0.0.1:{port}"


class Canned:
    """Answers every request with (status, content type, body, extra headers)."""

    def __init__(self, status: int = 200, content_type: str = "text/html", body: bytes = LOGIN_PAGE, headers: dict | None = None):
        canned = self

        class Handler(BaseHTTPRequestHandler):
            def log_message(self, *args):
                pass

            def _handle(self):
                length = int(self.headers.get("Content-Length") or 0)
                if length:
                    self.rfile.read(length)
                canned.requests += 1
                self.send_response(status)
                self.send_header("Content-Type", content_type)
                self.send_header("Content-Length", str(len(body)))
                for name, value in (headers or {}).items():
                    self.send_header(name, value)
                self.end_headers()
                self.wfile.write(body)

            do_GET = do_POST = do_PUT = do_DELETE = do_HEAD = _handle

        self.requests = 0
        self.server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.url = f"http://127.0.0.1:{self.server.server_address[1]}"
        threading.Thread(target=self.server.serve_forever, daemon=True).start()

    def close(self):
        self.server.shutdown()
        self.server.server_close()


class Trickle:
    """Accepts, reads the request, then sends a valid start of an answer one byte every
    `interval` seconds for at most `duration` seconds (then closes): a socket timeout longer than
    `interval` never trips. With interval=None it sends nothing at all (a stalled server)."""

    ANSWER = b"HTTP/1.1 200 OK\r\nContent-Type: application/json\r\nContent-Length: 100000\r\n\r\n" + b" " * 100000

    def __init__(self, interval: float | None = 0.2, duration: float = 8.0):
        self.listener = socket.socket()
        self.listener.bind(("127.0.0.1", 0))
        self.listener.listen(16)
        self.url = f"http://127.0.0.1:{self.listener.getsockname()[1]}"
        self.interval, self.duration = interval, duration
        self.closed = threading.Event()
        threading.Thread(target=self._serve, daemon=True).start()

    def _serve(self):
        while not self.closed.is_set():
            try:
                connection, _ = self.listener.accept()
            except OSError:
                return
            threading.Thread(target=self._trickle, args=(connection,), daemon=True).start()

    def _trickle(self, connection: socket.socket):
        end = time.monotonic() + self.duration
        try:
            connection.settimeout(1.0)
            try:
                connection.recv(65536)
            except OSError:
                pass
            for byte in self.ANSWER:
                if time.monotonic() > end or self.closed.is_set():
                    break
                if self.interval is None:
                    self.closed.wait(0.1)
                    continue
                connection.sendall(bytes([byte]))
                self.closed.wait(self.interval)
        except OSError:
            pass  # the client gave up: what a bounded request does
        finally:
            connection.close()

    def close(self):
        self.closed.set()
        self.listener.close()
