"""The report's tables: run facts, model inputs and their warnings, evaluation metrics, gates, validation, deployment and
lineage, step errors. Each function takes the collected RunData and returns HTML (every value
escaped)."""

from __future__ import annotations

import json

from .. import display
from ..runtime import guards
from .svg import esc, num, parse_time, seconds_text


def _table(head: list[str], rows: list[list[str]], cls: str = "", row_attrs: list[str] | None = None) -> str:
    """`rows` hold cells already made safe (escaped text or markup made here)."""
    attrs = row_attrs or [""] * len(rows)
    return (f'<div class="scroll"><table class="{cls}"><thead><tr>' + "".join(f"<th>{esc(h)}</th>" for h in head) + "</tr></thead><tbody>"
            + "".join(f"<tr{a}>" + "".join(f"<td>{c}</td>" for c in row) + "</tr>" for row, a in zip(rows, attrs)) + "</tbody></table></div>")


def _badge(passed: bool, yes: str = "passed", no: str = "failed") -> str:
    return f'<span class="badge {"ok" if passed else "bad"}">{yes if passed else no}</span>'


def _kwargs(kwargs) -> str:
    if not isinstance(kwargs, dict):
        return esc(num(kwargs))
    return esc(", ".join(f"{k}={json.dumps(v, default=str)}" for k, v in kwargs.items()))


def run_facts(data) -> str:
    record = data.record
    started, ended = parse_time(record.get("started")), parse_time(record.get("ended"))
    facts = [("pipeline", record.get("pipeline")), ("run", record.get("run_id")), ("status", record.get("status")),
             ("run date", record.get("run_date")), ("started", record.get("started")), ("ended", record.get("ended")),
             ("wall time", seconds_text(ended - started) if started is not None and ended is not None else None),
             ("spec hash", (record.get("spec_hash") or "")[:16] or None)]
    params = record.get("params") or {}
    if isinstance(params, dict):
        facts += [(f"param {k}", num(v)) for k, v in params.items()]
    return '<dl class="facts">' + "".join(f"<dt>{esc(k)}</dt><dd>{esc(num(v))}</dd>" for k, v in facts if v not in (None, "")) + "</dl>"


def errors(data) -> str:
    rows = []
    for sid, entry in (data.record.get("steps") or {}).items():
        if isinstance(entry, dict) and entry.get("error") and entry.get("state") == "failed":
            rows.append(f'<div class="error" data-step="{esc(sid)}"><b>{esc(sid)}</b> failed<pre>{esc(entry["error"])}</pre></div>')
    if data.record.get("error"):
        rows.append(f'<div class="error"><b>run</b><pre>{esc(data.record["error"])}</pre></div>')
    return "".join(rows)


MAX_WARNINGS = 200  # warning lines the report lists (many partitions: each has its own)


def model_inputs_section(data) -> str:
    """How many columns the model takes, and the warnings about how they were inferred
    (runtime/guards.py): text columns that are mostly numbers, wide one-hot encodings, dropped
    columns."""
    line = guards.model_inputs_text(data.model_inputs)
    html = f'<p class="model-inputs">{esc(line)}</p>' if line else ""
    if data.warnings:
        html += '<ul class="warnings">' + "".join(
            f'<li class="warning" data-step="{esc(num(step))}"><span class="badge warn">warning</span> {esc(message)}</li>'
            for step, message in data.warnings[:MAX_WARNINGS]) + "</ul>"
        if len(data.warnings) > MAX_WARNINGS:
            html += f'<p class="muted">... and {len(data.warnings) - MAX_WARNINGS} more (every one: the result.json files of the train step)</p>'
    elif line:
        html += '<p class="muted">no warnings about the model inputs</p>'
    return html


