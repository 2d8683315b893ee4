"""The sweep: one table row per trial (partition, parameters, metrics; the selected trial of
each partition marked) and the selection metric plotted against each swept parameter: one plot
per parameter over every trial (a line through the mean at each value), and per partition when
the sweep is partitioned.
"""

from __future__ import annotations

import math

from .svg import esc, fmt, is_number, nice_ticks, num, text, truncate

MAX_PARTITION_PLOTS = 60  # partitions drawn one by one (all of them are in the table)


def selected_indexes(data) -> set[int]:
    return {s["index"] for s in data.selection if isinstance(s.get("index"), int)}


def _partition_label(value) -> str:
    return "(all)" if value is None else num(value)


def trials_table(data) -> str:
    trials = data.trials
    if not trials:
        return ""
    chosen = selected_indexes(data)
    partitioned = any(t.get("partition") is not None for t in trials)
    params = list(data.swept) + sorted({k for t in trials for k in (t.get("params") or {})} - set(data.swept))
    metric = data.select.get("metric")
    metrics = sorted({k for t in trials for k in (t.get("metrics") or {})}, key=lambda m: (m != metric, m))
    head = ["#"] + (["partition"] if partitioned else []) + params + metrics + ["selected"]
    rows = []
    for t in trials:
        index = t.get("index")
        picked = index in chosen
        cells = [num(index)] + ([num(t.get("partition"))] if partitioned else [])
        cells += [num((t.get("params") or {}).get(p)) for p in params]
        cells += [num((t.get("metrics") or {}).get(m)) for m in metrics]
        mark = '<td class="mark">\u2605 selected</td>' if picked else "<td></td>"
        attrs = f' class="selected" data-selected="true"' if picked else ""
        rows.append(f'<tr data-index="{esc(index)}"{attrs}>' + "".join(f"<td>{esc(c)}</td>" for c in cells) + mark + "</tr>")
    goal = data.select.get("goal") or "max"
    caption = (f"{len(trials)} trials" + (f" in {len({_key(t.get('partition')) for t in trials})} partitions" if partitioned else "")
               + (f"; selected by {metric} ({goal})" if metric else ""))
    return (f'<p class="caption">{esc(caption)}</p><div class="scroll"><table class="trials"><thead><tr>'
            + "".join(f'<th{" class=sel-metric" if h == metric else ""}>{esc(h)}</th>' for h in head)
            + "</tr></thead><tbody>" + "".join(rows) + "</tbody></table></div>")


def _key(value) -> str:
    return num(value) if value is not None else ""


def plots(data) -> str:
    """Per swept parameter: every trial (summary across partitions), then one small plot per
    partition (up to MAX_PARTITION_PLOTS)."""
    metric = data.select.get("metric")
    if not data.trials or not metric or not data.swept:
        return ""
    chosen = selected_indexes(data)
    partitioned = any(t.get("partition") is not None for t in data.trials)
    out = []
    summary_title = "every trial, all partitions" if partitioned else "every trial"
    out.append('<div class="plots">')
    for param in data.swept:
        out.append(scatter(data.trials, param, metric, chosen, f"{metric} vs {param} ({summary_title})", 360, 240, detail=True))
    out.append("</div>")
    if partitioned:
        groups: dict[str, list] = {}
        for t in data.trials:
            groups.setdefault(_key(t.get("partition")), []).append(t)
        names = list(groups)
        out.append(f'<h3>per partition</h3><p class="caption">{len(names)} partitions'
                   + (f"; the first {MAX_PARTITION_PLOTS} drawn (every trial is in the table)" if len(names) > MAX_PARTITION_PLOTS else "")
                   + "</p>")
        out.append('<div class="plots small">')
        for name in names[:MAX_PARTITION_PLOTS]:
            for param in data.swept:
                out.append(scatter(groups[name], param, metric, chosen, f"{name}: {metric} vs {param}", 230, 160, detail=False,
                                   partition=name))
        out.append("</div>")
    return "".join(out)


