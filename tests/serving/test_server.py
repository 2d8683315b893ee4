"""dagsmith serve: a real server on 127.0.0.1 (a free port, in a thread), a real HTTP client,
tiny sklearn registries written through the registry helpers."""

from __future__ import annotations

import json
import threading
import time

import pytest

from dagsmith.runtime import registry
from dagsmith.runtime.data import model_input
from dagsmith.serving import ServingError, make_server, promote, rollback

from serving_testing import (  # noqa: E402
    Client, Exploding, classifier_registry, clf_frame, parse_prometheus, partitioned_registry, raw, reg_frame, rows_of,
    running, write_version,
)


@pytest.fixture
def clf(tmp_path):
    store = classifier_registry(tmp_path / "work")
    return store


def own_predictions(store, model, version, rows, partition=None):
    import pandas as pd

    m = registry.load_model(store, model, version, partition)
    X = model_input(m, pd.DataFrame(rows))
    return m["estimator"].predict(X).tolist(), (m["estimator"].predict_proba(X).tolist() if m["task"] == "classifier" else None)


def test_predictions_equal_the_models_own_predict(clf):
    frame = clf_frame(seed=5)
    rows = rows_of(frame, 40)
    with running(clf.root, "clf", seed=1) as server:
        client = Client(server.url)
        seen = set()
        for attempt in range(60):
            status, response, payload = client.predict(rows)
            assert status == 200, payload
            version = payload["version"]
            assert payload["model"] == "clf"
            assert response.getheader("X-Dagsmith-Version") == str(version)
            preds, probs = own_predictions(clf, "clf", version, rows)
            assert payload["predictions"] == preds
            assert [x for p in payload["probabilities"] for x in (p["0"], p["1"])] == pytest.approx([x for p in probs for x in p])
            seen.add(version)
            if seen == {1, 2}:
                break
        assert seen == {1, 2}
        # a bare list of rows is accepted too; extra columns are ignored
        status, _, payload = client.request("POST", "/predict", [{**rows[0], "unused": "x"}])
        assert status == 200 and len(payload["predictions"]) == 1
        status, _, payload = client.predict([])
        assert status == 200 and payload["predictions"] == []
        client.close()


def test_health(clf):
    with running(clf.root, "clf") as server:
        status, response, payload = Client(server.url).request("GET", "/health")
    assert status == 200
    assert response.getheader("Content-Type") == "application/json"
    assert payload["status"] == "ok" and payload["production"] == 1
    assert payload["canary"] == {"version": 2, "traffic_percent": 10.0}


def test_canary_share_over_2000_requests(clf):
    rows = rows_of(clf_frame(seed=3), 1)
    with running(clf.root, "clf", seed=None) as server:  # a really random router
        client = Client(server.url)
        versions = [client.predict(rows)[2]["version"] for _ in range(2000)]
        client.close()
    share = 100 * versions.count(2) / len(versions)
    assert set(versions) == {1, 2}
    assert abs(share - 10) <= 3, share


def test_sticky_routing_by_request_id(clf):
    rows = rows_of(clf_frame(seed=3), 1)
    with running(clf.root, "clf") as server:
        client = Client(server.url)
        first = {i: client.predict(rows, {"X-Request-Id": f"user-{i}"})[2]["version"] for i in range(400)}
        again = {i: client.predict(rows, {"X-Request-Id": f"user-{i}"})[2]["version"] for i in range(400)}
        client.close()
    assert first == again
    assert 4 <= 100 * list(first.values()).count(2) / 400 <= 16


