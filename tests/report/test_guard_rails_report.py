"""Guard rails in the run output and the report (issue 24 item 2): a local run of a CSV whose
measurements arrive as text ('?' for unknown) says how many columns the models take and warns,
in the run record, the run summary and the HTML report; the report finds the warnings in the
train step's result files, so a run recorded elsewhere (an orchestrator's) shows them too."""

from __future__ import annotations

import io
import json

import numpy as np
import pandas as pd
from rich.console import Console

from dagsmith.cli import main
from dagsmith.report import collect, render
from dagsmith.report.svg import esc
from dagsmith.runner.progress import summary

SPEC = """dagsmith: 1
pipeline: {name: penguins}
sources:
  penguins: {type: csv, uri: penguins.csv}
training:
  inputs: [penguins]
  target: species
  partition_by: island
  partitions: [Biscoe, Dream]
  split: {test_size: 0.25, seed: 1}
  model: {estimator: sklearn.tree.DecisionTreeClassifier, params: {random_state: 0}}
"""


def test_a_run_with_numbers_read_as_text_warns_in_the_summary_and_the_report(tmp_path, monkeypatch, capsys):
    monkeypatch.chdir(tmp_path)
    rng = np.random.default_rng(0)
    n = 240
    bill = np.round(rng.normal(44, 5, size=n), 1)
    pd.DataFrame({"species": rng.choice(["Adelie", "Gentoo"], size=n), "island": np.array(["Biscoe", "Dream"])[np.arange(n) % 2],
                  "bill_length_mm": [("?" if i % 25 == 0 else str(v)) for i, v in enumerate(bill)],
                  "flipper_mm": rng.integers(170, 230, size=n)}).to_csv("penguins.csv", index=False)
    (tmp_path / "pipeline.yaml").write_text(SPEC)
    assert main(["run", "pipeline.yaml", "--workdir", "wd", "--format", "json", "--max-parallel", "1"]) == 0
    record = json.loads(capsys.readouterr().out)
    messages = [w["message"] for w in record["warnings"]]
    assert {w["step"] for w in record["warnings"]} == {"train"}
    for island in ("Biscoe", "Dream"):  # one line per partition (a fan-out item each), from the items' results
        assert any(m.startswith(f"partition '{island}': column 'bill_length_mm' is text but 9") and
                   "declare its type or its null values (sources.penguins.columns / null_values)" in m for m in messages)
        assert any(m.startswith(f"partition '{island}': one-hot encoding adds ") for m in messages)
    counts = record["model_inputs"]
    assert counts and all(n > 50 for n in counts)

    console = Console(file=io.StringIO(), width=120, color_system=None)
    summary(record, console, workdir=tmp_path / "wd")
    printed = console.file.getvalue()
    assert ("model inputs: " + (f"{counts[0]} columns" if len(counts) == 1 else f"{counts[0]} to {counts[-1]} columns")) in printed
    for message in messages:  # whole, never cut by the terminal's width
        assert f"warning: train: {message}\n" in printed

    html = render(collect(tmp_path / "wd", record["run_id"]))
    assert 'id="inputs"' in html and html.count('class="warning"') == len(messages)
    assert all(esc(m) in html for m in messages)
    # a record without them (an orchestrator's): the report reads the train items' result.json
    path = tmp_path / "wd" / "runs" / record["run_id"] / "run.json"
    stored = json.loads(path.read_text())
    del stored["warnings"], stored["model_inputs"]
    path.write_text(json.dumps(stored))
    again = render(collect(tmp_path / "wd", record["run_id"]))
    assert again.count('class="warning"') == len(messages) and all(esc(m) in again for m in messages)


def test_many_warnings_are_counted_past_a_limit():
    from dagsmith.report.collect import RunData
    from dagsmith.report.sections import MAX_WARNINGS, model_inputs_section
    from dagsmith.runner.progress import MAX_WARNING_LINES

    lines = [f"partition {i}: column 'v' dropped (not a model input): datetime column" for i in range(MAX_WARNINGS + 5)]
    record = {"run_id": "r", "pipeline": "p", "status": "succeeded", "steps": {}, "model_inputs": [3, 4],
              "warnings": [{"step": "train", "message": line} for line in lines]}
    console = Console(file=io.StringIO(), width=100, color_system=None)
    summary(record, console)
    printed = console.file.getvalue()
    assert "model inputs: 3 to 4 columns (the partitions' models differ)" in printed
    assert printed.count("warning: train: ") == MAX_WARNING_LINES
    assert f"... and {len(lines) - MAX_WARNING_LINES} more warnings (all of them: run.json, and the report)" in printed
    html = model_inputs_section(RunData(record=record, ir=None, warnings=[("train", line) for line in lines], model_inputs=[3, 4]))
    assert html.count('class="warning"') == MAX_WARNINGS and "... and 5 more" in html