def scatter(trials: list, param: str, metric: str, chosen: set, title: str, width: int, height: int, *,
            detail: bool, partition: str | None = None) -> str:
    points = []
    for t in trials:
        x, y = (t.get("params") or {}).get(param), (t.get("metrics") or {}).get(metric)
        if is_number(y):
            points.append((x, float(y), t.get("index") in chosen, t))
    left, right, top, bottom = 46, 10, 22, 30
    pw, ph = width - left - right, height - top - bottom
    attrs = f' data-param="{esc(param)}"' + (f' data-partition="{esc(partition)}"' if partition is not None else "")
    parts = [f'<svg class="scatter" width="{width}" height="{height}" viewBox="0 0 {width} {height}"{attrs}>',
             text(left, 14, truncate(title, int(width / 6.2)), "ptitle")]
    if not points:
        parts.append(text(left, top + ph / 2, "no trial has this metric", "muted"))
        return "".join(parts) + "</svg>"
    numeric = all(is_number(x) for x, *_ in points)
    xs = [float(x) for x, *_ in points] if numeric else []
    log = numeric and min(xs) > 0 and max(xs) / min(xs) >= 20
    if numeric:
        lo, hi = (math.log10(min(xs)), math.log10(max(xs))) if log else (min(xs), max(xs))
        if hi == lo:
            lo, hi = lo - 1, hi + 1
        pad = (hi - lo) * 0.06
        lo, hi = lo - pad, hi + pad

        def xpos(value) -> float:
            v = math.log10(float(value)) if log else float(value)
            return left + (v - lo) / (hi - lo) * pw
        ticks = ([10 ** e for e in range(math.ceil(lo), math.floor(hi) + 1)] if log else nice_ticks(lo, hi, 5))
        xticks = [(xpos(t), num(t)) for t in ticks]
    else:
        categories = list(dict.fromkeys(num(x) for x, *_ in points))
        band = pw / len(categories)
        where = {c: left + band * (i + 0.5) for i, c in enumerate(categories)}

        def xpos(value) -> float:
            return where[num(value)]
        step = max(1, math.ceil(len(categories) / max(pw // 40, 1)))
        xticks = [(where[c], c) for c in categories[::step]]
    ys = [y for _, y, *_ in points]
    ylo, yhi = min(ys), max(ys)
    if yhi == ylo:
        ylo, yhi = ylo - 0.5 * (abs(ylo) or 1) * 0.01 - 1e-9, yhi + 0.5 * (abs(yhi) or 1) * 0.01 + 1e-9
    ypad = (yhi - ylo) * 0.08
    ylo, yhi = ylo - ypad, yhi + ypad

    def ypos(value: float) -> float:
        return top + ph - (value - ylo) / (yhi - ylo) * ph

    parts.append(f'<rect class="frame" x="{left}" y="{top}" width="{pw}" height="{ph}"/>')
    for tick in nice_ticks(ylo, yhi, 4):
        y = ypos(tick)
        parts.append(f'<line class="grid" x1="{left}" x2="{left + pw}" y1="{fmt(y)}" y2="{fmt(y)}"/>' + text(left - 4, y + 3, num(tick), "tick", "end"))
    for x, label in xticks:
        parts.append(text(x, top + ph + 13, truncate(label, 10), "tick", "middle"))
    parts.append(text(left + pw / 2, height - 3, param + (" (log)" if log else ""), "axis", "middle"))
    means: dict = {}
    for x, y, _, _ in points:
        means.setdefault(num(x), [x, []])[1].append(y)
    line = sorted(((xpos(x), sum(v) / len(v)) for x, v in means.values()), key=lambda p: p[0])
    if len(line) > 1:
        parts.append('<polyline class="mean" points="' + " ".join(f"{fmt(px)},{fmt(ypos(py))}" for px, py in line) + '"/>')
    for x, y, picked, t in sorted(points, key=lambda p: p[2]):  # the selected ones on top
        cx, cy = fmt(xpos(x)), fmt(ypos(y))
        tip = f"<title>trial {esc(t.get('index'))}: {esc(param)}={esc(num(x))}, {esc(metric)}={esc(num(y))}</title>" if detail or picked else ""
        if picked:
            parts.append(f'<circle class="pt sel" data-index="{esc(t.get("index"))}" cx="{cx}" cy="{cy}" r="5">{tip}</circle>')
        else:
            parts.append(f'<circle class="pt" cx="{cx}" cy="{cy}" r="2.6">{tip}</circle>')
    return "".join(parts) + "</svg>"