def test_promote_and_rollback_switch_versions_under_load(clf):
    rows = rows_of(clf_frame(seed=4), 3)
    results, stop = [], threading.Event()

    def load(url):
        client = Client(url)
        while not stop.is_set():
            try:
                status, _, payload = client.predict(rows)
                results.append((status, payload.get("version"), time.monotonic()))
            except Exception as exc:  # a dropped connection is a failure too
                results.append((repr(exc), None, time.monotonic()))
        client.close()

    def wait_for(version, timeout=10.0):
        start = time.monotonic()
        while time.monotonic() - start < timeout:
            recent = [r for r in results if r[2] > switched]
            if len(recent) >= 30 and all(v == version for _, v, _ in recent[-30:]):
                return
            time.sleep(0.02)
        raise AssertionError(f"the server did not switch to version {version}")

    with running(clf.root, "clf", seed=2) as server:
        threads = [threading.Thread(target=load, args=(server.url,)) for _ in range(2)]
        for t in threads:
            t.start()
        try:
            deadline = time.monotonic() + 10
            while len(results) < 60 and time.monotonic() < deadline:  # under load before the first switch
                time.sleep(0.02)
            switched = time.monotonic()
            assert "promoted canary v2" in promote(clf, "clf")["message"]
            wait_for(2)
            switched = time.monotonic()
            assert "rolled back production v2 -> v1" in rollback(clf, "clf")["message"]
            wait_for(1)
            health = Client(server.url).request("GET", "/health")[2]
        finally:
            stop.set()
            for t in threads:
                t.join(10)
        assert server.app.metrics.reloads == 2
    failures = [r for r in results if r[0] != 200]
    assert not failures, failures[:5]
    assert len(results) > 100
    assert health["production"] == 1 and health["canary"] is None
    assert registry.read_aliases(clf, "clf") == {"production": 1, "canary": None, "history": []}


def test_a_broken_aliases_file_keeps_the_old_models_serving(clf):
    rows = rows_of(clf_frame(), 1)
    with running(clf.root, "clf") as server:
        registry.write_aliases(clf, "clf", {"production": 9, "canary": None, "history": []})
        deadline = time.monotonic() + 5
        while server.app.reload_error is None and time.monotonic() < deadline:
            time.sleep(0.02)
        client = Client(server.url)
        assert "version 9" in client.request("GET", "/health")[2]["reload_error"]
        assert client.predict(rows)[0] == 200
        registry.write_aliases(clf, "clf", {"production": 2, "canary": None, "history": [1]})
        deadline = time.monotonic() + 5
        while client.request("GET", "/health")[2]["production"] != 2 and time.monotonic() < deadline:
            time.sleep(0.02)
        assert client.predict(rows)[2]["version"] == 2
        assert client.request("GET", "/health")[2]["reload_error"] is None


