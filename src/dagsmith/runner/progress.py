"""What a person sees while a run goes: a live table on a terminal, plain lines otherwise,
and a summary at the end (steps, durations, the number of model input columns and the
training warnings, metrics, gates with totals, what deploy did, validation)."""

from __future__ import annotations

import datetime as _dt
import json
import sys
import time
from pathlib import Path

from rich.console import Console, Group
from rich.live import Live
from rich.progress_bar import ProgressBar
from rich.table import Table
from rich.text import Text

from .. import display
from ..runtime import guards

_STYLE = {"succeeded": "green", "cached": "cyan", "failed": "red", "skipped": "yellow", "running": "bold blue", "pending": "dim"}


class PlainReporter:
    """One line per event on stderr: logs of CI jobs and pipes."""

    def __init__(self, stream=None):
        self.stream = stream or sys.stderr
        self.started = time.monotonic()

    def event(self, step_id: str, text: str) -> None:
        print(f"[{time.monotonic() - self.started:7.1f}s] {step_id}: {text}", file=self.stream, flush=True)

    def refresh(self, record: dict) -> None:
        pass

    def close(self) -> None:
        pass


class LiveReporter:
    """A table of steps with fan-out progress bars, redrawn in place on a terminal."""

    def __init__(self, console: Console):
        self.console = console
        self.started = time.monotonic()
        self.record: dict | None = None
        self.live = Live(console=console, refresh_per_second=8, transient=True, get_renderable=self.render)  # the summary replaces it
        self.live.start()

    def event(self, step_id: str, text: str) -> None:
        if text.startswith("failed") or "retrying" in text:
            self.console.print(f"[red]{step_id}[/red]: {text}")

    def refresh(self, record: dict) -> None:
        self.record = record

    def render(self):
        table = Table(box=None, show_header=True, header_style="bold", pad_edge=False)
        table.add_column("step")
        table.add_column("state")
        table.add_column("progress", width=32)
        if self.record:
            for step_id, entry in self.record["steps"].items():
                items = entry.get("items")
                bar = ""
                if items:
                    bar = Group(ProgressBar(total=max(items["total"], 1), completed=items["done"], width=24), Text(f"{items['done']}/{items['total']}"))
                table.add_row(step_id, Text(entry["state"], style=_STYLE.get(entry["state"], "")), bar)
        return Group(table, Text(f"elapsed {time.monotonic() - self.started:.1f}s", style="dim"))

    def close(self) -> None:
        self.live.stop()


def reporter_for(quiet: bool):
    console = Console(stderr=True)
    if quiet:
        return None
    return LiveReporter(console) if console.is_terminal else PlainReporter()


def _seconds(entry: dict) -> str:
    if not entry.get("started") or not entry.get("ended"):
        return ""
    start = _dt.datetime.fromisoformat(entry["started"])
    end = _dt.datetime.fromisoformat(entry["ended"])
    return f"{(end - start).total_seconds():.2f}s"


# Past this many partitions, the summary aggregates metrics (min / mean / max) and lists only
# the gate checks that failed; totals are always printed.
MANY_PARTITIONS = 10
MAX_FAILED_ROWS = 20  # failed gate checks listed past MANY_PARTITIONS (the rest are counted)
MAX_WARNING_LINES = 20  # training warnings printed (the rest are counted)


