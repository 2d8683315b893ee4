"""dagsmith serve under bad input and load: every malformed request or value gets a 4xx that says
what is wrong, a stalled body gets a 408, garbage request lines a 400, concurrent clients with a
new connection each get no error, a shutdown lets the requests in flight finish, and with
several workers /metrics counts the requests of all of them.

Servers are real: uvicorn on 127.0.0.1 in a thread (`running`) or `dagsmith serve` in a
subprocess (`Served`). Every load loop is bounded in count and time."""

from __future__ import annotations

import http.client
import json
import shutil
import signal
import socket
import subprocess
import threading
import time
from concurrent.futures import ThreadPoolExecutor

import pytest

from dagsmith.runtime import registry
from dagsmith.serving.jsonbody import MAX_DEPTH, RequestError, loads, max_depth

from serving_testing import (  # noqa: E402
    Client, Served, classifier_registry, clf_frame, parse_prometheus, raw, rows_of, running, sleepy_registry,
)

ROW = '{"x1": %s, "x2": 0.5, "color": "red"}'


@pytest.fixture
def clf(tmp_path):
    return classifier_registry(tmp_path / "work", canary_percent=None)  # v1 LogisticRegression only


def body_with(value: str) -> bytes:
    return ('{"rows": [' + ROW % value + "]}").encode()


BAD_VALUES = [
    # (the JSON text of x1, status, what the reason says)
    ("NaN", 400, "rows[0].x1: NaN is not valid JSON"),
    ("Infinity", 400, "rows[0].x1: Infinity is not valid JSON"),
    ("-Infinity", 400, "rows[0].x1: -Infinity is not valid JSON"),
    ("1e999", 422, "rows[0].x1: the number is out of range"),
    ("-1e999", 422, "rows[0].x1: the number is out of range"),
    ("1" * 4000, 422, "rows[0].x1: 11111111111111111111... (4000 characters) is out of range"),
    ("-" + "9" * 5000, 422, "(5001 characters) is out of range"),  # past Python's 4,300-digit int limit
    ('"inf"', 422, "rows[0].x1: 'inf' is not a finite number"),
    ('"1e999"', 422, "rows[0].x1: '1e999' is not a finite number"),
    ('"NaN"', 422, "rows[0].x1: 'NaN' is not a number"),
    ("null", 422, "the model cannot take these values: Input X contains NaN"),  # LogisticRegression takes no NaN
]


def test_non_finite_and_huge_numbers_get_4xx_with_the_row_and_column(clf):
    with running(clf.root, "clf") as server:
        client = Client(server.url)
        for value, code, reason in BAD_VALUES:
            status, response, payload = client.request("POST", "/predict", body_with(value))
            assert status == code, (value[:20], payload)
            assert response.getheader("Content-Type") == "application/json"
            assert reason in payload["error"], (value[:20], payload)
        # in range: integers past 64 bits become floats, big finite floats pass
        for value in ("123456789012345678901", "9223372036854775807", "-9223372036854775808", "1e300", "12"):
            status, _, payload = client.request("POST", "/predict", body_with(value))
            assert status == 200, (value, payload)
        # the same connection is still usable, nothing was a server error
        assert client.predict(rows_of(clf_frame(), 2))[0] == 200
        _, samples = parse_prometheus(client.request("GET", "/metrics")[2])
        client.close()
    codes = {labels["code"]: value for name, labels, value in samples if name == "dagsmith_requests_total"}
    assert codes == {"200": 6.0, "400": 3.0, "422": 8.0}
    assert not [s for s in samples if s[0] == "dagsmith_prediction_errors_total"]


@pytest.mark.filterwarnings("ignore:overflow encountered in cast:RuntimeWarning")  # numpy, casting 1e300 to float32
def test_a_value_too_large_for_a_float32_tree_is_a_422(tmp_path):
    store = classifier_registry(tmp_path / "work", canary_percent=None)
    registry.write_aliases(store, "clf", {"production": 2, "canary": None, "history": [1]})  # DecisionTree
    with running(store.root, "clf") as server:
        client = Client(server.url)
        status, _, payload = client.request("POST", "/predict", body_with("1e300"))
        client.close()
    assert status == 422 and "the model cannot take these values" in payload["error"] and "float32" in payload["error"]


