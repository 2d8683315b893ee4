"""Talking to a deploy target's server (the Argo Server, AWS): every request bounded in time and
size, every message a server sends back scrubbed of credentials before a user sees it.

A socket timeout bounds one read, not a request: a server (or a proxy) that sends one byte every
few seconds never trips it. `send` bounds the WHOLE request: a watchdog shuts the request's
socket down when its deadline passes, so a blocked read returns at once, and the answer is
refused past ANSWER_LIMIT bytes. The deadline is DAGSMITH_REQUEST_TIMEOUT seconds (default 30,
docs/ci.md).
"""

from __future__ import annotations

import http.client
import json
import os
import re
import socket
import ssl
import threading
import time
import urllib.error
import urllib.request
from dataclasses import dataclass
from typing import Iterable

from ..errors import UsageError, encoded_forms, redact

TIMEOUT_ENV = "DAGSMITH_REQUEST_TIMEOUT"
DEFAULT_TIMEOUT = 30.0  # seconds for one whole request (connect, send, every byte of the answer)
ANSWER_LIMIT = 16 * 1024 * 1024  # bytes: a larger answer is not one the deploy asked for
MESSAGE_LIMIT = 500  # characters of a server's message shown to the user


def request_timeout() -> float:
    """The whole-request deadline in seconds: $DAGSMITH_REQUEST_TIMEOUT, else 30."""
    text = os.environ.get(TIMEOUT_ENV, "").strip()
    if not text:
        return DEFAULT_TIMEOUT
    try:
        value = float(text)
    except ValueError:
        value = float("nan")
    if not 0 < value <= 3600:  # nan fails too
        raise UsageError(f"${TIMEOUT_ENV}={text[:40]!r}: expected a number of seconds, above 0 and at most 3600")
    return value


class Unreachable(Exception):
    """No complete answer (the message says why, without the URL, which the caller names): the
    server could not be reached, stalled past the deadline, dropped
    the connection, or sent more than ANSWER_LIMIT. `sent`: the request may have reached the
    server (it may have acted on it), as opposed to a connection that never opened."""

    def __init__(self, message: str, *, sent: bool):
        self.sent = sent
        super().__init__(message)


@dataclass(frozen=True)
class Answer:
    status: int
    content_type: str  # the media type, lower case, without parameters ("" when not given)
    body: bytes
    location: str = ""  # a redirect's target

    def json(self):
        """The body as JSON, or None when it is not JSON (a login page, garbage)."""
        try:
            return json.loads(self.body.decode("utf-8"))
        except (UnicodeDecodeError, ValueError):
            return None

    def describe(self) -> str:
        """What came back besides its status, for a message: what the body looks like."""
        kind = self.content_type or "no content type"
        looks = " (an HTML page: a login or proxy page?)" if b"<html" in self.body[:2048].lower() else ""
        where = f", redirecting to {self.location}" if self.location else ""
        return f"with a {kind} body of {len(self.body)} bytes{looks}{where}"


class _Watchdog:
    """Shuts down the request's sockets when the deadline passes: a read blocked on a stalled
    server returns (EOF or an error) at once."""

    def __init__(self, seconds: float):
        self.deadline = time.monotonic() + seconds
        self.expired = False
        self.connected = False
        self._sockets: list[socket.socket] = []
        self._lock = threading.Lock()
        self._timer = threading.Timer(seconds, self._expire)
        self._timer.daemon = True
        self._timer.start()

    def remaining(self) -> float:
        return max(0.001, self.deadline - time.monotonic())

    def watch(self, sock: socket.socket) -> socket.socket:
        with self._lock:
            self.connected = True
            self._sockets.append(sock)
            if self.expired:
                _shut(sock)
        return sock

    def _expire(self) -> None:
        with self._lock:
            self.expired = True
            for sock in self._sockets:
                _shut(sock)

    def cancel(self) -> None:
        self._timer.cancel()


def _shut(sock: socket.socket) -> None:
    try:  # the plain socket's shutdown (for TLS too): wakes a blocked recv, leaves closing to its owner
        socket.socket.shutdown(sock, socket.SHUT_RDWR)
    except OSError:
        pass


def _watched(base: type, watchdog: _Watchdog) -> type:
    """`base` (an http.client connection class) whose sockets the watchdog may shut, each socket
    operation bounded by what is left of the deadline."""

    class Watched(base):
        def __init__(self, *args, **kwargs):
            super().__init__(*args, **kwargs)
            self.timeout = min(self.timeout, watchdog.remaining()) if isinstance(self.timeout, (int, float)) else watchdog.remaining()
            create = self._create_connection
            self._create_connection = lambda *a, **k: watchdog.watch(create(*a, **k))

        def connect(self):
            super().connect()
            watchdog.watch(self.sock)  # the TLS socket, when there is one

    return Watched


class _NoRedirect(urllib.request.HTTPRedirectHandler):
    """A redirect is an answer of its own (an SSO login, a wrong URL), never followed: following
    it would send the token to wherever it points."""

    def redirect_request(self, req, fp, code, msg, headers, newurl):
        return None