def summary(record: dict, console: Console, *, workdir: Path | str | None = None, validation: str = "failures") -> None:
    """The run record as a person reads it: steps, metrics, gates (with totals), what deploy did,
    validation. `workdir`: where the run is, to read the full gate decision and metrics when the
    record keeps only a digest of them (many partitions). `validation`: "failures" (each failed
    expectation, one line) or "all" (every check and expectation: success, what it observed)."""
    steps = Table(title=f"run {record['run_id']} of {record['pipeline']}: {record['status']}", title_justify="left")
    steps.add_column("step")
    steps.add_column("state")
    steps.add_column("time", justify="right")
    steps.add_column("attempts", justify="right")
    steps.add_column("note")
    for step_id, entry in record["steps"].items():
        items = entry.get("items")
        note = f"{items['done']}/{items['total']} items" if items else ""
        if entry.get("error"):
            note = (note + " " if note else "") + display.error_note(entry["error"])
        steps.add_row(step_id, Text(entry["state"], style=_STYLE.get(entry["state"], "")), _seconds(entry), str(entry.get("attempts", 0)), Text(note))
    console.print(steps)
    _print_guard_rails(record, console)
    metrics = _stored(workdir, record, "evaluate", "metrics.json") or record.get("metrics") or {}
    _print_metrics(metrics, console)
    decision = _stored(workdir, record, "gate", "decision.json")
    if decision and decision.get("gates") is not None:  # every check (the record may keep only the failed ones)
        known = [_pkey(p) for p in (decision.get("partitions_passed") or []) + (decision.get("partitions_failed") or [])]
        _print_gates(decision["gates"], console, known)
    else:
        _print_gates(record.get("gates") or [], console, _known_partitions(record, metrics))
    line = deployment_line(record.get("deployment"))
    if line:
        console.print(f"deploy: {line}", highlight=False, soft_wrap=True, markup=False)
    _print_validation(record.get("validation") or {}, console, every=validation == "all")


def _print_guard_rails(record: dict, console: Console) -> None:
    """How many columns the model takes, and the warnings about how they were inferred
    (runtime/guards.py): one logical line each, never cut."""
    line = guards.model_inputs_text(record.get("model_inputs") or [])
    if line:
        console.print(line, highlight=False, soft_wrap=True, markup=False)
    warnings = [w for w in record.get("warnings") or [] if isinstance(w, dict) and isinstance(w.get("message"), str)]
    for warning in warnings[:MAX_WARNING_LINES]:
        text = Text("warning", style="yellow")
        text.append(display.terminal_text(f": {warning.get('step')}: {warning['message']}"))
        console.print(text, highlight=False, soft_wrap=True)
    if len(warnings) > MAX_WARNING_LINES:
        console.print(f"... and {len(warnings) - MAX_WARNING_LINES} more warnings (all of them: run.json, and the report)",
                      highlight=False, soft_wrap=True, markup=False)


def _stored(workdir, record: dict, step_id: str, name: str):
    """A step's output in the run's folder (the local store at `workdir`), or None."""
    if workdir is None:
        return None
    from ..runtime.store import LocalStore

    store = LocalStore(Path(workdir))
    try:
        return store.read_json(f"{store.step_key(record['run_id'], step_id)}/{name}")
    except (OSError, ValueError):
        return None


def _print_metrics(metrics: dict, console: Console) -> None:
    if not metrics:
        return
    per_partition = {key: value for key, value in metrics.items() if isinstance(value, dict)}
    if len(per_partition) > MANY_PARTITIONS:
        table = Table(title=f"metrics of {len(per_partition)} partitions", title_justify="left")
        for column in ("metric", "min", "mean", "max"):
            table.add_column(column, justify="left" if column == "metric" else "right")
        names = list(dict.fromkeys(name for values in per_partition.values() for name in values))
        for name in names:
            values = [v[name] for v in per_partition.values() if isinstance(v.get(name), (int, float))]
            if values:
                table.add_row(name, _num(float(min(values))), _num(sum(values) / len(values)), _num(float(max(values))))
        console.print(table)
        return
    table = Table(title="metrics", title_justify="left")
    table.add_column("model")
    table.add_column("metric")
    table.add_column("value", justify="right")
    for name, value in _flat_metrics(metrics):
        table.add_row(*name, _num(value))
    console.print(table)


def threshold_text(gate: dict) -> str:
    """A gate check's threshold as a person reads it: `0.7500`, or for a champion/challenger gate
    the production model's score and the delta it came from, `0.9000 (production v1 0.9100 -
    0.0100)`, or why there was nothing to compare with (the check's note)."""
    threshold = gate.get("threshold")
    if threshold is None:
        return gate.get("note") or ""
    text = display.numbers(threshold, gate.get("observed"), fixed=True)[0]
    if gate.get("compare_to") and gate.get("production_value") is not None:
        version = gate.get("production_version")
        production = f"production v{version}" if version is not None else "production"
        delta = display.signed(gate.get('delta') or 0.0, fixed=True)
        source = display.written_as(gate, "delta")
        text += f" ({production} {_num(gate['production_value'])}, delta {f'{source} = {delta}' if source else delta})"
    elif display.written_as(gate, "value"):
        text += f" ({display.written_as(gate, 'value')})"
    return text