def test_deeply_nested_json_is_a_400_before_it_is_parsed(clf):
    deep_array = b"[" * 100_000 + b"]" * 100_000
    deep_object = b'{"rows": [' + b'{"a": ' * 70 + b"1" + b"}" * 70 + b"]}"
    brackets_in_strings = ('{"rows": [' + ROW % ('"' + "[" * 5000 + '"') + "]}").encode()  # text, not nesting
    with running(clf.root, "clf") as server:
        client = Client(server.url)
        for body, depth in ((deep_array, 100_000), (deep_object, 72)):
            status, _, payload = client.request("POST", "/predict", body)
            assert status == 400, payload
            assert f"nests arrays and objects {depth} levels deep; the limit is {MAX_DEPTH}" in payload["error"]
        status, _, payload = client.request("POST", "/predict", brackets_in_strings)
        assert status == 422 and "is not a number" in payload["error"]
        assert client.predict(rows_of(clf_frame(), 1))[0] == 200
        client.close()


def test_the_bounded_parser():
    assert max_depth(b'{"rows": [{"a": "[[[{{{", "b": [1, [2]]}]}') == 5
    assert max_depth(b'"\\"[[[["') == 0  # an escaped quote does not end the string
    assert max_depth(b"") == 0
    assert loads(b"[" * MAX_DEPTH + b"]" * MAX_DEPTH) is not None
    with pytest.raises(RequestError) as info:
        loads(b"[" * (MAX_DEPTH + 1) + b"]" * (MAX_DEPTH + 1))
    assert info.value.status == 400
    assert loads(b"[12, -3, 123456789012345678901, 18446744073709551616]") == [12, -3, 1.2345678901234568e20, 2.0**64]
    assert type(loads(b"9223372036854775807")) is int
    for text in (b"\xff", b"{", b"[1,]"):
        with pytest.raises(RequestError) as info:
            loads(text)
        assert info.value.status == 400


def read_all(sock: socket.socket) -> bytes:
    data = b""
    while chunk := sock.recv(65536):
        data += chunk
    return data


@pytest.mark.parametrize("request_line", [
    b"HELLO\r\n\r\n",
    b"GET /x HTTP/9.9\r\nHost: x\r\n\r\n",
    b"GET /health HTTP/2.0\r\nHost: x\r\n\r\n",  # parsed by httptools: refused by the app, JSON
    b"\x16\x03\x01\x02\x00\x01\x00\x01\xfc\x03\x03" + bytes(64) + b"\r\n\r\n",  # a TLS hello on the HTTP port
])
def test_a_garbage_request_line_gets_a_400_and_the_connection_closes(clf, request_line):
    with running(clf.root, "clf") as server:
        status, headers, payload = raw(server.url, request_line, timeout=10)
        assert status == 400, payload
        assert headers["connection"] == "close"
        assert payload  # a reason: uvicorn's text, or {"error": ...}
        if isinstance(payload, dict):
            assert "HTTP/2.0 is not supported" in payload["error"]
        assert Client(server.url).request("GET", "/health")[0] == 200


def _refused(sock: socket.socket, data: bytes) -> bytes:
    """Send `data` (the server may close before all of it is read), then read the answer."""
    try:
        sock.sendall(data)
    except (BrokenPipeError, ConnectionResetError):
        pass
    answer = b""
    try:
        while chunk := sock.recv(65536):
            answer += chunk
    except ConnectionResetError:
        pass
    return answer


