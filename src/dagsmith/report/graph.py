"""The step graph as an SVG picture: one box per step, colored by its state, with its kind, its
duration and a fan-out's item counts; arrows from each step to the steps that depend on it.

Used by the run report (states from the run) and by `dagsmith graph --format svg|html`
(no run: every step is "planned").
"""

from __future__ import annotations

from ..ir import IR
from .layout import layered
from .svg import esc, fmt, seconds_text, truncate

NODE_W, NODE_H, GAP_X, GAP_Y, PAD = 200, 58, 22, 34, 12
DAG_STYLE = """
:root{--ok:#2e9d52;--cached:#2b8cbe;--bad:#d7301f;--skip:#a8a8a8;--gated:#ee8a12;--run:#6a51a3;--wait:#d9d9d9;--plan:#8fa3bf;--ink:#1d232b}
.dag{font:14px system-ui,-apple-system,"Segoe UI",Roboto,"Liberation Sans",sans-serif}
.dag .edge{fill:none;stroke:#8c96a3;stroke-width:1.4}.dag .arrowhead{fill:#8c96a3}
.dag .step rect{stroke:#0003;stroke-width:1}.dag .step text{fill:#fff}.dag .name{font-size:13px;font-weight:600}.dag .state{font-size:11px;font-weight:600}.dag .detail{font-size:11px;opacity:.92}
.dag{max-width:100%;height:auto}
.dag .state-succeeded rect{fill:var(--ok)}.dag .state-cached rect{fill:var(--cached)}.dag .state-failed rect{fill:var(--bad)}
.dag .state-skipped rect{fill:var(--skip)}.dag .state-gated rect{fill:var(--gated)}.dag .state-running rect{fill:var(--run)}
.dag .state-pending rect{fill:var(--wait)}.dag .state-pending text{fill:var(--ink)}.dag .state-planned rect{fill:var(--plan)}
.dag .shape-gate rect{stroke-width:3;stroke:#0006}.dag .shape-validate rect{stroke-dasharray:5 3;stroke-width:2}
"""
STATES = ("succeeded", "cached", "failed", "skipped", "gated", "running", "pending", "planned")


def fanout_text(step) -> str | None:
    """What a fan-out is from the IR alone: `x6 items`, `x20 per partition`."""
    if step.fanout is None:
        return None
    if step.fanout.size is not None:
        return f"x{step.fanout.size} items"
    if step.fanout.method == "rows":
        return f"x1 per {step.fanout.rows_per_item} rows"
    return f"x{step.fanout.trials} per partition"


def graph_svg(ir: IR, states: dict[str, dict] | None = None, *, standalone: bool = False) -> str:
    """`states`: step id -> {"state", "seconds"?, "items"?: {total, done, failed}, "note"?}.
    `standalone`: the styles inside the SVG (a file of its own, not a part of a page)."""
    states = states or {}
    nodes = [step.id for step in ir.steps]
    edges = [(up, step.id) for step in ir.steps for up in step.depends_on]
    placed = layered(nodes, edges)
    rows_per_layer: dict[int, int] = {}
    for place in placed.values():
        rows_per_layer[place.layer] = max(rows_per_layer.get(place.layer, 0), place.row + 1)
    widest = max(rows_per_layer.values(), default=1)  # top to bottom: a layer is a row of boxes
    layers = len(rows_per_layer)
    width = PAD * 2 + widest * NODE_W + max(widest - 1, 0) * GAP_X
    height = PAD * 2 + layers * NODE_H + max(layers - 1, 0) * GAP_Y

    def corner(step_id: str) -> tuple[float, float]:
        place = placed[step_id]
        offset = (widest - rows_per_layer[place.layer]) * (NODE_W + GAP_X) / 2  # centre narrow layers
        return PAD + offset + place.row * (NODE_W + GAP_X), PAD + place.layer * (NODE_H + GAP_Y)

    xmlns = ' xmlns="http://www.w3.org/2000/svg"' if standalone else ""  # inline in HTML it needs none
    parts = [f'<svg{xmlns} class="dag" role="img" aria-label="step graph of {esc(ir.name)}" '
             f'width="{width}" height="{height}" viewBox="0 0 {width} {height}">',
             (f"<style>{DAG_STYLE}</style>" if standalone else "") +
             '<defs><marker id="arrow" viewBox="0 0 10 10" refX="10" refY="5" markerWidth="7" markerHeight="7" orient="auto">'
             '<path d="M0,0L10,5L0,10z" class="arrowhead"/></marker></defs>']
    for up, down in edges:
        (x1, y1), (x2, y2) = corner(up), corner(down)
        x1, y1, x2 = x1 + NODE_W / 2, y1 + NODE_H, x2 + NODE_W / 2
        bend = (y2 - y1) / 2
        parts.append(f'<path class="edge" data-from="{esc(up)}" data-to="{esc(down)}" '
                     f'd="M{fmt(x1)},{fmt(y1)}C{fmt(x1)},{fmt(y1 + bend)} {fmt(x2)},{fmt(y2 - bend)} {fmt(x2)},{fmt(y2)}" marker-end="url(#arrow)"/>')
    for step in ir.steps:
        info = states.get(step.id) or {}
        state = info.get("state") or "planned"
        x, y = corner(step.id)
        status = [state] + ([seconds_text(info["seconds"])] if info.get("seconds") is not None else [])
        detail = [step.kind]
        items = info.get("items")
        if isinstance(items, dict) and isinstance(items.get("total"), int):
            counts = f"{items.get('done', 0)}/{items['total']} items"
            if items.get("failed"):
                counts += f", {items['failed']} failed"
            detail.append(counts)
        elif fanout_text(step):
            detail.append(fanout_text(step))
        title = [f"{step.id} ({step.kind}): {state}"] + status[1:] + detail[1:] + ([info["note"]] if info.get("note") else [])
        shape = {"source": "source", "gate": "gate", "validate": "validate"}.get(step.kind, "box")
        parts.append(
            f'<g class="step state-{state} shape-{shape}" data-step="{esc(step.id)}" data-state="{state}" data-kind="{esc(step.kind)}">'
            f'<title>{esc(" | ".join(title))}</title>'
            f'<rect x="{fmt(x)}" y="{fmt(y)}" width="{NODE_W}" height="{NODE_H}" rx="{14 if shape == "source" else 5}"/>'
            f'<text x="{fmt(x + 9)}" y="{fmt(y + 18)}" class="name">{esc(truncate(step.id, 27))}</text>'
            f'<text x="{fmt(x + 9)}" y="{fmt(y + 35)}" class="state">{esc(" · ".join(status))}</text>'
            f'<text x="{fmt(x + 9)}" y="{fmt(y + 50)}" class="detail">{esc(truncate(" · ".join(detail), 36))}</text>'
            "</g>")
    parts.append("</svg>")
    return "".join(parts)


def legend(states: list[str]) -> str:
    return "".join(f'<span class="legend state-{s}"><i></i>{s}</span>' for s in states)