def _print_gates(gates: list, console: Console, known: list[str]) -> None:
    """The gate checks (all of them, or only the failed ones past MANY_PARTITIONS partitions)
    and a totals line. `known`: every partition of the run as far as the record tells, for the
    totals when the record keeps only the failed checks."""
    if not gates:
        return
    partitioned = any("partition" in gate for gate in gates)
    failed = [gate for gate in gates if not gate.get("passed")]
    partitions = list(dict.fromkeys([_pkey(gate.get("partition")) for gate in gates] + (known if partitioned else [])))
    failing = list(dict.fromkeys(_pkey(gate.get("partition")) for gate in failed))
    many = partitioned and len(partitions) > MANY_PARTITIONS
    shown = failed[:MAX_FAILED_ROWS] if many else gates
    if shown:
        table = Table(title="gates" + (" that failed" if many else ""), title_justify="left")
        columns = (("partition",) if partitioned else ()) + ("metric", "op", "threshold", "observed", "passed")
        for column in columns:
            table.add_column(column)
        for gate in shown:
            cells = [str(gate.get("partition", ""))] if partitioned else []
            cells += [gate.get("metric", ""), gate.get("op", ""), threshold_text(gate),
                      display.numbers(gate.get("threshold"), gate.get("observed"), fixed=True)[1]]
            table.add_row(*cells, Text("yes" if gate.get("passed") else "no", style="green" if gate.get("passed") else "red"))
        console.print(table)
        for rows in dict.fromkeys(g["compared_on"] for g in shown if isinstance(g.get("compared_on"), str)):
            console.print(f"champion/challenger: {rows}", highlight=False, soft_wrap=True, markup=False)
        if len(shown) < len(failed):
            console.print(f"... and {len(failed) - len(shown)} more failed checks (all of them: the gate step's decision.json in the run folder)",
                          highlight=False, soft_wrap=True, markup=False)
    if partitioned:
        checks = f"{len(gates) - len(failed)}/{len(gates)} checks" if len(gates) > len(failed) else f"{len(failed)} checks failed"
        text = f"gates: {len(partitions) - len(failing)}/{len(partitions)} partitions passed ({checks})"
        if failing:
            text += f"; failed: {_names(failing)}"
        style = "green" if not failing else ("yellow" if len(failing) < len(partitions) else "red")
    else:
        text = f"gates: {'failed' if failed else 'passed'} ({len(gates) - len(failed)}/{len(gates)} checks passed)"
        style = "red" if failed else "green"
    console.print(text, style=style, highlight=False, soft_wrap=True, markup=False)


def _known_partitions(record: dict, metrics: dict) -> list[str]:
    """The partitions a record names: its metrics' keys and what deploy registered."""
    names = [key for key, value in metrics.items() if isinstance(value, dict)]
    names += [_pkey(p) for p in ((record.get("deployment") or {}).get("partitions") or [])]
    return list(dict.fromkeys(names))


def _pkey(partition) -> str:
    """A partition value as a text key (as the metrics record writes it: runtime.data.partition_key)."""
    return partition if isinstance(partition, str) else json.dumps(partition)


def _names(names: list[str], limit: int = 10) -> str:
    text = ", ".join(names[:limit])
    return text + (f" and {len(names) - limit} more" if len(names) > limit else "")