def test_the_request_head_is_bounded_in_fields_and_bytes(clf):
    """Issue 22, finding 11: 16 MB of 5-byte headers were all kept (392 MB more memory) and the
    request served. Past 100 fields or 32 KiB of head: 431, past 8 KiB of target: 414, and the
    connection is closed, whether the head comes at once, in many sends, or as one endless field."""
    from dagsmith.serving.asgi import MAX_HEAD_BYTES, MAX_HEADER_COUNT, MAX_TARGET_BYTES

    start = b"POST /predict HTTP/1.1\r\nHost: x\r\n"
    body = json.dumps({"rows": rows_of(clf_frame(), 1)}).encode()
    end = b"Content-Type: application/json\r\nContent-Length: %d\r\n\r\n%s" % (len(body), body)
    many = b"".join(b"a%d: b\r\n" % n for n in range(MAX_HEADER_COUNT))  # with Host: one too many
    fat = b"x-fat: " + b"a" * MAX_HEAD_BYTES + b"\r\n"
    cases = [
        (start + many + end, b"431 ", b"more than 100 header fields"),
        (start + fat + end, b"431 ", b"over 32768 bytes"),
        (b"GET /health?" + b"q" * MAX_TARGET_BYTES + b" HTTP/1.1\r\nHost: x\r\n\r\n", b"414 ", b"over 8192 bytes"),
    ]
    with running(clf.root, "clf") as server:
        host, port = server.server_address
        for data, status, reason in cases:
            with socket.create_connection((host, port), timeout=15) as sock:
                answer = _refused(sock, data)
            head, _, text = answer.partition(b"\r\n\r\n")
            assert head.startswith(b"HTTP/1.1 " + status), answer[:300]
            assert b"connection: close" in head.lower() and reason in text, answer[:300]
        # 16 MB of 5-byte headers in 64 KiB sends: refused after the first few, not all kept
        with socket.create_connection((host, port), timeout=15) as sock:
            sock.sendall(start)
            line, sent, answer = b"a: b\r\n" * (64 * 1024 // 6), 0, b""
            try:
                while sent < 16 * 1024 * 1024:
                    sock.sendall(line)
                    sent += len(line)
            except (BrokenPipeError, ConnectionResetError):
                pass
            answer = _refused(sock, b"")
            assert sent < 16 * 1024 * 1024 and answer.startswith(b"HTTP/1.1 431 "), (sent, answer[:200])
        # one header field that never ends, sent in pieces: refused once past the bound
        with socket.create_connection((host, port), timeout=15) as sock:
            sock.sendall(start + b"x-endless: ")
            sent = 0
            try:
                while sent < 16 * 1024 * 1024:
                    sock.sendall(b"a" * 65536)
                    sent += 65536
                    time.sleep(0.001)
            except (BrokenPipeError, ConnectionResetError):
                pass
            answer = _refused(sock, b"")
            assert sent < 16 * 1024 * 1024 and answer.startswith(b"HTTP/1.1 431 "), (sent, answer[:200])
        # none of the refused requests reached the model
        client = Client(server.url)
        _, samples = parse_prometheus(client.request("GET", "/metrics")[2])
        assert not [s for s in samples if s[0] == "dagsmith_requests_total"], samples
        # within the bounds: served as before (100 fields, Host included)
        within = start + b"".join(b"a%d: b\r\n" % n for n in range(MAX_HEADER_COUNT - 3)) + end
        with socket.create_connection((host, port), timeout=15) as sock:
            sock.sendall(within)
            answer = sock.recv(65536)
        assert answer.startswith(b"HTTP/1.1 200 "), answer[:300]
        assert client.request("GET", "/health")[0] == 200
        client.close()


def test_a_stalled_body_gets_a_408_and_does_not_block_others(clf):
    with running(clf.root, "clf", read_timeout=1.0) as server:
        host, port = server.server_address
        started = time.monotonic()
        with socket.create_connection((host, port), timeout=15) as sock:
            sock.sendall(b"POST /predict HTTP/1.1\r\nHost: x\r\nContent-Length: 100\r\n\r\n0123456789")
            # meanwhile the server answers others at once
            client = Client(server.url, timeout=5)
            assert client.predict(rows_of(clf_frame(), 1))[0] == 200
            client.close()
            answer = read_all(sock)  # the server closes the connection after its answer
        elapsed = time.monotonic() - started
        head, _, body = answer.partition(b"\r\n\r\n")
        assert head.startswith(b"HTTP/1.1 408 "), answer
        assert b"connection: close" in head.lower()
        reason = json.loads(body)["error"]
        assert "the body stalled: no data for 1 s after 10 of 100 bytes" in reason
        assert 0.9 <= elapsed < 8, elapsed
        # a chunked body that stalls between chunks: the same
        with socket.create_connection((host, port), timeout=15) as sock:
            sock.sendall(b"POST /predict HTTP/1.1\r\nHost: x\r\nTransfer-Encoding: chunked\r\n\r\n5\r\n[1, 2\r\n")
            answer = read_all(sock)
        assert answer.startswith(b"HTTP/1.1 408 ") and b"after 5 bytes" in answer
        # a request line or headers that never end: 408 too; a connection that sends nothing: closed
        for data, expected in ((b"POST /predict HTTP/1.1\r\nHost: x\r\nContent-Le", b"HTTP/1.1 408 "),
                               (b"GET /hea", b"HTTP/1.1 408 "), (b"", b"")):
            started = time.monotonic()
            with socket.create_connection((host, port), timeout=15) as sock:
                sock.sendall(data)
                answer = read_all(sock)
            assert answer.startswith(expected) and (not expected or b"the request stalled" in answer), answer
            assert time.monotonic() - started < 8


def test_a_chunked_body_is_read_within_the_limit(clf):
    rows = rows_of(clf_frame(), 2)
    body = json.dumps({"rows": rows}).encode()
    with running(clf.root, "clf", max_body=1000) as server:
        host, port = server.server_address
        chunked = b"".join(b"%x\r\n%s\r\n" % (len(part), part) for part in (body[:20], body[20:])) + b"0\r\n\r\n"
        status, _, payload = raw(server.url, b"POST /predict HTTP/1.1\r\nHost: x\r\nConnection: close\r\n"
                                             b"Transfer-Encoding: chunked\r\n\r\n" + chunked)
        assert status == 200 and len(payload["predictions"]) == 2
        big = b"[" + b" " * 2000 + b"]"
        status, headers, payload = raw(server.url, b"POST /predict HTTP/1.1\r\nHost: x\r\nTransfer-Encoding: chunked\r\n\r\n"
                                                   + b"%x\r\n%s\r\n0\r\n\r\n" % (len(big), big))
        assert status == 413 and "the limit" in payload["error"] and headers["connection"] == "close"


def new_connection_predict(url: str, body: bytes) -> int | str:
    host, port = url.removeprefix("http://").split(":")
    conn = http.client.HTTPConnection(host, int(port), timeout=30)
    try:
        conn.request("POST", "/predict", body=body, headers={"Connection": "close", "Content-Type": "application/json"})
        response = conn.getresponse()
        response.read()
        return response.status
    except Exception as exc:  # refused, reset, timed out: an error like any other
        return repr(exc)
    finally:
        conn.close()


def test_50_concurrent_clients_with_a_new_connection_each_get_no_error(tmp_path):
    store = classifier_registry(tmp_path / "work")  # production v1, canary v2 at 10 %
    body = json.dumps({"rows": rows_of(clf_frame(), 1)}).encode()
    served = Served(store.root, "clf")
    try:
        with ThreadPoolExecutor(50) as pool:
            results = list(pool.map(lambda _: new_connection_predict(served.url, body), range(200), timeout=120))
        client = Client(served.url)
        _, samples = parse_prometheus(client.request("GET", "/metrics")[2])
        client.close()
    finally:
        code, _, err = served.stop()
    errors = [r for r in results if r != 200]
    assert not errors, errors[:5]
    assert sum(v for name, labels, v in samples if name == "dagsmith_requests_total" and labels["code"] == "200") == 200
    assert code == 0 and "Traceback" not in err


def slow_request(url: str, out: list) -> None:
    out.append(new_connection_predict(url, json.dumps({"rows": rows_of(clf_frame(), 3)}).encode()))


@pytest.mark.parametrize("workers,signum", [(1, signal.SIGTERM), (1, signal.SIGINT), (2, signal.SIGTERM)])
def test_a_shutdown_finishes_the_request_in_flight(tmp_path, workers, signum):
    """predict takes 2 s; the signal comes while a request is in it: it still gets its 200."""
    sleepy_registry(tmp_path / "work", seconds=2.0)
    served = Served(tmp_path / "work", "slow", "--workers", str(workers))
    try:
        results: list = []
        thread = threading.Thread(target=slow_request, args=(served.url, results))
        thread.start()
        time.sleep(0.8)  # the request is in predict now
        assert not results
        started = time.monotonic()
        served.send(signum)
        thread.join(30)
    finally:
        code, out, err = served.stop(None if results else signal.SIGKILL, timeout=60)
    assert results == [200], (results, err[-2000:])
    assert time.monotonic() - started >= 0.5  # it waited for the prediction
    assert code == 0, err[-2000:]
    assert "stopped" in out and "Traceback" not in err, err[-3000:]


def test_several_workers_count_every_request_in_metrics(tmp_path):
    store = classifier_registry(tmp_path / "work")  # production v1, canary v2 at 10 %
    body = json.dumps({"rows": rows_of(clf_frame(), 1)}).encode()
    served = Served(store.root, "clf", "--workers", "2")
    try:
        host, port = served.url.removeprefix("http://").split(":")

        def get(method, path, payload=None):
            conn = http.client.HTTPConnection(host, int(port), timeout=30)
            try:
                conn.request(method, path, body=payload, headers={"Connection": "close"})
                response = conn.getresponse()
                return response.status, response.getheader("X-Dagsmith-Worker"), response.getheader("X-Dagsmith-Version"), response.read()
            finally:
                conn.close()

        workers, versions, sent = set(), {}, 0
        with ThreadPoolExecutor(8) as pool:
            while sent < 400 and (len(workers) < 2 or sent < 100):  # until both workers answered: bounded
                for status, worker, version, _ in pool.map(lambda _: get("POST", "/predict", body), range(20), timeout=60):
                    assert status == 200
                    workers.add(worker)
                    versions[version] = versions.get(version, 0) + 1
                sent += 20
        assert workers == {"1", "2"}, workers
        scraped_by = set()
        for scrape in range(100):  # each scrape, whichever worker answers it, counts every request
            status, worker, _, text = get("GET", "/metrics")
            assert status == 200
            scraped_by.add(worker)
            _, samples = parse_prometheus(text.decode())
            by_version = {labels["version"]: v for name, labels, v in samples
                          if name == "dagsmith_requests_total" and labels["code"] == "200"}
            assert by_version == {k: float(v) for k, v in versions.items()}, (worker, by_version, versions)
            counts = sum(v for name, labels, v in samples if name == "dagsmith_request_duration_seconds_count")
            assert counts == sent
            if len(scraped_by) == 2 and scrape >= 10:
                break
        assert scraped_by == {"1", "2"}
    finally:
        code, _, err = served.stop()
    assert code == 0 and "Traceback" not in err


def test_the_graceful_timeout_bounds_a_slow_prediction(tmp_path):
    """A prediction still running when the graceful timeout ends: a 503 that says so."""
    sleepy_registry(tmp_path / "work", seconds=4.0)
    results: list = []
    with running(tmp_path / "work", "slow", graceful_timeout=0.5) as server:
        client = Client(server.url, timeout=30)
        thread = threading.Thread(target=lambda: results.append(client.predict(rows_of(clf_frame(), 1))))
        thread.start()
        time.sleep(0.5)
        started = time.monotonic()
        server.stop()
        thread.join(30)
    assert time.monotonic() - started < 3.5
    (status, _, payload), = results
    assert status == 503 and "graceful shutdown timeout" in payload["error"]


@pytest.mark.skipif(not shutil.which("ss"), reason="needs ss (iproute2) to read the listen queue size")
def test_backlog_and_workers_options(tmp_path):
    store = classifier_registry(tmp_path / "work")
    served = Served(store.root, "clf", "--backlog", "77", "--workers", "2", "--read-timeout", "5")
    try:
        port = served.url.rsplit(":", 1)[1]
        listing = subprocess.run(["ss", "-ltnH", f"sport = :{port}"], capture_output=True, text=True, timeout=30).stdout
        # LISTEN Recv-Q Send-Q ...: for a listening socket Send-Q is the backlog
        assert [line.split()[2] for line in listing.splitlines()] == ["77"], listing
        assert "2 workers" in served.process.stdout.readline()
    finally:
        code, _, err = served.stop()
    assert code == 0 and "Traceback" not in err


def test_the_numeric_fast_path_builds_the_same_model_input_as_the_general_path():
    import pandas as pd
    from pandas.testing import assert_frame_equal

    from dagsmith.runtime.data import model_input
    from dagsmith.runtime.scoring import _coerce, _numeric_input

    features = ["a", "b", "c"]
    model = {"encoding": {"features": features, "categorical": [], "boolean": [], "duration": []}, "columns": features}
    cases = [
        [{"a": 1, "b": 2.5, "c": -3}, {"a": 4, "b": 5, "c": None}],
        [{"a": 0, "b": 1e300, "c": 7.0}],
        [{"a": 2**62, "b": None, "c": 1}, {"a": -1, "b": 0.5, "c": 2}],
    ]
    for rows in cases:
        fast = _numeric_input(model, rows, features)
        frame = pd.DataFrame([{c: row[c] for c in features} for row in rows], columns=features)
        slow = model_input(model, _coerce(frame, model["encoding"], list(range(len(rows)))))
        assert fast is not None
        assert_frame_equal(fast, slow)
    # text, booleans, a column of nulls only, or an encoding that is not the identity: the general path
    assert _numeric_input(model, [{"a": "1", "b": 2, "c": 3}], features) is None
    assert _numeric_input(model, [{"a": True, "b": 2, "c": 3}], features) is None
    assert _numeric_input(model, [{"a": None, "b": 2, "c": 3}], features) is None
    assert _numeric_input({**model, "columns": ["b", "a", "c"]}, [{"a": 1, "b": 2, "c": 3}], features) is None
