"""What a person sees while a run goes: a live table on a terminal, plain lines otherwise,
and a summary at the end (steps, durations, metrics, gates, validation warnings)."""

from __future__ import annotations

import datetime as _dt
import sys
import time

from rich.console import Console, Group
from rich.live import Live
from rich.progress_bar import ProgressBar
from rich.table import Table
from rich.text import Text

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


def summary(record: dict, console: Console) -> None:
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
            note = (note + " " if note else "") + entry["error"].splitlines()[0][:100]
        steps.add_row(step_id, Text(entry["state"], style=_STYLE.get(entry["state"], "")), _seconds(entry), str(entry.get("attempts", 0)), note)
    console.print(steps)
    if record.get("metrics"):
        metrics = Table(title="metrics", title_justify="left")
        metrics.add_column("model")
        metrics.add_column("metric")
        metrics.add_column("value", justify="right")
        for name, value in _flat_metrics(record["metrics"]):
            metrics.add_row(*name, f"{value:.4f}" if isinstance(value, float) else str(value))
        console.print(metrics)
    if record.get("gates"):
        gates = Table(title="gates", title_justify="left")
        for column in ("partition", "metric", "op", "threshold", "observed", "passed"):
            gates.add_column(column)
        for gate in record["gates"]:
            gates.add_row(
                str(gate.get("partition", "")), gate.get("metric", ""), gate.get("op", ""),
                _num(gate.get("threshold")) if gate.get("threshold") is not None else gate.get("note", ""),
                _num(gate.get("observed")), Text("yes" if gate.get("passed") else "no", style="green" if gate.get("passed") else "red"),
            )
        console.print(gates)
    for name, validation in record.get("validation", {}).items():
        for expectation in validation.get("expectations", []):
            if not expectation.get("success"):
                level = "error" if validation.get("on_failure") == "fail" else "warning"
                count = expectation.get("unexpected_count")
                detail = expectation.get("error") or (f"{count} unexpected rows" if count is not None else f"observed {expectation.get('observed_value')!r}")
                console.print(f"[{'red' if level == 'error' else 'yellow'}]validation {level}[/]: {name} on {validation.get('table')}: {expectation['type']}: {detail}")


def _flat_metrics(metrics: dict):
    for key, value in metrics.items():
        if isinstance(value, dict):
            for metric, number in value.items():
                yield (str(key), metric), number
        else:
            yield ("", key), value


def _num(value) -> str:
    if value is None:
        return ""
    return f"{value:.4f}" if isinstance(value, float) else str(value)
