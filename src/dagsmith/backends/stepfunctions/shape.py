"""The nesting of a step graph into sequences and Parallels: a step starts when its own upstreams
finish, not when every step of the graph's previous depth does.

    Seq(a, b, ...)   one after the other, in one branch
    Par(a, b, ...)   a Parallel state, one branch per part
    a step id        the step

`shape(nodes, upstreams)` decomposes the graph's order (its transitive closure) as a
series-parallel order where it is one, which is then exact: every step waits for its own upstreams
only. A part that is not series-parallel (an "N": a->c, b->c, b->d) has no such nesting; there its
first layer (the steps of the part with no upstream inside it) runs as a Parallel before the rest,
and the rest is decomposed again. Every step is in the shape once, and every edge u -> v is
respected: u is in an earlier element of a Seq that contains both (tests/backend_stepfunctions/
test_shape.py checks both on random graphs).
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Union


@dataclass(frozen=True)
class Seq:
    parts: tuple


@dataclass(frozen=True)
class Par:
    parts: tuple


Shape = Union[str, Seq, Par]


def ancestors_of(nodes: list[str], upstreams: dict) -> dict[str, frozenset]:
    """node -> every node it (transitively) depends on; `nodes` in topological order."""
    out: dict[str, frozenset] = {}
    for node in nodes:
        found: set = set()
        for up in upstreams.get(node, ()):
            found.add(up)
            found |= out[up]
        out[node] = frozenset(found)
    return out


def _components(nodes: list[str], linked) -> list[list[str]]:
    """The connected components of `nodes` under the symmetric relation `linked`, each in the
    order of `nodes`, ordered by their first node."""
    seen: set = set()
    parts = []
    for start in nodes:
        if start in seen:
            continue
        seen.add(start)
        part, todo = {start}, [start]
        while todo:
            node = todo.pop()
            for other in nodes:
                if other not in seen and linked(node, other):
                    seen.add(other)
                    part.add(other)
                    todo.append(other)
        parts.append([n for n in nodes if n in part])
    return parts


def shape(nodes: list[str], upstreams: dict) -> Shape | None:
    """The shape of the graph of `nodes` (topological order) with `upstreams` (node -> its direct
    upstream nodes); None for no nodes."""
    if not nodes:
        return None
    ancestors = ancestors_of(nodes, upstreams)

    def comparable(a: str, b: str) -> bool:
        return a in ancestors[b] or b in ancestors[a]

    def build(part: list[str]) -> Shape:
        if len(part) == 1:
            return part[0]
        apart = _components(part, comparable)
        if len(apart) > 1:  # independent parts: a Parallel
            return Par(tuple(build(p) for p in apart))
        # series: the parts of the incomparability graph, each before the next entirely
        series = _components(part, lambda a, b: not comparable(a, b))
        if len(series) > 1:
            series.sort(key=lambda p: part.index(p[0]))
            return _seq([build(p) for p in series])
        # not series-parallel here: its first layer, then the rest
        inside = set(part)
        first = [n for n in part if not (ancestors[n] & inside)]
        rest = [n for n in part if n not in set(first)]
        return _seq([first[0] if len(first) == 1 else Par(tuple(first)), build(rest)])

    return build(list(nodes))


def _seq(parts: list) -> Seq:
    flat: list = []
    for part in parts:
        flat.extend(part.parts if isinstance(part, Seq) else [part])
    return Seq(tuple(flat))


def steps_of(node: Shape) -> list[str]:
    """The steps of a shape, in the order they appear."""
    if isinstance(node, str):
        return [node]
    return [step for part in node.parts for step in steps_of(part)]


def finish_times(node: Shape, duration: dict, start: float = 0.0) -> dict[str, tuple[float, float]]:
    """step -> (start, finish) when the shape runs with these durations and no overhead: a Seq
    runs its parts one after the other, a Parallel ends when its last branch does."""
    if isinstance(node, str):
        return {node: (start, start + float(duration[node]))}
    out: dict = {}
    if isinstance(node, Seq):
        at = start
        for part in node.parts:
            times = finish_times(part, duration, at)
            out.update(times)
            at = max([at] + [end for _, end in times.values()])
        return out
    for part in node.parts:
        out.update(finish_times(part, duration, start))
    return out


def makespan(node: Shape | None, duration: dict) -> float:
    """The critical path of the shape: its longest chain of task durations through the nesting."""
    if node is None:
        return 0.0
    return max((end for _, end in finish_times(node, duration).values()), default=0.0)


def critical_path(nodes: list[str], upstreams: dict, duration: dict) -> float:
    """The graph's own critical path: the longest chain of durations along its edges."""
    finish: dict = {}
    for node in nodes:
        finish[node] = max((finish[up] for up in upstreams.get(node, ())), default=0.0) + float(duration[node])
    return max(finish.values(), default=0.0)
