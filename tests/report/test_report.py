"""The run report and the graph picture without a browser: layout, escaping of hostile run
data, no external URL, the sweep's marks and plots, states, size, and the commands."""

from __future__ import annotations

import json
import random
import time
import xml.etree.ElementTree as ET
from html.parser import HTMLParser

import pytest

from dagsmith.cli import main
from dagsmith.report import collect, render, write_report
from dagsmith.report.layout import layered
from fakerun import HOSTILE, make_run, sweep_spec

CHURN = "examples/churn/pipeline.yaml"
GRID = {"C": [0.01, 0.1, 1.0, 10.0], "penalty": ["l1", "l2"]}


class Tags(HTMLParser):
    """Every start tag with its attributes, and the text of each <script>."""

    def __init__(self):
        super().__init__(convert_charrefs=True)
        self.tags: list[tuple[str, dict]] = []
        self.scripts: list[str] = []
        self._in_script = False

    def handle_starttag(self, tag, attrs):
        self.tags.append((tag, dict(attrs)))
        self._in_script = tag == "script"

    def handle_endtag(self, tag):
        self._in_script = False

    def handle_data(self, data):
        if self._in_script:
            self.scripts.append(data)


def parse(html: str) -> Tags:
    tags = Tags()
    tags.feed(html)
    return tags


def report_of(tmp_path, spec_text, **kwargs) -> tuple[str, str]:
    run_id = make_run(tmp_path, spec_text, **kwargs)
    return run_id, write_report(tmp_path, run_id).read_text(encoding="utf-8")


def test_layout_layers_edges_downward_and_is_deterministic():
    rng = random.Random(3)
    nodes = [f"n{i}" for i in range(300)]
    edges = sorted({(nodes[a], nodes[b]) for b in range(1, 300) for a in rng.sample(range(b), min(b, 2))})
    first = layered(nodes, edges)
    assert first == layered(nodes, edges)
    assert all(first[up].layer < first[down].layer for up, down in edges)
    assert len({(p.layer, p.row) for p in first.values()}) == len(nodes)  # no two steps on one spot


