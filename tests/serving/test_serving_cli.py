"""dagsmith promote / rollback / serve from the command line (a real `dagsmith serve` process),
and the end-to-end path: `dagsmith run` the churn example twice, then serve its registry."""

from __future__ import annotations

import json
import shutil
import subprocess
import sys
import time
import urllib.error
import urllib.request

import pytest

from dagsmith.cli import main
from dagsmith.runtime import registry
from dagsmith.runtime.store import LocalStore

from serving_testing import DAGSMITH, Served, classifier_registry, clf_frame, rows_of  # noqa: E402
from dagsmith_testing import REPO  # noqa: E402


def test_promote_then_rollback(tmp_path, capsys):
    store = classifier_registry(tmp_path)
    assert main(["promote", "clf", "--workdir", str(tmp_path)]) == 0
    assert "promoted canary v2 to production (was v1, now in history); canary cleared" in capsys.readouterr().out
    assert registry.read_aliases(store, "clf") == {"production": 2, "canary": None, "history": [1]}

    assert main(["promote", "clf", "--workdir", str(tmp_path)]) == 2
    assert "model 'clf' has no canary to promote (production is v2)" in capsys.readouterr().err

    assert main(["rollback", "clf", "--workdir", str(tmp_path)]) == 0
    assert "rolled back production v2 -> v1" in capsys.readouterr().out
    assert registry.read_aliases(store, "clf") == {"production": 1, "canary": None, "history": []}

    assert main(["rollback", "clf", "--workdir", str(tmp_path)]) == 2
    assert "has no earlier production version to roll back to" in capsys.readouterr().err
    assert registry.read_aliases(store, "clf") == {"production": 1, "canary": None, "history": []}


def test_rollback_clears_a_canary(tmp_path, capsys):
    store = classifier_registry(tmp_path)
    registry.write_aliases(store, "clf", {"production": 2, "canary": {"version": 1, "traffic_percent": 5}, "history": [1]})
    assert main(["rollback", "clf", "--workdir", str(tmp_path)]) == 0
    assert "canary v1 cleared" in capsys.readouterr().out
    assert registry.read_aliases(store, "clf") == {"production": 1, "canary": None, "history": []}


def test_unknown_model(tmp_path, capsys):
    classifier_registry(tmp_path)
    assert main(["promote", "nope", "--workdir", str(tmp_path)]) == 2
    err = capsys.readouterr().err
    assert "model 'nope' is not in the registry" in err and "(models: clf)" in err


def get(url: str):
    with urllib.request.urlopen(url, timeout=10) as response:
        return response.status, json.loads(response.read())


def post(url: str, payload):
    request = urllib.request.Request(url, data=json.dumps(payload).encode(), headers={"Content-Type": "application/json"})
    try:
        with urllib.request.urlopen(request, timeout=10) as response:
            return response.status, json.loads(response.read())
    except urllib.error.HTTPError as exc:
        return exc.code, json.loads(exc.read())


def test_serve_command_starts_prints_the_url_and_stops_on_ctrl_c(tmp_path):
    classifier_registry(tmp_path)
    served = Served(tmp_path, "clf")
    try:
        assert "production v1, canary v2 at 10%" in served.first_line
        assert served.url.startswith("http://127.0.0.1:")
        assert get(served.url + "/health")[1]["production"] == 1
        status, payload = post(served.url + "/predict", {"rows": rows_of(clf_frame(), 3)})
        assert status == 200 and len(payload["predictions"]) == 3
    finally:
        code, out, err = served.stop()
    assert code == 0 and "stopped" in out
    assert "Traceback" not in err


def test_serve_command_without_the_model_exits_2(tmp_path):
    result = subprocess.run([DAGSMITH, "serve", "churn", "--workdir", str(tmp_path), "--port", "0"],
                            capture_output=True, text=True, timeout=30)
    assert result.returncode == 2
    assert "model 'churn' is not in the registry" in result.stderr and "Traceback" not in result.stderr


