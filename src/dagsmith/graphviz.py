"""The step graph as text: Mermaid, Graphviz DOT, or JSON (for `dagsmith graph`)."""

from __future__ import annotations

import json

from .ir import IR, Step

_MERMAID_SHAPES = {"source": ('[("', '")]'), "gate": ('{"', '"}'), "validate": ('{{"', '"}}'), "train": ('[["', '"]]')}


def label(step: Step) -> str:
    text = f"{step.id} ({step.kind})"
    if step.fanout is not None:
        size = step.fanout.size if step.fanout.size is not None else (
            f"1 per {step.fanout.rows_per_item} rows" if step.fanout.method == "rows" else f"{step.fanout.trials} per partition")
        text += f" x{size}" if isinstance(size, int) else f" x {size}"
    return text


def _mermaid_text(text: str) -> str:
    return text.replace('"', "#quot;")


def to_mermaid(ir: IR) -> str:
    ids = {step.id: f"s{index}" for index, step in enumerate(ir.steps)}
    lines = ["flowchart TD"]
    for step in ir.steps:
        left, right = _MERMAID_SHAPES.get(step.kind, ('["', '"]'))
        lines.append(f"    {ids[step.id]}{left}{_mermaid_text(label(step))}{right}")
    for step in ir.steps:
        for up in step.depends_on:
            lines.append(f"    {ids[up]} --> {ids[step.id]}")
    return "\n".join(lines) + "\n"


def to_dot(ir: IR) -> str:
    quote = json.dumps  # a JSON string is a valid DOT quoted ID
    lines = [f"digraph {quote(ir.name)} {{", "    rankdir=LR;", "    node [shape=box];"]
    for step in ir.steps:
        shape = {"source": "cylinder", "gate": "diamond", "validate": "hexagon"}.get(step.kind, "box")
        lines.append(f"    {quote(step.id)} [label={quote(label(step))}, shape={shape}];")
    for step in ir.steps:
        for up in step.depends_on:
            lines.append(f"    {quote(up)} -> {quote(step.id)};")
    lines.append("}")
    return "\n".join(lines) + "\n"


def to_json(ir: IR) -> str:
    data = {
        "pipeline": ir.name,
        "nodes": [{"id": s.id, "kind": s.kind, "fanout_size": s.fanout.size if s.fanout else None} for s in ir.steps],
        "edges": [[up, s.id] for s in ir.steps for up in s.depends_on],
    }
    return json.dumps(data, indent=2, sort_keys=True) + "\n"