def deployment_line(deployment: dict | None) -> str | None:
    """What the deploy step did, in one line: `churn v2 deployed as canary at 10% (production
    stays v1)`, `churn v1 deployed as production (replaces v1)`, `churn: nothing deployed (...)`."""
    if not deployment:
        return None
    model = deployment.get("model", "the model")
    if deployment.get("unchanged"):
        return f"{model}: unchanged, version {deployment.get('version')} (the same model: nothing registered)"
    if not deployment.get("deployed"):
        return f"{model}: nothing deployed" + (f" ({deployment['reason']})" if deployment.get("reason") else "")
    version = deployment.get("version")
    canary = deployment.get("canary") or {}
    previous = deployment.get("previous_production")
    notes = []
    if canary.get("version") == version:
        percent = canary.get("traffic_percent")
        text = f"{model} v{version} deployed as canary" + (f" at {percent:g}%" if isinstance(percent, (int, float)) else "")
        if deployment.get("production") is not None:
            notes.append(f"production stays v{deployment['production']}")
    elif deployment.get("production") == version:
        text = f"{model} v{version} deployed as production"
        if previous is not None and previous != version:
            notes.append(f"replaces v{previous}")
        elif deployment.get("strategy") == "canary":
            notes.append("no production version before it, so no canary")
    else:
        text = f"{model} v{version} registered"
    partitions = deployment.get("partitions")
    if partitions is not None:
        inherited = deployment.get("inherited") or []
        if inherited:
            notes.append(f"{len(partitions)} partitions from this run, {len(inherited)} kept from earlier versions")
        else:
            notes.append(f"{len(partitions)} partition{'s' if len(partitions) != 1 else ''}")
    target = deployment.get("target")
    if target and target != "local":
        notes.append(f"target {target}: a local run deploys to the local registry")
    return text + (f" ({'; '.join(notes)})" if notes else "")


def _print_validation(validation: dict, console: Console, every: bool) -> None:
    if every:
        for name, result in validation.items():
            expectations = result.get("expectations", [])
            failed = sum(1 for e in expectations if not e.get("success"))
            verdict = "passed" if not failed else f"{failed} of {len(expectations)} failed"
            console.print(display.terminal_text(f"validation {name} on {result.get('table')} (on_failure: {result.get('on_failure')}): {verdict}"),
                          highlight=False, soft_wrap=True, markup=False)
            for expectation in expectations:
                kwargs = ", ".join(f"{k}={v}" for k, v in (expectation.get("kwargs") or {}).items())
                ok = expectation.get("success")
                mark = Text("  ok    " if ok else "  FAIL  ", style="green" if ok else "red")
                console.print(mark + Text(display.terminal_text(f"{expectation.get('type')}({kwargs}): {observed_text(expectation)}")),
                              highlight=False, soft_wrap=True)
    for name, result in validation.items():  # the failures again, by level: what needs a look
        for expectation in result.get("expectations", []):
            if not expectation.get("success"):
                level = "error" if result.get("on_failure") == "fail" else "warning"
                # One logical line, never wrapped by rich (soft_wrap) and never read as markup:
                # the terminal wraps it, a pipe or a log keeps it whole.
                line = Text(f"validation {level}", style="red" if level == "error" else "yellow")
                line.append(": " + display.terminal_text(f"{name} on {result.get('table')}: {expectation.get('type')}: {observed_text(expectation)}"))
                console.print(line, highlight=False, soft_wrap=True)


# What GX reports of the failing values, most telling first (the report shows the same keys).
FAILING_VALUE_KEYS = ("partial_unexpected_list", "unexpected_values", "partial_unexpected_counts")


def observed_text(expectation: dict) -> str:
    """What a validation observed: its error, the value (row count, mean...), or unexpected rows
    with a bounded sample of the failing values (display.sample: a few, each cut short,
    terminal-safe)."""
    if expectation.get("error"):
        return display.terminal_text(expectation["error"])
    if expectation.get("observed_value") is not None:
        return f"observed {display.terminal_text(repr(expectation['observed_value']), 200)}"
    count = expectation.get("unexpected_count")
    text = ""
    if count is not None:
        total = expectation.get("element_count")
        text = f"{count} unexpected row{'' if count == 1 else 's'}" + (f" of {total}" if total is not None else "")
    for key in FAILING_VALUE_KEYS:
        values = expectation.get(key)
        if isinstance(values, list) and values:
            text += ("; " if text else "") + "failing values: " + display.sample(values)
            break
    return text


def _flat_metrics(metrics: dict):
    for key, value in metrics.items():
        if isinstance(value, dict):
            for metric, number in value.items():
                yield (str(key), metric), number
        else:
            yield ("", key), value


def _num(value) -> str:
    return display.number(value, fixed=True)
