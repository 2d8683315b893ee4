"""The run report (`dagsmith report`): one self-contained HTML file per run, and the step graph
as a picture (`dagsmith graph --format svg|html`).

collect.py reads a run's folder; graph.py, timeline.py and sweep.py draw (plain SVG made here:
small, fast to render, no library and nothing to fetch); sections.py makes the tables;
page.py the page. Every value from the spec or the run is escaped. See docs/report.md.
"""

from __future__ import annotations

from pathlib import Path

from .. import display
from ..errors import DagsmithError
from ..ir import IR
from ..runner import list_runs, run_dir
from ..runtime.store import atomic_write_bytes
from . import sections, sweep
from .collect import RunData, collect, latest_run
from .graph import STATES, graph_svg, legend
from .page import page, section
from .svg import esc, parse_time, seconds_text
from .timeline import timeline

REPORT_NAME = "report.html"
ARROW = " \u2192 "


def default_path(workdir: Path, run_id: str) -> Path:
    return run_dir(workdir, run_id) / REPORT_NAME


def write_report(workdir: Path | str, run_id: str | None = None, output: Path | str | None = None) -> Path:
    """Write the report of RUN_ID (default: the latest run) to `output` (default
    <workdir>/runs/<run_id>/report.html); returns its path."""
    workdir = Path(workdir)
    if not workdir.is_dir():
        raise DagsmithError(f"--workdir {workdir}: no such folder (runs are kept in the --workdir of `dagsmith run`, default .dagsmith)")
    if run_id is None:
        run_id = latest_run(workdir)
        if run_id is None:
            raise DagsmithError(f"no runs in {workdir} yet (start one with `dagsmith run SPEC --workdir {workdir}`)")
    else:
        run_dir(workdir, run_id)  # refuses what is not a run id (never a path)
        if run_id not in list_runs(workdir):
            known = ", ".join(list_runs(workdir)[-5:]) or "none"
            raise DagsmithError(f"no run {run_id!r} in {workdir} (recent runs: {known})")
    html = render(collect(workdir, run_id))
    path = Path(output) if output is not None else default_path(workdir, run_id)
    if path.is_dir():
        raise DagsmithError(f"-o {path}: is a folder (give a file name, e.g. {path / REPORT_NAME})")
    try:
        path.parent.mkdir(parents=True, exist_ok=True)
        atomic_write_bytes(path, html.encode("utf-8"))
    except OSError as exc:
        raise DagsmithError(f"cannot write the report to {path}: {exc.strerror or exc}") from None
    return path


def step_states(data: RunData) -> dict[str, dict]:
    out = {}
    for sid, entry in (data.record.get("steps") or {}).items():
        if not isinstance(entry, dict):
            continue
        start, end = parse_time(entry.get("started")), parse_time(entry.get("ended"))
        info = {"state": data.state_of(sid), "seconds": (end - start) if start is not None and end is not None else None}
        if isinstance(entry.get("items"), dict):
            info["items"] = entry["items"]
        if isinstance(entry.get("error"), str):
            info["note"] = display.error_note(entry["error"]) if entry["error"].strip() else None
        out[sid] = info
    return out


def render(data: RunData) -> str:
    record = data.record
    status = str(record.get("status") or "unknown")
    states = step_states(data)
    parts = [section("errors", "what failed", sections.errors(data))] if sections.errors(data) else []
    if data.ir is not None:
        used = [s for s in STATES if any(i["state"] == s for i in states.values())]
        parts.append(section("graph", "step graph",
                             f'<p class="caption">{legend(used)}</p><div class="figure">{graph_svg(data.ir, states)}</div>'))
    gantt, facts = timeline(data)
    if gantt:
        caption = (f"wall {seconds_text(facts['wall'])}, some step running {seconds_text(facts['busy'])}, "
                   f"idle {seconds_text(facts['idle'])}; critical path (outlined): {ARROW.join(facts['critical'])}")
        parts.append(section("timeline", "timeline", f'<p class="caption">{esc(caption)}</p><div class="figure">{gantt}</div>'))
    if data.trials:
        parts.append(section("sweep", "sweep", sweep.plots(data) + sweep.trials_table(data)))
    if data.model_inputs or data.warnings:
        parts.append(section("inputs", "model inputs", sections.model_inputs_section(data)))
    parts.append(section("evaluation", "evaluation", sections.metrics_table(data)))
    parts.append(section("gates", "gates", sections.gates_table(data)))
    parts.append(section("validation", "validation", sections.validation_tables(data)))
    parts.append(section("deployment", "deployment", sections.deployment_section(data)))
    subtitle = (f'<span class="badge status-{esc(status)}" id="run-status" data-status="{esc(status)}">{esc(status)}</span>'
                + sections.run_facts(data))
    nav = [(a, t) for a, t in (("errors", "errors"), ("graph", "graph"), ("timeline", "timeline"), ("sweep", "sweep"),
                               ("inputs", "model inputs"), ("evaluation", "evaluation"), ("gates", "gates"), ("validation", "validation"), ("deployment", "deployment"))
           if f'id="{a}"' in "".join(parts)]
    summary = {"run_id": record.get("run_id"), "pipeline": record.get("pipeline"), "status": status,
               "steps": {sid: {"state": i["state"], "seconds": i["seconds"]} for sid, i in states.items()},
               "selected": sorted(sweep.selected_indexes(data)), "gates_passed": data.gates_passed() if (data.decision or record.get("gates")) else None,
               "deployed": (record.get("deployment") or {}).get("deployed") if isinstance(record.get("deployment"), dict) else None}
    return page(f"run {record.get('run_id')} of {record.get('pipeline')}", "".join(parts), summary, subtitle, nav)


def graph_page(ir: IR) -> str:
    """`dagsmith graph --format html`: the spec's step graph on a page of its own."""
    facts = "".join(f"<dt>{esc(k)}</dt><dd>{esc(v)}</dd>" for k, v in (("pipeline", ir.name), ("steps", len(ir.steps)),
                                                                      ("description", ir.pipeline.get("description"))) if v)
    body = section("graph", "step graph", f'<p class="caption">{legend(["planned"])} (not run: see `dagsmith report` for a run)</p>'
                   f'<div class="figure">{graph_svg(ir)}</div>')
    return page(f"pipeline {ir.name}", body, None, f'<dl class="facts">{facts}</dl>')


__all__ = ["RunData", "collect", "default_path", "graph_page", "graph_svg", "latest_run", "render", "write_report"]
