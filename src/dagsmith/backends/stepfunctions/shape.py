"""The nesting of a step graph into sequences and Parallels: a step starts when its own upstreams
finish, not when every step of the graph's previous depth does.

    Seq(a, b, ...)   one after the other, in one branch
    Par(a, b, ...)   a Parallel state, one branch per part
    a step id        the step

`shape(nodes, upstreams)` decomposes the graph's order (its transitive closure) as a
series-parallel order where it is one, which is then exact: every step waits for its own upstreams
only. A part that is not series-parallel (an "N": a->c, b->c, b->d) has no such nesting: some step
must wait for more than its upstreams. There the part is cut between two of its layers (counted
from its top or its bottom: the layers it would have been), the first half running entirely before
the rest, each half decomposed again; of those cuts, the one whose nesting is shortest on a few
deterministic draws of step durations (SAMPLES, uniform 1..60: no durations are known at compile
time) is kept. Every step is in the shape once, and every edge u -> v is
respected: u is in an earlier element of a Seq that contains both (tests/backend_stepfunctions/
test_shape.py checks both on random graphs).
"""

from __future__ import annotations

import random
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


def _independent(part: list[str], ancestors: dict, descendants: dict, inside: set) -> list[list[str]]:
    """The parts of `part` no step of which is an ancestor or a descendant of a step of another,
    each in the order of `part`, ordered by their first step."""
    seen: set = set()
    out = []
    for start in part:
        if start in seen:
            continue
        seen.add(start)
        found, todo = {start}, [start]
        while todo:
            node = todo.pop()
            for other in ((ancestors[node] | descendants[node]) & inside) - seen:
                seen.add(other)
                found.add(other)
                todo.append(other)
            if len(found) == len(part):
                return [part]
        out.append([n for n in part if n in found])
    return out


def _series(part: list[str], ancestors: dict) -> list[list[str]]:
    """`part` (topological order) cut where every step before the cut is an ancestor of every
    step after it: its series parts (contiguous in any topological order)."""
    position = {n: i for i, n in enumerate(part)}
    inside = set(part)
    cuts, lowest = [], len(part)
    for i in range(len(part) - 1, 0, -1):  # a cut before i: every step from i on has all before i as ancestors
        # the first step of `part` that is not an ancestor of part[i] (part[i] itself, if none)
        lowest = min(lowest, min(position[n] for n in inside - ancestors[part[i]]))
        if lowest >= i:
            cuts.append(i)
    bounds = [0] + sorted(cuts) + [len(part)]
    return [part[a:b] for a, b in zip(bounds, bounds[1:])]


SAMPLES = 12  # duration draws a cut of a non-series-parallel part is judged on
BUDGET = 30_000  # steps in the parts decomposed per graph; past it, a part's first layer is its cut


def shape(nodes: list[str], upstreams: dict) -> Shape | None:
    """The shape of the graph of `nodes` (topological order) with `upstreams` (node -> its direct
    upstream nodes); None for no nodes."""
    if not nodes:
        return None
    ancestors = ancestors_of(nodes, upstreams)
    rng = random.Random(len(nodes))  # deterministic: the same graph, the same shape
    samples = [{n: rng.randint(1, 60) for n in nodes} for _ in range(SAMPLES)]
    memo: dict = {}
    budget = [BUDGET]

    descendants: dict = {n: set() for n in nodes}
    for n in nodes:
        for a in ancestors[n]:
            descendants[a].add(n)

    spans: dict = {}  # a part's steps -> how long its shape runs on each sample

    def build(part: list[str]) -> Shape:
        key = frozenset(part)
        if key not in memo:
            memo[key] = _build(part)
            node = memo[key]
            if isinstance(node, str):
                spans[key] = tuple(sample[node] for sample in samples)
            else:
                inner = [spans[frozenset(steps_of(p))] for p in node.parts]
                spans[key] = tuple(map(sum if isinstance(node, Seq) else max, zip(*inner)))
        return memo[key]

    def _build(part: list[str]) -> Shape:
        if len(part) == 1:
            return part[0]
        budget[0] -= len(part)
        inside = set(part)
        apart = _independent(part, ancestors, descendants, inside)
        if len(apart) > 1:  # independent parts: a Parallel
            return Par(tuple(build(p) for p in apart))
        series = _series(part, ancestors)
        if len(series) > 1:  # each entirely before the next
            return _seq([build(p) for p in series])
        return _seq(list(best_cut(part)))

    def best_cut(part: list[str]) -> tuple:
        """Not series-parallel: some steps wait for more than their upstreams whatever the
        nesting. Cut the part in two, a first half (closed under upstreams) entirely before the
        rest: of the cuts between its layers counted from the top (depth) or from the bottom
        (height), the one whose nesting runs shortest on the sampled durations."""
        inside = set(part)
        if budget[0] <= 0:  # past the budget: the part's first layer, then the rest
            return build([n for n in part if not ancestors[n] & inside]), build([n for n in part if ancestors[n] & inside])
        depth: dict = {}
        for n in part:
            depth[n] = 1 + max((depth[a] for a in ancestors[n] & inside), default=-1)
        height: dict = {}
        for n in reversed(part):
            height[n] = 1 + max((height[d] for d in descendants[n] & inside), default=-1)
        cuts = [[n for n in part if depth[n] <= k] for k in range(max(depth.values()))]
        cuts += [[n for n in part if height[n] > k] for k in range(max(height.values()))]
        best, score = None, None
        for first in dict.fromkeys(tuple(c) for c in cuts):
            if best is not None and budget[0] <= 0:
                break
            rest = [n for n in part if n not in set(first)]
            shaped = (build(list(first)), build(rest))
            got = sum(a + b for a, b in zip(spans[frozenset(first)], spans[frozenset(rest)]))
            if score is None or got < score:
                best, score = shaped, got
        return best

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
