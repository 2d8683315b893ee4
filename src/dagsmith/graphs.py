"""Deterministic topological order without importing networkx on the hot path.

`dagsmith compile` runs in CI on every commit; networkx costs ~90 ms to import, more than the
compile of a 20,000-trial spec. The IR still exposes a networkx.DiGraph (`IR.graph`), built on
first use.
"""

from __future__ import annotations

import heapq
from typing import Iterable


class CycleError(ValueError):
    def __init__(self, remaining: list[str]):
        super().__init__(f"cycle among {remaining}")
        self.remaining = remaining


def topological_order(nodes: Iterable[str], edges: Iterable[tuple[str, str]]) -> list[str]:
    """Kahn's algorithm, smallest name first among the ready nodes (like networkx's
    lexicographical_topological_sort). Raises CycleError naming the nodes left over."""
    indegree = {node: 0 for node in nodes}
    children: dict[str, list[str]] = {node: [] for node in indegree}
    for up, down in edges:
        children.setdefault(up, []).append(down)
        indegree.setdefault(up, 0)
        indegree[down] = indegree.get(down, 0) + 1
        children.setdefault(down, [])
    ready = [node for node, degree in indegree.items() if degree == 0]
    heapq.heapify(ready)
    order = []
    while ready:
        node = heapq.heappop(ready)
        order.append(node)
        for child in children[node]:
            indegree[child] -= 1
            if indegree[child] == 0:
                heapq.heappush(ready, child)
    if len(order) != len(indegree):
        raise CycleError(sorted(n for n, d in indegree.items() if d > 0))
    return order