def metrics_table(data) -> str:
    metrics = data.metrics
    if not metrics:
        return '<p class="muted">no evaluation metrics (the evaluate step did not run)</p>'
    per_partition = {k: v for k, v in metrics.items() if isinstance(v, dict)}
    if per_partition:
        names = list(dict.fromkeys(m for values in per_partition.values() for m in values))
        rows = [[esc(p)] + [esc(num(values.get(m))) for m in names] for p, values in per_partition.items()]
        return _table(["partition"] + names, rows, "metrics")
    return _table(["metric", "value"], [[esc(k), esc(num(v))] for k, v in metrics.items()], "metrics")


def gates_table(data) -> str:
    decision = data.decision if isinstance(data.decision, dict) else {}
    gates = decision.get("gates") if isinstance(decision.get("gates"), list) else data.record.get("gates") or []
    gates = [g for g in gates if isinstance(g, dict)]
    if not gates:
        return '<p class="muted">no gate checks (the gate step did not run, or the spec has no gates)</p>'
    partitioned = any("partition" in g for g in gates)
    head = (["partition"] if partitioned else []) + ["metric", "op", "threshold", "value", "compared to", "outcome"]
    rows, attrs = [], []
    for g in gates:
        compared = ""
        if g.get("compare_to"):
            version = g.get("production_version")
            if g.get("production_value") is not None:
                source = display.written_as(g, "delta")
                compared = (f"{g['compare_to']}" + (f" v{version}" if version is not None else "")
                            + f" = {num(g['production_value'])}, delta {display.signed(g.get('delta') or 0.0)}"
                            + (f" ({source})" if source else "")
                            + (f"; {g['compared_on']}" if isinstance(g.get("compared_on"), str) else ""))
            else:
                compared = f"{g['compare_to']}: {g.get('note') or 'nothing to compare with'}"
        threshold, observed = display.numbers(g.get("threshold"), g.get("observed"))
        threshold = threshold if g.get("threshold") is not None else (g.get("note") or "")
        if g.get("threshold") is not None and not g.get("compare_to") and display.written_as(g, "value"):
            threshold += f" ({display.written_as(g, 'value')})"
        cells = ([esc(num(g.get("partition")))] if partitioned else [])
        cells += [esc(num(g.get("metric"))), esc(num(g.get("op"))), esc(threshold), esc(observed), esc(compared),
                  _badge(bool(g.get("passed")))]
        rows.append(cells)
        attrs.append(f' class="gate-check" data-outcome="{"passed" if g.get("passed") else "failed"}"')
    passed = data.gates_passed()
    overall = (f'<p class="gate-outcome" data-outcome="{"passed" if passed else "gated"}">gates: '
               + _badge(passed, "passed", "gated: nothing after the gate ran")
               + f" ({sum(1 for g in gates if g.get('passed'))}/{len(gates)} checks passed)")
    if decision.get("partitions_failed"):
        overall += esc(f"; partitions that failed: {', '.join(num(p) for p in decision['partitions_failed'][:20])}"
                       + (" ..." if len(decision["partitions_failed"]) > 20 else ""))
    return overall + "</p>" + _table(head, rows, "gates", attrs)


def validation_tables(data) -> str:
    validation = data.record.get("validation") or {}
    if not validation:
        return '<p class="muted">no validation results</p>'
    out = []
    for name, result in validation.items():
        if not isinstance(result, dict):
            continue
        expectations = [e for e in result.get("expectations") or [] if isinstance(e, dict)]
        failed = sum(1 for e in expectations if not e.get("success"))
        verdict = _badge(not failed, "passed", f"{failed} of {len(expectations)} failed")
        out.append(f'<div class="validation" data-validation="{esc(name)}"><h3>{esc(name)} on {esc(num(result.get("table")))}'
                   f' <small>(on_failure: {esc(num(result.get("on_failure")))}, {esc(num(result.get("rows")))} rows)</small> {verdict}</h3>')
        rows, attrs = [], []
        for e in expectations:
            found = []
            if e.get("observed_value") is not None:
                found.append(f"observed {num(e['observed_value'])}")
            if e.get("unexpected_count") is not None:
                found.append(f"{e['unexpected_count']} unexpected" + (f" of {e['element_count']}" if e.get("element_count") is not None else ""))
            for key in ("partial_unexpected_list", "unexpected_values", "partial_unexpected_counts"):
                if e.get(key):
                    found.append(f"failing values: {num(e[key])}")
            if e.get("error"):
                found.append(f"error: {e['error']}")
            rows.append([esc(num(e.get("type"))), _kwargs(e.get("kwargs")), esc("; ".join(found)), _badge(bool(e.get("success")))])
            attrs.append(f' class="expectation" data-success="{"true" if e.get("success") else "false"}"')
        out.append(_table(["expectation", "arguments", "what GX found", "result"], rows, "expectations", attrs) + "</div>")
    return "".join(out)


