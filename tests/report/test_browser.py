"""The report in a real browser (headless Chromium over the DevTools protocol): the churn
example's runs (a first run, a second one with cached steps and a champion/challenger gate),
a gated run and a failed run: every step drawn with its state, the selected trial marked, the
gate's outcome shown, a screenshot taken, and no request leaving the page. Then a run of 2,000
fan-out items: under 2 MB and rendered quickly."""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

from browser import Browser, find_chromium
from fakerun import HOSTILE, make_run, sweep_spec

pytestmark = pytest.mark.slow

RENDER_BOUND = 6.0  # seconds; the goal is 3 s (benchmarks/report.py measures it), this allows a busy CI machine


@pytest.fixture(scope="module")
def browser():
    if find_chromium() is None:
        if os.environ.get("CI"):
            pytest.fail("no chromium on PATH: `make test` installs Debian's chromium (make chromium)")
        pytest.skip("no chromium on PATH (apt-get install chromium, or make chromium)")
    with Browser() as b:
        yield b


def dagsmith(*args, cwd) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "-m", "dagsmith.cli", *args], cwd=cwd, capture_output=True, text=True, timeout=600)


@pytest.fixture(scope="module")
def churn(example_copy, tmp_path_factory):
    """Four runs of a copy of examples/churn in one workdir: first, second (cached, compared to
    the first's production model, which it equals: its deploy is "unchanged"), gated (gate threshold 0.99), failed (a row count validation
    that cannot pass)."""
    folder = tmp_path_factory.mktemp("report") / "churn"
    shutil.copytree(example_copy("churn"), folder)
    text = (folder / "pipeline.yaml").read_text(encoding="utf-8")
    gated = text.replace("- {metric: roc_auc, op: \">=\", value: 0.75}", "- {metric: roc_auc, op: \">=\", value: 0.99}")
    failed = text.replace("{min_value: 1000, max_value: 5000000}", "{min_value: 1000000, max_value: 5000000}") \
        .replace("retries: 2\n", "retries: 0\n")  # fail at once, not after the retries' 5 minutes
    assert gated != text and failed != text
    (folder / "gated.yaml").write_text(gated, encoding="utf-8")
    (folder / "failed.yaml").write_text(failed, encoding="utf-8")
    runs = {}
    for name, spec, code in (("first", "pipeline.yaml", 0), ("second", "pipeline.yaml", 0), ("gated", "gated.yaml", 0), ("failed", "failed.yaml", 1)):
        as_json = ("--format", "json") if name == "second" else ()
        result = dagsmith("run", spec, "--workdir", "wd", *as_json, cwd=folder)
        assert result.returncode == code, result.stderr[-2000:]
        if as_json:  # stdout stays the record alone; the report's path goes to stderr
            assert json.loads(result.stdout)["status"] == "succeeded" and "report: " in result.stderr
        report = [line for line in (result.stdout + result.stderr).splitlines() if line.startswith("report: ")]
        assert len(report) == 1, result.stdout[-2000:]
        path = folder / report[0][len("report: "):]
        record = json.loads((path.parent / "run.json").read_text(encoding="utf-8"))
        runs[name] = (path, record)
    return folder, runs


def drawn_steps(b: Browser) -> dict:
    return b.evaluate("Object.fromEntries([...document.querySelectorAll('svg.dag g.step')]"
                      ".filter(g => g.getBoundingClientRect().width > 0).map(g => [g.dataset.step, g.dataset.state]))")


def open_report(b: Browser, path: Path, shot: Path) -> float:
    html = path.read_text(encoding="utf-8")
    assert "://" not in html  # nothing external named in the file
    seconds = b.open(path.as_uri())
    assert b.requests() == [path.as_uri()]  # the page asked for nothing but itself
    b.screenshot(shot)
    assert shot.stat().st_size > 20_000
    return seconds


def expected_states(record: dict) -> dict:
    states = {sid: e["state"] for sid, e in record["steps"].items()}
    if record["status"] == "gated":
        states["gate"] = "gated"
    return states