def test_malformed_requests_get_4xx_json_with_a_reason(clf):
    row = rows_of(clf_frame(), 1)[0]
    cases = [
        ("POST", "/predict", b"{not json", 400, "not valid JSON"),
        ("POST", "/predict", b"\xff\xfe", 400, "UTF-8"),
        ("POST", "/predict", b"42", 400, "got a JSON number"),
        ("POST", "/predict", b'{"data": []}', 400, "expected a JSON object"),
        ("POST", "/predict", b'{"rows": {"x1": 1}}', 400, "must be a list"),
        ("POST", "/predict", b'{"rows": [1, 2]}', 400, "rows[0] must be an object"),
        ("POST", "/predict", json.dumps({"rows": [{**row, "x1": [1]}]}).encode(), 400, "expected a scalar"),
        ("POST", "/predict", json.dumps({"rows": [row, {"x1": 1.0}]}).encode(), 422, "rows[1] lacks feature columns the model needs: x2, color"),
        ("POST", "/predict", json.dumps([{**row, "x2": "abc"}]).encode(), 422, "rows[0].x2: 'abc' is not a number"),
        ("GET", "/nope", None, 404, "no such path"),
        ("POST", "/", b"{}", 404, "no such path"),
        ("GET", "/predict", None, 405, "GET is not allowed on /predict"),
        ("DELETE", "/predict", None, 405, "not allowed"),
        ("POST", "/health", b"{}", 405, "not allowed"),
        ("PUT", "/metrics", b"x", 405, "not allowed"),
        ("POST", "/predict", b"[" + b" " * 3000 + b"]", 413, "the limit is 1000"),
    ]
    with running(clf.root, "clf", max_body=1000) as server:
        client = Client(server.url)
        for method, path, body, code, reason in cases:
            status, response, payload = client.request(method, path, body)
            assert status == code, (method, path, body, payload)
            assert response.getheader("Content-Type") == "application/json"
            assert isinstance(payload["error"], str) and reason in payload["error"], (payload, reason)
            if code == 405:
                assert response.getheader("Allow")
        # the connection survived all of that (keep-alive) and the server still answers
        assert client.predict([row])[0] == 200
        # a huge declared body is refused before it is read; no Content-Length
        status, headers, payload = raw(server.url, b"POST /predict HTTP/1.1\r\nHost: x\r\nContent-Length: 99999999\r\n\r\n")
        assert status == 413 and "limit" in payload["error"] and headers["connection"] == "close"
        status, _, payload = raw(server.url, b"POST /predict HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n")
        assert status == 411 and "Content-Length" in payload["error"]
        # what the HTTP parser (uvicorn) cannot read at all: its 400, then the connection closes
        for line in (b"POST /predict HTTP/1.1\r\nHost: x\r\nContent-Length: -5\r\n\r\n",
                     b"GET /predict extra HTTP/1.1\r\n\r\n"):
            status, headers, payload = raw(server.url, line)
            assert status == 400 and headers["connection"] == "close" and payload, line
        # an unknown method: the parser's 400 (httptools knows the registered methods) or our 405 (h11)
        status, headers, payload = raw(server.url, b"BREW /predict HTTP/1.1\r\nConnection: close\r\n\r\n")
        assert status in (400, 405), status
        if status == 405:
            assert headers["allow"] == "POST" and "BREW is not allowed" in payload["error"]
        assert client.request("GET", "/health")[0] == 200
        client.close()
        assert not server.logs


def test_internal_prediction_error_is_a_counted_500(tmp_path):
    store = classifier_registry(tmp_path / "work", canary_percent=None)
    good = registry.load_model(store, "clf", 1)
    write_version(store, "clf", 3, [(None, {**good, "estimator": Exploding()})])
    registry.write_aliases(store, "clf", {"production": 3, "canary": None, "history": [1]})
    with running(store.root, "clf") as server:
        client = Client(server.url)
        status, _, payload = client.predict(rows_of(clf_frame(), 2))
        assert status == 500
        assert "RuntimeError: boom" in payload["error"] and payload["version"] == 3
        assert client.request("GET", "/health")[0] == 200
        _, samples = parse_prometheus(client.request("GET", "/metrics")[2])
    assert ("dagsmith_prediction_errors_total", {"model": "clf", "version": "3"}, 1.0) in samples
    assert ("dagsmith_requests_total", {"model": "clf", "version": "3", "code": "500"}, 1.0) in samples


