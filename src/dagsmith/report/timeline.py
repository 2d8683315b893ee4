"""The run as a timeline (Gantt): one bar per step from its start to its end, and under a
fan-out its items packed into lanes (one lane per item running at once), so the parallelism,
the critical path (marked) and the idle time (nothing running) show.
"""

from __future__ import annotations

import heapq

from .svg import esc, fmt, nice_ticks, parse_time, seconds_text, text, truncate

LABEL_W, PLOT_W, ROW_H, LANE_H, AXIS_H, PAD = 190, 760, 20, 7, 24, 8


def step_times(record: dict) -> dict[str, tuple[float | None, float | None]]:
    return {sid: (parse_time(e.get("started")), parse_time(e.get("ended")))
            for sid, e in (record.get("steps") or {}).items() if isinstance(e, dict)}


def critical_path(ir, times: dict) -> list[str]:
    """From the step that ended last, back through the upstream step that ended last each time:
    the chain that decided how long the run took."""
    ended = {sid: end for sid, (start, end) in times.items() if start is not None and end is not None}  # steps that ran
    if ir is None or not ended:
        return []
    current = max(ended, key=lambda sid: (ended[sid], sid))
    path = [current]
    while True:
        ups = [u for u in ir.step(current).depends_on if u in ended] if ir.has_step(current) else []
        if not ups:
            break
        current = max(ups, key=lambda sid: (ended[sid], sid))
        path.append(current)
    return path[::-1]


def _lanes(items: list[tuple[float, float, int, bool]]) -> tuple[list[int], int]:
    """Greedy interval packing: each item in the first lane free at its start."""
    free: list[tuple[float, int]] = []  # (end, lane)
    lanes, count = [], 0
    for start, end, _, _ in items:
        if free and free[0][0] <= start:
            _, lane = heapq.heappop(free)
        else:
            lane, count = count, count + 1
        heapq.heappush(free, (end, lane))
        lanes.append(lane)
    return lanes, count


def timeline(data) -> tuple[str, dict]:
    """(svg, facts): facts = {wall, busy, idle, critical: [ids], critical_seconds}."""
    record, ir = data.record, data.ir
    times = step_times(record)
    starts = [t for s, e in times.values() for t in (s, e) if t is not None]
    run_start = parse_time(record.get("started"))
    if run_start is not None:
        starts.append(run_start)
    if not starts:
        return "", {}
    t0 = min(starts)
    t1 = max([e for _, e in times.values() if e is not None] + [parse_time(record.get("ended")) or t0] + [t0])
    for rows in data.item_times.values():
        for row in rows:
            end = parse_time(row[2]) if len(row) > 2 else None
            if end is not None:
                t1 = max(t1, end)
    span = max(t1 - t0, 1e-3)
    scale = PLOT_W / span
    critical = critical_path(ir, times)
    order = [step.id for step in ir.steps] if ir is not None else list(times)
    rank = {sid: i for i, sid in enumerate(order)}
    order = sorted(order, key=lambda sid: (_first(times.get(sid)), rank[sid]))
    body, y = [], AXIS_H
    intervals = []
    for sid in order:
        start, end = times.get(sid, (None, None))
        state = data.state_of(sid)
        klass = f"bar state-{state}" + (" critical" if sid in critical else "")
        body.append(f'<g class="row" data-step="{esc(sid)}">' + text(LABEL_W - 8, y + 14, truncate(sid, 26), "label", "end"))
        if start is not None and end is not None:
            x, w = LABEL_W + (start - t0) * scale, max((end - start) * scale, 1.5)
            intervals.append((start, end))
            body.append(f'<rect class="{klass}" x="{fmt(x)}" y="{y + 3}" width="{fmt(w)}" height="{ROW_H - 6}">'
                        f'<title>{esc(sid)}: {state}, {seconds_text(end - start)}</title></rect>')
            body.append(text(x + w + 4, y + 14, seconds_text(end - start), "dur"))
        elif end is not None and state == "cached":  # no run: a mark where it was taken from the cache
            x = LABEL_W + (end - t0) * scale
            body.append(f'<path class="{klass}" d="M{fmt(x)},{y + 4}l5,6l-5,6l-5,-6z"><title>{esc(sid)}: {state}</title></path>')
            body.append(text(x + 8, y + 14, state, "dur"))
        else:
            body.append(text(LABEL_W + 4, y + 14, state, "dur muted"))
        body.append("</g>")
        y += ROW_H
        rows = data.item_times.get(sid) or []
        items = sorted(((parse_time(r[1]), parse_time(r[2]), r[0], r[3] is not False) for r in rows
                        if len(r) >= 4 and parse_time(r[1]) is not None and parse_time(r[2]) is not None),
                       key=lambda item: (item[0], item[2]))
        if items:
            lanes, count = _lanes(items)
            group = [f'<g class="items" data-step="{esc(sid)}" data-items="{len(items)}" data-lanes="{count}">']
            for (start, end, index, ok), lane in zip(items, lanes):
                x, w = LABEL_W + (start - t0) * scale, max((end - start) * scale, 1.0)
                group.append(f'<rect class="item{"" if ok else " failed"}" x="{fmt(x)}" y="{y + lane * LANE_H}" width="{fmt(w)}" height="{LANE_H - 1}">'
                             f'<title>{esc(sid)} item {index}: {seconds_text(end - start)}</title></rect>')
            group.append(text(LABEL_W - 8, y + min(count * LANE_H, 14) - 2, f"{len(items)} items", "label muted", "end"))
            group.append("</g>")
            body.extend(group)
            y += count * LANE_H + 4
    height = y + PAD
    axis = []
    for tick in nice_ticks(0, span, 8):
        x = LABEL_W + tick * scale
        axis.append(f'<line class="grid" x1="{fmt(x)}" y1="{AXIS_H - 4}" x2="{fmt(x)}" y2="{height - PAD}"/>' + text(x, AXIS_H - 8, seconds_text(tick), "tick", "middle"))
    width = LABEL_W + PLOT_W + 60
    svg = (f'<svg class="gantt" width="{width}" height="{height}" viewBox="0 0 {width} {height}">'
           + "".join(axis) + "".join(body) + "</svg>")
    busy = _union(intervals)
    critical_seconds = sum((times[s][1] - times[s][0]) for s in critical if times[s][0] is not None and times[s][1] is not None)
    return svg, {"wall": span, "busy": busy, "idle": max(span - busy, 0.0), "critical": critical, "critical_seconds": critical_seconds}


def _union(intervals: list[tuple[float, float]]) -> float:
    total, current = 0.0, None
    for start, end in sorted(intervals):
        if current is None or start > current[1]:
            if current is not None:
                total += current[1] - current[0]
            current = [start, end]
        else:
            current[1] = max(current[1], end)
    if current is not None:
        total += current[1] - current[0]
    return total


def _first(pair) -> float:
    start, end = pair or (None, None)
    return start if start is not None else end if end is not None else float("inf")
