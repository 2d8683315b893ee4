"""backends/remote.py: the bounded request and the scrubbing every deploy target shares (the
deploy tests of each backend run them against misbehaving servers end to end)."""

from __future__ import annotations

import time

import pytest

from dagsmith.backends import remote
from dagsmith.errors import UsageError
from misbehaving import Canned, Trickle, closed_port

TOKEN = "eyJhbGciOiJSUzI1NiJ9.payload+/=sig"


@pytest.mark.parametrize("text", [
    f"token {TOKEN} expired",
    f'{{"message": "bad {TOKEN.replace("/", chr(92) + "/")}"}}',  # JSON-escaped, as a server may echo it
    "next=/api?token=" + TOKEN.replace("+", "%2B").replace("/", "%2F").replace("=", "%3D"),  # URL-encoded
])
def test_scrub_removes_the_secret_in_every_form_a_server_echoes(text):
    assert TOKEN not in remote.scrub(text, [TOKEN]) and "payload" not in remote.scrub(text, [TOKEN])


@pytest.mark.parametrize("text, gone", [
    ("Authorization: Bearer abc.def.ghi", "abc.def"),
    ('{"authorization": "Basic dXNlcjpwYXNz", "x": 1}', "dXNlcjpwYXNz"),
    ("header was bearer zzzzzzzzzzzz", "zzzzzzzzzzzz"),
    ("AWS4-HMAC-SHA256 Credential=AKIDEXAMPLE/20260101/us-east-1/s3/aws4_request, SignedHeaders=host, Signature=f00d", "AKIDEXAMPLE"),
    ("https://sso.example.com/login?state=1&access_token=ya29.secret&x=2", "ya29.secret"),
    ("s3://AKID:wJalrXUtnFEMI@bucket/key", "wJalrXUtnFEMI"),
])
def test_scrub_removes_any_authorization_value(text, gone):
    assert gone not in remote.scrub(text) and "***" in remote.scrub(text)


def test_short_scrubs_before_it_cuts():
    """A secret straddling the length limit would survive as a prefix if cut first."""
    text = "x" * (remote.MESSAGE_LIMIT - 8) + TOKEN
    assert TOKEN[:6] not in remote.short(text, [TOKEN]) and len(remote.short(text, [TOKEN])) <= remote.MESSAGE_LIMIT


@pytest.mark.parametrize("value", ["0", "-1", "abc", "nan", "1e9"])
def test_the_request_timeout_must_be_a_sane_number(monkeypatch, value):
    monkeypatch.setenv(remote.TIMEOUT_ENV, value)
    with pytest.raises(UsageError, match=remote.TIMEOUT_ENV):
        remote.request_timeout()


def test_send_bounds_the_whole_request_and_reports_each_failure():
    trickle = Trickle(interval=0.1, duration=5)
    try:
        started = time.monotonic()
        with pytest.raises(remote.Unreachable, match="no complete answer within 0.5s") as caught:
            remote.send("GET", trickle.url + "/x", timeout=0.5)
        assert time.monotonic() - started < 1.5 and caught.value.sent
    finally:
        trickle.close()
    with pytest.raises(remote.Unreachable) as caught:
        remote.send("GET", closed_port(), timeout=1)
    assert not caught.value.sent  # never connected: certainly not acted on
    page = Canned(302, headers={"Location": "https://sso.example.com/login"})
    try:
        answer = remote.send("GET", page.url, timeout=2, limit=10)  # not followed; its body is over the limit
    except remote.Unreachable as exc:
        assert "more than the 10 bytes" in str(exc)
    else:
        raise AssertionError(answer)
    finally:
        page.close()
    redirect = Canned(302, body=b"", headers={"Location": "https://sso.example.com/login"})
    try:
        answer = remote.send("GET", redirect.url, timeout=2)
        assert answer.status == 302 and answer.location == "https://sso.example.com/login" and redirect.requests == 1
    finally:
        redirect.close()


def test_a_trickled_tls_handshake_is_bounded_too():
    """A server that starts a TLS record (handshake, 16 KB long) and sends its bytes one by one:
    each read gets a byte in time, the handshake never ends; the deadline still does (a guard:
    CPython's ssl module bounds a whole handshake by the socket's timeout, which send sets to
    what is left of the deadline)."""
    import socket
    import threading

    listener = socket.socket()
    listener.bind(("127.0.0.1", 0))
    listener.listen(1)
    stop = threading.Event()

    def serve():
        connection, _ = listener.accept()
        with connection:
            connection.recv(65536)  # the ClientHello
            connection.sendall(b"\x16\x03\x03\x40\x00")  # a handshake record of 16384 bytes follows...
            while not stop.wait(0.1):
                try:
                    connection.sendall(b"\x00")
                except OSError:
                    return

    threading.Thread(target=serve, daemon=True).start()
    try:
        started = time.monotonic()
        with pytest.raises(remote.Unreachable, match="within 0.5s"):
            remote.send("GET", f"https://127.0.0.1:{listener.getsockname()[1]}/", timeout=0.5)
        assert time.monotonic() - started < 1.5
    finally:
        stop.set()
        listener.close()


def test_both_scrubbers_hide_every_encoded_form_of_a_secret():
    """remote.scrub (a server's answer) and errors.hide_value (a client library's error) hide the
    same forms, from one list (errors.encoded_forms): a hidden JSON-escaped form in one and not
    in the other was a leak waiting to happen."""
    import json
    from urllib.parse import quote, quote_plus

    from dagsmith.errors import hide_value

    secret = "s3cr3t/p&ss+w<o>rd"
    forms = [secret, json.dumps(secret)[1:-1].replace("/", "\\/"), quote(secret, safe=""), quote_plus(secret),
             json.dumps(secret)[1:-1].replace("&", "\\u0026").replace("<", "\\u003c").replace(">", "\\u003e")]
    for form in forms:
        text = f"answer: {form} end"
        assert secret not in remote.scrub(text, [secret]) and form not in remote.scrub(text, [secret]), form
        hidden = hide_value(text, secret, "DAGSMITH_CONN_DB")
        assert form not in hidden, (form, hidden)