def test_metrics_are_prometheus_text_and_count_the_requests(clf):
    rows = rows_of(clf_frame(), 2)
    with running(clf.root, "clf", seed=7) as server:
        client = Client(server.url)
        sent = {}
        for i in range(40):
            body, code = [(({"rows": rows}), 200), (b"{bad", 400), ({"rows": [{"x1": 1}]}, 422)][i % 3 if i < 15 else 0]
            status, _, payload = client.request("POST", "/predict", body)
            assert status == code
            sent[(payload.get("version") if code == 200 else None, code)] = sent.get((payload.get("version") if code == 200 else None, code), 0) + 1
        client.request("GET", "/health")  # not a prediction: not counted
        status, response, text = client.request("GET", "/metrics")
        client.close()
    assert status == 200
    assert response.getheader("Content-Type").startswith("text/plain; version=0.0.4")
    types, samples = parse_prometheus(text)
    assert types["dagsmith_requests_total"] == "counter"
    assert types["dagsmith_prediction_errors_total"] == "counter"
    assert types["dagsmith_request_duration_seconds"] == "histogram"
    requests = [(labels, value) for name, labels, value in samples if name == "dagsmith_requests_total"]
    assert all(set(labels) == {"model", "version", "code"} and labels["model"] == "clf" for labels, _ in requests)
    by_code = {}
    for labels, value in requests:
        by_code[labels["code"]] = by_code.get(labels["code"], 0) + value
    assert by_code == {"200": 30.0, "400": 5.0, "422": 5.0}
    ok_by_version = {int(labels["version"]): value for labels, value in requests if labels["code"] == "200"}
    assert ok_by_version == {v: n for (v, code), n in sent.items() if code == 200}
    counts = {labels["version"]: value for name, labels, value in samples if name == "dagsmith_request_duration_seconds_count"}
    assert sum(counts.values()) == 40
    for version, count in counts.items():
        buckets = [(labels["le"], value) for name, labels, value in samples
                   if name == "dagsmith_request_duration_seconds_bucket" and labels["version"] == version]
        values = [v for _, v in buckets]
        assert values == sorted(values) and buckets[-1] == ("+Inf", count)
        assert [float(le) for le, _ in buckets[:-1]] == sorted(float(le) for le, _ in buckets[:-1])
        total = [value for name, labels, value in samples if name == "dagsmith_request_duration_seconds_sum" and labels["version"] == version]
        assert len(total) == 1 and 0 < total[0] < 40
    assert ("dagsmith_model_version", {"model": "clf", "alias": "canary"}, 2.0) in samples
    assert ("dagsmith_canary_traffic_percent", {"model": "clf"}, 10.0) in samples


def test_partitioned_model_routes_rows_by_partition(tmp_path):
    store = partitioned_registry(tmp_path / "work")
    frames = {r: reg_frame(r, 0, n=4, seed=9) for r in ("north", "south", "west")}
    rows = []
    for i in range(4):  # interleaved: several partitions in one request
        for region in ("west", "north", "south"):
            row = frames[region].iloc[i]
            rows.append({"region": region, "x": float(row.x), "promo": bool(row.promo)})
    with running(store.root, "demand") as server:
        client = Client(server.url)
        status, _, payload = client.predict(rows)
        assert status == 200, payload
        assert payload["version"] == 2 and "probabilities" not in payload
        for region in ("north", "south", "west"):
            positions = [i for i, r in enumerate(rows) if r["region"] == region]
            expected, _ = own_predictions(store, "demand", 2, [rows[i] for i in positions], region)
            assert [payload["predictions"][i] for i in positions] == pytest.approx(expected)
        # south is v1's model (inherited): slope 3; north is v2's retrained one: slope 2
        by_region = {r: own_predictions(store, "demand", 2, [{"x": 1.0, "promo": False}, {"x": 2.0, "promo": False}], r)[0] for r in ("north", "south")}
        assert by_region["south"][1] - by_region["south"][0] == pytest.approx(3.0, abs=0.05)
        assert by_region["north"][1] - by_region["north"][0] == pytest.approx(2.0, abs=0.05)
        status, _, payload = client.predict([rows[0], {"region": "east", "x": 1.0, "promo": True}])
        assert status == 422 and "unknown partition region='east' in rows[1]" in payload["error"] and "north, south, west" in payload["error"]
        status, _, payload = client.predict([{"x": 1.0, "promo": True}])
        assert status == 422 and "partition column 'region'" in payload["error"]
        status, _, payload = client.predict([{"region": "north", "x": 1.0, "promo": "maybe"}])
        assert status == 422 and "not a boolean" in payload["error"]
        status, _, payload = client.predict([{"region": "north", "x": 1.0}])
        assert status == 422 and "promo" in payload["error"]
        assert client.request("GET", "/health")[2]["partition_by"] == "region"
        client.close()


def test_no_registry_or_no_production_is_a_clear_error(tmp_path):
    with pytest.raises(ServingError, match="not in the registry"):
        make_server(tmp_path, "nothing")
    store = classifier_registry(tmp_path / "w")
    registry.write_aliases(store, "clf", {"production": None, "canary": None, "history": []})
    with pytest.raises(ServingError, match="no production version"):
        make_server(store.root, "clf")