def test_layout_time_grows_about_linearly():
    def seconds(size: int) -> float:
        nodes = [f"n{i}" for i in range(size)]
        edges = [(nodes[i - 1 - (i % 3)], nodes[i]) for i in range(4, size)] + [(nodes[i // 2], nodes[i]) for i in range(2, size)]
        best = float("inf")
        for _ in range(3):  # the best of 3: a shared machine's noise only ever adds
            started = time.process_time()
            layered(nodes, edges)
            best = min(best, time.process_time() - started)
        return best

    small, big = seconds(2_000), seconds(16_000)
    assert big < 10.0 and big < small * 8 * 3  # 8x the steps: well under a quadratic 64x


def test_hostile_run_data_is_text_never_markup(tmp_path):
    _, html = report_of(tmp_path, sweep_spec(GRID, ["de", "fr"]), hostile=True)
    assert HOSTILE not in html and "<script>window" not in html and "<img" not in html
    tags = parse(html)
    assert not [(t, a) for t, a in tags.tags for name in a if name.startswith("on")]  # no event handler attribute
    scripts = [a for t, a in tags.tags if t == "script"]
    assert scripts == [{"type": "application/json", "id": "dagsmith-summary"}]
    assert json.loads(tags.scripts[0])["status"] == "succeeded" and "<" not in tags.scripts[0]
    # the hostile values are shown, as text: a partition, a param, a validation argument and its failing value, a note
    text = html.replace("&amp;", "&")
    assert text.count("&lt;/script&gt;&lt;script&gt;window.__pwned=1") >= 4


def test_no_external_url_and_nothing_to_fetch(tmp_path):
    _, html = report_of(tmp_path, sweep_spec(GRID, None))
    assert "://" not in html
    for tag, attrs in parse(html).tags:
        assert "src" not in attrs and tag not in ("link", "iframe", "img", "object", "embed"), tag
        assert attrs.get("href", "#").startswith("#"), attrs
    assert "default-src 'none'" in html and "script-src 'none'" in html  # the CSP forbids fetches and scripts


def test_states_gate_outcome_and_selection(tmp_path):
    run_id, html = report_of(tmp_path, sweep_spec(GRID, None), gate_passes=False)
    data = collect(tmp_path, run_id)
    assert 'data-step="gate" data-state="gated"' in html and 'data-step="deploy" data-state="skipped"' in html
    assert 'class="gate-outcome" data-outcome="gated"' in html and html.count('data-outcome="failed"') == 1
    best = max(data.trials, key=lambda t: t["metrics"]["roc_auc"])
    assert [s["index"] for s in data.selection] == [best["index"]]
    assert html.count('data-selected="true"') == 1 and f'<tr data-index="{best["index"]}" class="selected"' in html
    assert html.count('class="pt sel"') == 2  # marked in both parameter plots
    assert "production v3 = 0.71" in html  # the champion/challenger check shows what it compared to
    assert "critical path (outlined): rows \u2192 rows_ok \u2192 train \u2192 select \u2192 evaluate \u2192 gate</p>" in html  # not the skipped deploy


def test_partitioned_sweep_plots_each_partition_and_a_summary(tmp_path):
    _, html = report_of(tmp_path, sweep_spec(GRID, ["de", "fr", "us"]))
    assert html.count('class="scatter"') == 2 + 3 * 2  # the summary per parameter, then each partition's
    assert html.count('data-partition="fr"') == 2 and html.count('data-selected="true"') == 3
    assert "24 trials in 3 partitions; selected by roc_auc (max)" in html


def test_report_of_2000_items_is_small_and_quick(tmp_path):
    run_id = make_run(tmp_path, sweep_spec({"C": [0.01, 0.1, 1.0, 10.0, 100.0], "tol": [1e-4, 1e-3, 1e-2, 0.1]},
                                           [f"region-{i}" for i in range(100)]))
    started = time.perf_counter()
    path = write_report(tmp_path, run_id)
    assert time.perf_counter() - started < 5.0
    html = path.read_text(encoding="utf-8")
    assert path.stat().st_size < 2_000_000
    assert html.count("<tr data-index=") == 2000 and html.count('class="item"') == 2000
    assert 'data-items="2000" data-lanes="4"' in html  # packed into as many lanes as ran at once (max_parallel 4)


def test_render_is_deterministic(tmp_path):
    run_id = make_run(tmp_path, sweep_spec(GRID, ["a", "b"]))
    assert render(collect(tmp_path, run_id)) == render(collect(tmp_path, run_id))


def test_report_command(capsys, tmp_path):
    workdir = tmp_path / "wd"
    assert main(["report", "--workdir", str(workdir)]) == 2  # no such folder
    workdir.mkdir()
    assert main(["report", "--workdir", str(workdir)]) == 2 and "no runs" in capsys.readouterr().err
    first = make_run(workdir, sweep_spec(GRID, None), run_id="20260101-000000-aaaaaa")
    latest = make_run(workdir, sweep_spec(GRID, None), run_id="20260102-000000-bbbbbb")
    assert main(["report", "--workdir", str(workdir)]) == 0
    out = capsys.readouterr().out.strip()
    assert out == str(workdir / "runs" / latest / "report.html") and (workdir / "runs" / latest / "report.html").is_file()
    target = tmp_path / "out" / "first.html"
    assert main(["report", first, "--workdir", str(workdir), "-o", str(target)]) == 0
    assert f"run {first} of fake-sweep" in target.read_text(encoding="utf-8")
    capsys.readouterr()
    assert main(["report", "../../x", "--workdir", str(workdir)]) == 2
    assert "'../../x' is not a run id" in capsys.readouterr().err  # an id, never a path


@pytest.mark.parametrize("fmt", ["svg", "html"])
def test_graph_picture_from_a_spec(capsys, in_repo, fmt):
    from dagsmith_testing import compile_path

    assert main(["graph", CHURN, "--format", fmt]) == 0
    out = capsys.readouterr().out
    ir = compile_path(CHURN)
    if fmt == "svg":
        root = ET.fromstring(out)  # a well-formed SVG file of its own, styles inside
        ns = {"s": "http://www.w3.org/2000/svg"}
        drawn = {g.get("data-step"): g.get("data-state") for g in root.iterfind(".//s:g", ns) if g.get("data-step")}
        assert root.find("s:style", ns) is not None and len(root.findall("s:path", ns)) == sum(len(s.depends_on) for s in ir.steps)
    else:
        assert out.startswith("<!DOCTYPE html>") and "://" not in out.replace('xmlns="http://www.w3.org/2000/svg"', "")
        drawn = {a["data-step"]: a["data-state"] for t, a in parse(out).tags if t == "g" and "data-step" in a}
    assert drawn == {step.id: "planned" for step in ir.steps}
    assert "x6 items" in out  # the sweep's fan-out


def test_report_help_has_an_example(capsys):
    assert main(["report", "--help"]) == 0
    out = capsys.readouterr().out
    assert "Example" in out and "-o, --output FILE" in out and "--workdir DIR" in out


def test_a_manifest_cannot_point_the_report_outside_the_workdir(tmp_path):
    workdir = tmp_path / "wd"
    run_id = make_run(workdir, sweep_spec(GRID, None))
    secret = tmp_path / "outside.json"
    secret.write_text(json.dumps({"index": 0, "params": {"C": "OUTSIDE-MARKER"}, "metrics": {"roc_auc": 0.5}}))
    manifest_path = workdir / "runs" / run_id / "items" / "train" / "0" / "manifest.json"
    for key in (str(secret), "../outside.json"):
        manifest = json.loads(manifest_path.read_text())
        manifest["files"]["trial.json"]["key"] = key
        manifest_path.write_text(json.dumps(manifest))
        html = write_report(workdir, run_id).read_text(encoding="utf-8")
        assert "OUTSIDE-MARKER" not in html and '<tr data-index="0"' in html  # the item's own file, beside its manifest


def test_an_unchanged_deploy_says_so(tmp_path):
    """A re-run whose model is production's registers nothing (runtime/deploy.py: "unchanged"):
    the report says so, not "nothing deployed"."""
    run_id = make_run(tmp_path, sweep_spec(GRID, None))
    record_path = tmp_path / "runs" / run_id / "run.json"
    record = json.loads(record_path.read_text(encoding="utf-8"))
    record["deployment"] = {"deployed": False, "unchanged": True, "model": "fake", "version": 3, "target": "local",
                            "reason": "unchanged, version 3: the model is the production version's"}
    record_path.write_text(json.dumps(record), encoding="utf-8")
    html = write_report(tmp_path, run_id).read_text(encoding="utf-8")
    assert 'data-deployed="unchanged">fake: unchanged, version 3 (the same model fingerprint' in html
    assert "nothing deployed" not in html
