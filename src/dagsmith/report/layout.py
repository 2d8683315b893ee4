"""A layered layout of the step graph, left to right, deterministic and about linear in size.

Layer = the longest path from a step without upstream steps (one pass in topological order);
within a layer, steps are ordered by a few barycenter sweeps (the mean position of their
neighbours in the layer before, then after), ties kept in topological order.
"""

from __future__ import annotations

from dataclasses import dataclass

SWEEPS = 4


@dataclass(frozen=True)
class Placed:
    layer: int
    row: int


def layered(nodes: list[str], edges: list[tuple[str, str]]) -> dict[str, Placed]:
    """`nodes` in a topological order; `edges` (upstream, downstream) between them."""
    index = {node: i for i, node in enumerate(nodes)}
    ups: dict[str, list[str]] = {node: [] for node in nodes}
    downs: dict[str, list[str]] = {node: [] for node in nodes}
    for up, down in edges:
        if up in index and down in index:
            ups[down].append(up)
            downs[up].append(down)
    layer: dict[str, int] = {}
    for node in nodes:
        layer[node] = 1 + max((layer[u] for u in ups[node] if u in layer), default=-1)
    count = 1 + max(layer.values(), default=-1)
    layers: list[list[str]] = [[] for _ in range(count)]
    for node in nodes:
        layers[layer[node]].append(node)
    position = {node: float(row) for members in layers for row, node in enumerate(members)}

    def sweep(order: range, neighbours: dict[str, list[str]]) -> None:
        for number in order:
            members = layers[number]

            def key(node: str) -> tuple[float, int]:
                near = neighbours[node]
                centre = sum(position[n] for n in near) / len(near) if near else position[node]
                return (centre, index[node])

            members.sort(key=key)
            for row, node in enumerate(members):
                position[node] = float(row)

    for turn in range(SWEEPS):
        if turn % 2 == 0:
            sweep(range(1, count), ups)
        else:
            sweep(range(count - 2, -1, -1), downs)
    return {node: Placed(layer[node], int(position[node])) for node in nodes}