def send(method: str, url: str, *, headers: dict[str, str] | None = None, body: bytes | None = None,
         timeout: float | None = None, limit: int = ANSWER_LIMIT) -> Answer:
    """One HTTP request, all of it (connect, send, the whole answer) within `timeout` seconds
    (default request_timeout()) and at most `limit` bytes of answer. Any status comes back as an
    Answer; no answer at all raises Unreachable."""
    seconds = request_timeout() if timeout is None else timeout
    watchdog = _Watchdog(seconds)

    class Plain(urllib.request.HTTPHandler):
        def http_open(self, req):
            return self.do_open(_watched(http.client.HTTPConnection, watchdog), req)

    class Secure(urllib.request.HTTPSHandler):
        def https_open(self, req):
            return self.do_open(_watched(http.client.HTTPSConnection, watchdog), req, context=ssl.create_default_context())

    opener = urllib.request.build_opener(Plain, Secure, _NoRedirect)
    request = urllib.request.Request(url, data=body, method=method, headers=headers or {})
    try:
        try:
            response = opener.open(request, timeout=watchdog.remaining())
        except urllib.error.HTTPError as exc:  # a status other than 2xx: an answer all the same
            response = exc
        with response:
            length = response.headers.get("Content-Length")
            if length and length.strip().isdigit() and int(length) > limit:
                raise Unreachable(f"an answer of {int(length)} bytes, more than the {limit} bytes a deploy reads", sent=True)
            data = response.read(limit + 1)
            if len(data) > limit:
                raise Unreachable(f"an answer of more than the {limit} bytes a deploy reads", sent=True)
            answer = Answer(response.status, response.headers.get_content_type() if response.headers.get("Content-Type") else "",
                            data, response.headers.get("Location") or "")
    except Unreachable:
        raise
    except (urllib.error.URLError, http.client.HTTPException, OSError, ValueError) as exc:
        reason = getattr(exc, "reason", None) or exc
        if watchdog.expired or isinstance(reason, TimeoutError):  # the watchdog, or a socket operation's share of the deadline
            what = "no complete answer" if watchdog.connected else "no connection"
            raise Unreachable(f"{what} within {seconds:g}s (${TIMEOUT_ENV})", sent=watchdog.connected) from None
        raise Unreachable(f"{' '.join(str(reason).split()) or type(exc).__name__}", sent=watchdog.connected) from None
    finally:
        watchdog.cancel()
    if watchdog.expired:  # the socket was shut while the answer was read: what was read is partial
        raise Unreachable(f"no complete answer within {seconds:g}s (${TIMEOUT_ENV})", sent=True)
    return answer


# An Authorization header's value wherever it is quoted ("Authorization: Bearer x",
# {"authorization": "x"}), and a bare scheme + credentials ("Bearer x", AWS's signature).
_AUTHORIZATION = re.compile(r"(?i)(\bauthorization\b[\"']?\s*[:=]\s*[\"']?)[^\"'\r\n]+")
_SCHEME = re.compile(r"(?i)\b(bearer|basic|negotiate|aws4-hmac-sha256)(\s+)[^\s\"',;]+(?:[\s,]+(?:SignedHeaders|Signature)=[^\s\"',;]+)*")
_SIGNATURE = re.compile(r"(?i)\b(Credential|Signature|X-Amz-Signature|X-Amz-Credential|X-Amz-Security-Token)=[^\s\"'&,;]+")
# a credential in a URL's query (an SSO redirect's ?access_token=..., a signed URL's &sig=...)
_QUERY = re.compile(r"(?i)([?&#](?:access_token|id_token|refresh_token|token|code|sig|signature|key|password|secret)=)[^&#\s\"']+")


def scrub(text: str, secrets: Iterable[str | None] = ()) -> str:
    """`text` (a server's message) without the given secrets, in any of the forms a server may
    echo them (as sent, JSON-escaped, URL-encoded), any Authorization value or bearer token,
    AWS signatures, or a URL's password. Scrub BEFORE shortening a message: a cut could leave a
    prefix of a secret that no longer matches."""
    for secret in secrets:  # the longest form first: one form may hold another
        if not secret:
            continue
        for form in sorted(encoded_forms(secret) - {""}, key=len, reverse=True):
            text = text.replace(form, "***")
    text = _AUTHORIZATION.sub(lambda m: m.group(1) + "***", text)
    text = _SCHEME.sub(lambda m: m.group(1) + m.group(2) + "***", text)
    text = _SIGNATURE.sub(lambda m: m.group(1) + "=***", text)
    text = _QUERY.sub(lambda m: m.group(1) + "***", text)
    return redact(text) or ""


def short(text: str, secrets: Iterable[str | None] = ()) -> str:
    """A server's message for one line: scrubbed, on one line, at most MESSAGE_LIMIT characters."""
    text = " ".join(scrub(text, secrets).split())
    return text if len(text) <= MESSAGE_LIMIT else text[: MESSAGE_LIMIT - 3] + "..."
