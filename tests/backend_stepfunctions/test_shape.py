"""The nesting of a step graph into sequences and Parallels (backends/stepfunctions/shape.py), and
the state machine built from it: every step once, every edge respected, a step waiting for its
own upstreams only where the graph is series-parallel."""

from __future__ import annotations

import json

from hypothesis import given, settings
from hypothesis import strategies as st

from dagsmith.backends.stepfunctions.shape import Par, Seq, critical_path, finish_times, makespan, shape, steps_of


def graph(edges: str) -> tuple[list[str], dict]:
    """'a>c b>c b>d' -> (nodes in topological order, alphabetical among ready ones; upstreams)."""
    ups: dict = {}
    nodes: set = set()
    for edge in edges.split():
        up, down = edge.split(">")
        nodes |= {up, down}
        ups.setdefault(down, []).append(up)
    order: list = []
    while len(order) < len(nodes):
        order.append(min(n for n in nodes - set(order) if set(ups.get(n, ())) <= set(order)))
    return order, ups


def test_diamond_chains_and_independent_parts_follow_the_graph():
    assert shape(*graph("a>b a>c b>d c>d")) == Seq(("a", Par(("b", "c")), "d"))
    assert shape(*graph("a>c b>d c>e d>e")) == Seq((Par((Seq(("a", "c")), Seq(("b", "d")))), "e"))
    assert shape(["a", "b"], {}) == Par(("a", "b"))
    assert shape(["a"], {}) == "a"
    assert shape([], {}) is None


def test_a_feature_waits_for_its_own_source_only():
    # two sources, each feeding its own feature, then one training: was two layers of Parallels
    nodes, ups = graph("fast>f1 slow>f2 f1>train f2>train")
    durations = {"fast": 1, "f1": 10, "slow": 10, "f2": 1, "train": 1}
    assert makespan(shape(nodes, ups), durations) == critical_path(nodes, ups, durations) == 12


def test_the_n_shape_keeps_a_layer():
    # a->c, b->c, b->d is not series-parallel: its sources run first, then the rest
    assert shape(*graph("a>c b>c b>d")) == Seq((Par(("a", "b")), Par(("c", "d"))))


@st.composite
def dags(draw):
    size = draw(st.integers(min_value=1, max_value=14))
    nodes = [f"n{i:02d}" for i in range(size)]
    ups = {node: [nodes[j] for j in range(i) if draw(st.booleans()) and draw(st.booleans())] for i, node in enumerate(nodes)}
    durations = {node: draw(st.integers(min_value=1, max_value=20)) for node in nodes}
    return nodes, ups, durations


@settings(max_examples=200, deadline=None)
@given(dags())
def test_every_step_once_and_every_edge_respected(drawn):
    nodes, ups, durations = drawn
    nested = shape(nodes, ups)
    assert sorted(steps_of(nested)) == sorted(nodes)  # every step exactly once
    times = finish_times(nested, durations)
    for node in nodes:  # no step can start before all of its upstreams finished
        for up in ups[node]:
            assert times[up][1] <= times[node][0], (up, node, nested)
    assert critical_path(nodes, ups, durations) <= makespan(nested, durations)


@st.composite
def series_parallel(draw, names=None, depth=0):
    """A series-parallel DAG: (its nodes in topological order, upstreams, sources, sinks)."""
    names = names if names is not None else iter(f"n{i:02d}" for i in range(1000))
    kind = draw(st.sampled_from(["step", "step", "series", "parallel"])) if depth < 4 else "step"
    if kind == "step":
        node = next(names)
        return [node], {node: []}, [node], [node]
    parts = [draw(series_parallel(names, depth + 1)) for _ in range(draw(st.integers(2, 3)))]
    nodes, ups = [], {}
    for part_nodes, part_ups, _, _ in parts:
        nodes += part_nodes
        ups.update(part_ups)
    if kind == "parallel":
        return nodes, ups, [n for p in parts for n in p[2]], [n for p in parts for n in p[3]]
    for before, after in zip(parts, parts[1:]):  # every sink of one part -> every source of the next
        for source in after[2]:
            ups[source] = ups[source] + before[3]
    return nodes, ups, parts[0][2], parts[-1][3]


@settings(max_examples=150, deadline=None)
@given(series_parallel(), st.randoms(use_true_random=False))
def test_a_series_parallel_graph_runs_as_fast_as_the_graph(drawn, rng):
    """Where the graph is series-parallel, every step waits for its own upstreams only: the
    nesting's critical path IS the graph's, whatever the durations."""
    nodes, ups, _, _ = drawn
    nested = shape(nodes, ups)
    for _ in range(5):
        durations = {n: rng.randint(1, 100) for n in nodes}
        assert makespan(nested, durations) == critical_path(nodes, ups, durations), nested


def test_the_state_machine_follows_the_shape(in_repo):
    """churn: `events -> customer_activity` is a branch of its own beside `customers` and `plans`,
    the two validations run side by side, and each Check reads its upstream where it was written."""
    from dagsmith.backends import get
    from dagsmith_testing import compile_path

    ir = compile_path("examples/churn/pipeline.yaml")
    files = get("stepfunctions").emit(ir, ir.backends.get("stepfunctions", {}))
    definition = json.loads(next(text for name, text in files.items() if name.endswith(".asl.json")))
    first = definition["States"]["Parallel 1"]
    assert [b["StartAt"] for b in first["Branches"]] == ["Run_customers", "Run_events", "Run_plans"]
    assert first["Parameters"] == {"run.$": "$.run", "status.$": "$.status"}
    events = first["Branches"][1]["States"]
    # inside the branch: customer_activity reads events' state from the branch's own $.status
    steps = [s.id for s in ir.steps]
    activity = events["Check_customer_activity"]["Choices"][0]["Or"][0]["Variable"]
    assert activity == f"$.status.s{steps.index('events')}"
    assert events["Parallel 1 branch 1 done"]["End"] is True
    # after the Parallel: the features read each source in the Parallel's result
    paths = {c["Variable"] for c in definition["States"]["Check_churn_features"]["Choices"][0]["Or"]}
    assert "$.status.P1.b0" in paths and f"$.status.P1.b1.s{steps.index('customer_activity')}" in paths
    summary = definition["States"]["Summary"]["Parameters"]["steps"]
    assert summary["customers.$"] == "$.status.P1.b0" and summary["train.$"] == f"$.status.s{steps.index('train')}"