def deployment_section(data) -> str:
    deployment = data.record.get("deployment")
    if not isinstance(deployment, dict):
        return '<p class="muted">nothing deployed (the deploy step did not run)</p>'
    if deployment.get("unchanged"):  # the same model as the version the aliases name: nothing registered
        return (f'<p class="deploy" data-deployed="unchanged">{esc(num(deployment.get("model")))}: unchanged, '
                f'version {esc(num(deployment.get("version")))} (the same model fingerprint: nothing registered, '
                'the aliases stay)</p>')
    if not deployment.get("deployed"):
        return (f'<p class="deploy" data-deployed="false">{esc(num(deployment.get("model")))}: nothing deployed'
                + (f" ({esc(num(deployment.get('reason')))})" if deployment.get("reason") else "") + "</p>")
    version = deployment.get("version")
    canary = deployment.get("canary") if isinstance(deployment.get("canary"), dict) else {}
    if canary.get("version") == version:
        alias = "canary"
    elif deployment.get("production") == version:
        alias = "production"
    else:
        alias = "registered (no alias)"
    facts = [("model", deployment.get("model")), ("version", version), ("alias", alias),
             ("canary traffic", f"{num(canary.get('traffic_percent'))}%" if canary.get("version") == version else None),
             ("production version", deployment.get("production")), ("previous production", deployment.get("previous_production")),
             ("strategy", deployment.get("strategy")), ("target", deployment.get("target")),
             ("partitions", len(deployment["partitions"]) if isinstance(deployment.get("partitions"), list) else None)]
    if isinstance(data.aliases, dict):
        now = data.aliases.get("canary") if isinstance(data.aliases.get("canary"), dict) else {}
        facts.append(("aliases now", f"production v{num(data.aliases.get('production'))}"
                      + (f", canary v{num(now.get('version'))} at {num(now.get('traffic_percent'))}%" if now else "")))
    html = '<dl class="facts deploy" data-deployed="true">' + "".join(
        f"<dt>{esc(k)}</dt><dd>{esc(num(v))}</dd>" for k, v in facts if v is not None) + "</dl>"
    notes = deployment.get("notes")
    if isinstance(notes, list) and notes:
        html += "<ul>" + "".join(f"<li>{esc(num(n))}</li>" for n in notes) + "</ul>"
    lineage = data.lineage
    if isinstance(lineage, dict):
        rows = []
        for key in ("run_id", "run_date", "pipeline", "spec_hash", "model_step", "model_fingerprint", "deployed_at"):
            if lineage.get(key) is not None:
                rows.append([esc(key), esc(num(lineage[key]))])
        for group in ("params", "inputs", "features"):
            for name, value in (lineage.get(group) or {}).items() if isinstance(lineage.get(group), dict) else ():
                rows.append([esc(f"{group}: {name}"), esc(num(value))])
        for chosen in lineage.get("selection") or []:
            if isinstance(chosen, dict):
                label = "selected trial" + (f" ({num(chosen.get('partition'))})" if chosen.get("partition") is not None else "")
                rows.append([esc(label), esc(f"#{num(chosen.get('index'))} {num(chosen.get('params'))}")])
        html += "<h3>lineage</h3>" + _table(["what", "value"], rows, "lineage")
    return html