@pytest.mark.slow
def test_churn_example_end_to_end(tmp_path):
    """Run the churn example twice (production v1, canary v2 at 10%), serve it, promote."""
    example = tmp_path / "churn"
    example.mkdir()
    for name in ("pipeline.yaml", "make_data.py"):
        shutil.copy(REPO / "examples" / "churn" / name, example / name)
    subprocess.run([sys.executable, "make_data.py"], cwd=example, check=True, capture_output=True)
    workdir = tmp_path / "work"
    for n in range(2):  # the second with another lookback: another model (the same one is "unchanged")
        extra = ["--param", "lookback_days=29"] if n else []
        result = subprocess.run([DAGSMITH, "run", "pipeline.yaml", "--workdir", str(workdir), "--format", "json", *extra],
                                cwd=example, capture_output=True, text=True, timeout=300)
        assert result.returncode == 0, result.stderr[-2000:]
    store = LocalStore(workdir)
    assert registry.read_aliases(store, "churn") == {"production": 1, "canary": {"version": 2, "traffic_percent": 10}, "history": []}

    import pandas as pd

    from dagsmith.runtime.data import model_input

    model = registry.load_model(store, "churn", 1)
    rows = [{c: float(i % 7 + j) for j, c in enumerate(model["encoding"]["features"])} for i in range(20)]
    served = Served(workdir, "churn")
    try:
        versions = set()
        for _ in range(200):
            status, payload = post(served.url + "/predict", {"rows": rows})
            assert status == 200, payload
            own = registry.load_model(store, "churn", payload["version"])
            assert payload["predictions"] == own["estimator"].predict(model_input(own, pd.DataFrame(rows))).tolist()
            versions.add(payload["version"])
            if versions == {1, 2}:
                break
        assert versions == {1, 2}
        assert main(["promote", "churn", "--workdir", str(workdir)]) == 0
        deadline = time.monotonic() + 10
        while get(served.url + "/health")[1]["production"] != 2 and time.monotonic() < deadline:
            time.sleep(0.1)
        assert get(served.url + "/health")[1] == {"status": "ok", "model": "churn", "production": 2, "canary": None,
                                                  "partition_by": None, "reload_error": None}
        assert {post(served.url + "/predict", {"rows": rows})[1]["version"] for _ in range(20)} == {2}
    finally:
        code, out, err = served.stop()
    assert code == 0 and "Traceback" not in err


def test_serve_without_uvicorn_says_what_to_install_and_promote_still_works(tmp_path):
    """`pip install dagsmith` alone has no uvicorn/starlette: serve exits 2 with the extra to
    install; promote and rollback do not need them."""
    classifier_registry(tmp_path)
    code = ("import sys; sys.modules['uvicorn'] = None; sys.modules['starlette'] = None\n"
            "from dagsmith.cli import main\n"
            "sys.exit(main(sys.argv[1:]))")
    result = subprocess.run([sys.executable, "-c", code, "serve", "clf", "--workdir", str(tmp_path), "--port", "0"],
                            capture_output=True, text=True, timeout=60)
    assert result.returncode == 2, result.stderr
    assert "pip install 'dagsmith[serve]'" in result.stderr and "Traceback" not in result.stderr
    result = subprocess.run([sys.executable, "-c", code, "promote", "clf", "--workdir", str(tmp_path)],
                            capture_output=True, text=True, timeout=60)
    assert result.returncode == 0 and "promoted canary v2" in result.stdout, result.stderr


@pytest.mark.parametrize("meanwhile", [False, True])
def test_a_refused_remote_move_puts_back_only_its_own_change(tmp_path, capsys, monkeypatch, meanwhile):
    """promote --target kserve moves the aliases, then the cluster refuses the traffic move: the
    aliases are put back, unless another rollback moved them in between (that one stands).
    The cluster is a stand-in raising as kserve's client would: no cluster runs here."""
    from dagsmith.runtime import deploy_kserve
    from dagsmith.serving import rollback

    store = classifier_registry(tmp_path)
    before = registry.read_aliases(store, "clf")

    def refused(store_, model, aliases):
        if meanwhile:
            rollback(LocalStore(tmp_path), model)  # another operator's rollback lands first
        raise RuntimeError("the cluster refused the traffic move")

    monkeypatch.setattr(deploy_kserve, "move_traffic", refused)
    assert main(["promote", "clf", "--workdir", str(tmp_path), "--target", "kserve"]) != 0
    after = registry.read_aliases(store, "clf")
    if meanwhile:  # the rollback's result, from production v2 (the promote) back to v1
        assert after == {"production": 1, "canary": None, "history": []}
    else:
        assert after == before