def test_churn_reports(browser, churn, tmp_path):
    folder, runs = churn
    for name in ("first", "second"):
        path, record = runs[name]
        open_report(browser, path, tmp_path / f"{name}.png")
        assert drawn_steps(browser) == expected_states(record)
        assert browser.evaluate("document.getElementById('run-status').dataset.status") == "succeeded"
        chosen = json.loads((path.parent / "steps" / "select" / "selection.json").read_text())[0]["index"] if name == "first" else None
        rows = browser.evaluate("[...document.querySelectorAll('table.trials tr.selected')].map(r => [r.dataset.index, r.innerText])")
        assert len(rows) == 1 and "selected" in rows[0][1]
        if chosen is not None:
            assert rows[0][0] == str(chosen)
        assert browser.evaluate("document.querySelectorAll('svg.scatter circle.sel').length") == 2  # learning_rate, max_depth
        assert browser.evaluate("document.querySelector('.gate-outcome').dataset.outcome") == "passed"
        deployed = browser.evaluate("document.querySelector('#deployment [data-deployed]').dataset.deployed")
        assert deployed == ("true" if name == "first" else "unchanged")
    first, second = runs["first"][1], runs["second"][1]
    assert "cached" in {e["state"] for e in second["steps"].values()}
    # the first run's timeline has the sweep's items; the second compares with the first's production model
    browser.open(runs["first"][0].as_uri())
    items = browser.evaluate("document.querySelectorAll('svg.gantt rect.item').length")
    assert items == first["steps"]["train"]["items"]["total"] == 6
    browser.open(runs["second"][0].as_uri())
    gates = browser.evaluate("[...document.querySelectorAll('tr.gate-check')].map(r => r.innerText)")
    assert any("production v1 = " in g for g in gates), gates
    assert "unchanged, version 1" in browser.evaluate("document.getElementById('deployment').innerText")


def test_gated_report(browser, churn, tmp_path):
    path, record = churn[1]["gated"]
    assert record["status"] == "gated"
    open_report(browser, path, tmp_path / "gated.png")
    assert drawn_steps(browser) == expected_states(record)
    assert drawn_steps(browser)["gate"] == "gated" and drawn_steps(browser)["deploy"] == "skipped"
    assert browser.evaluate("document.querySelector('.gate-outcome').dataset.outcome") == "gated"
    outcomes = browser.evaluate("[...document.querySelectorAll('tr.gate-check')].map(r => r.dataset.outcome)")
    assert "failed" in outcomes
    assert browser.evaluate("document.querySelectorAll('table.trials tr.selected').length") == 1


def test_failed_report(browser, churn, tmp_path):
    path, record = churn[1]["failed"]
    assert record["status"] == "failed"
    open_report(browser, path, tmp_path / "failed.png")
    drawn = drawn_steps(browser)
    assert drawn == expected_states(record) and drawn["churn_features_complete"] == "failed" and drawn["train"] == "skipped"
    assert "churn_features_complete" in browser.evaluate("document.getElementById('errors').innerText")
    failing = browser.evaluate("[...document.querySelectorAll('tr.expectation[data-success=false]')].map(r => r.innerText)")
    assert len(failing) == 1 and "expect_table_row_count_to_be_between" in failing[0] and "observed" in failing[0]


def test_graph_page_in_browser(browser, churn, tmp_path):
    folder, _ = churn
    result = dagsmith("graph", "pipeline.yaml", "--format", "html", cwd=folder)
    page = tmp_path / "graph.html"
    page.write_text(result.stdout, encoding="utf-8")
    browser.open(page.as_uri())
    assert browser.requests() == [page.as_uri()]
    drawn = drawn_steps(browser)
    assert set(drawn) >= {"customers", "train", "gate", "deploy", "notify"} and set(drawn.values()) == {"planned"}


def test_hostile_run_data_runs_nothing_in_the_browser(browser, tmp_path):
    run_id = make_run(tmp_path, sweep_spec({"C": [0.1, 1.0]}, ["de", "fr"]), hostile=True)
    path = Path(dagsmith("report", run_id, "--workdir", str(tmp_path), cwd=tmp_path).stdout.strip())
    open_report(browser, path, tmp_path / "hostile.png")
    assert browser.evaluate("window.__pwned === undefined && document.images.length === 0")
    assert HOSTILE in browser.evaluate("document.body.innerText")  # shown as the text it is


def test_2000_items_open_quickly(browser, tmp_path):
    run_id = make_run(tmp_path, sweep_spec({"C": [0.01, 0.1, 1.0, 10.0, 100.0], "tol": [1e-4, 1e-3, 1e-2, 0.1]},
                                           [f"region-{i}" for i in range(100)]))
    result = dagsmith("report", run_id, "--workdir", str(tmp_path), cwd=tmp_path)
    path = Path(result.stdout.strip())
    assert result.returncode == 0 and path.stat().st_size < 2_000_000
    seconds = min(open_report(browser, path, tmp_path / "big.png") for _ in range(2))
    assert seconds < RENDER_BOUND, seconds
    assert browser.evaluate("document.querySelectorAll('table.trials tbody tr').length") == 2000
    assert browser.evaluate("document.querySelectorAll('table.trials tr.selected').length") == 100
    assert browser.evaluate("document.querySelectorAll('svg.gantt rect.item').length") == 2000
