"""Properties of the scheduler that hold for every input (hypothesis searches for a counterexample)."""

from __future__ import annotations

import math
from collections import Counter, defaultdict

from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from moorage.model import Constraint, PortSpec
from moorage.scheduler import Alloc, Ask, ClusterState, NodeInfo, Plan, place

ZONES = ("a", "b", "c")
CONSTRAINTS = [
    "zone == a",
    "zone != b",
    "zone in [a, c]",
    "zone not in [c]",
    "kind == big",
    "distinct_hosts",
]
SETTINGS = settings(max_examples=150, deadline=None, suppress_health_check=[HealthCheck.too_slow])


@st.composite
def nodes(draw: st.DrawFn) -> list[NodeInfo]:
    count = draw(st.integers(1, 12))
    return [
        NodeInfo(
            name=f"n{i}",
            cpu=draw(st.sampled_from([500, 1000, 2048, 4096])),
            memory=draw(st.sampled_from([256, 512, 1024, 4096])),
            attrs={
                "zone": draw(st.sampled_from(ZONES)),
                "kind": draw(st.sampled_from(["big", "small"])),
            },
            port_range=(20000, 20000 + draw(st.integers(2, 40))),
            eligible=draw(st.booleans()) or i == 0,
        )
        for i in range(count)
    ]


@st.composite
def asks(draw: st.DrawFn) -> list[Ask]:
    out = []
    for number in range(draw(st.integers(1, 5))):
        strategy = draw(st.sampled_from(["binpack", "spread"]))
        ports = [PortSpec(name="http")] if draw(st.booleans()) else []
        if draw(st.integers(0, 4)) == 0:
            ports.append(PortSpec(name="admin", host=draw(st.sampled_from([8080, 8081]))))
        out.append(
            Ask(
                service=f"s{number}",
                count=draw(st.integers(0, 15)),
                cpu=draw(st.sampled_from([50, 100, 250, 500])),
                memory=draw(st.sampled_from([32, 64, 128, 300])),
                ports=tuple(ports),
                constraints=tuple(
                    Constraint.parse(c)
                    for c in draw(st.lists(st.sampled_from(CONSTRAINTS), max_size=2, unique=True))
                ),
                strategy=strategy,
                spread_attr=draw(st.sampled_from([None, "zone"])) if strategy == "spread" else None,
            )
        )
    return out


@st.composite
def clusters(draw: st.DrawFn) -> tuple[list[NodeInfo], list[Alloc], list[Ask], int]:
    node_list = draw(nodes())
    allocs = []
    for node in node_list:
        for number in range(draw(st.integers(0, 3))):
            allocs.append(
                Alloc(node.name, "s0" if number == 0 else "old", 100, 64, (20000 + number,))
            )
    return node_list, allocs, draw(asks()), draw(st.integers(0, 2**32))


def usage(node_list: list[NodeInfo], allocs: list[Alloc], ask_list: list[Ask], plan: Plan):
    cpu: Counter[str] = Counter()
    mem: Counter[str] = Counter()
    ports: dict[str, list[int]] = defaultdict(list)
    for alloc in allocs:
        cpu[alloc.node] += alloc.cpu
        mem[alloc.node] += alloc.memory
        ports[alloc.node].extend(alloc.host_ports)
    for position, placed in plan.placements.items():
        ask = ask_list[position]
        for spot in placed:
            cpu[spot.node] += ask.cpu
            mem[spot.node] += ask.memory
            ports[spot.node].extend(spot.ports.values())
    return cpu, mem, ports


@SETTINGS
@given(clusters())
def test_never_over_commits_a_node(
    case: tuple[list[NodeInfo], list[Alloc], list[Ask], int],
) -> None:
    node_list, allocs, ask_list, seed = case
    plan = place(ClusterState.build(node_list, allocs), ask_list, seed)
    cpu, mem, ports = usage(node_list, allocs, ask_list, plan)
    placed_on = {s.node for placed in plan.placements.values() for s in placed}
    for node in node_list:
        if node.name not in placed_on:
            continue  # existing allocations alone may exceed; the scheduler added nothing there
        assert cpu[node.name] <= node.cpu
        assert mem[node.name] <= node.memory
        assert len(ports[node.name]) == len(set(ports[node.name])), "a host port given twice"


@SETTINGS
@given(clusters())
def test_never_violates_a_constraint(
    case: tuple[list[NodeInfo], list[Alloc], list[Ask], int],
) -> None:
    node_list, allocs, ask_list, seed = case
    by_name = {n.name: n for n in node_list}
    plan = place(ClusterState.build(node_list, allocs), ask_list, seed)
    for position, placed in plan.placements.items():
        ask = ask_list[position]
        for spot in placed:
            node = by_name[spot.node]
            assert node.eligible
            for constraint in ask.constraints:
                if constraint.op != "distinct_hosts":
                    assert constraint.matches({**node.attrs, "node.name": node.name}), (
                        constraint,
                        node,
                    )
            low, high = node.port_range
            for spec in ask.ports:
                port = spot.ports[spec.name]
                assert port == spec.host if spec.host is not None else low <= port <= high
        if any(c.op == "distinct_hosts" for c in ask.constraints):
            existing = {a.node for a in allocs if a.service == ask.service}
            hosts = [s.node for s in placed]
            assert len(hosts) == len(set(hosts)) and not existing & set(hosts)


@SETTINGS
@given(clusters())
def test_is_deterministic_for_a_seed(
    case: tuple[list[NodeInfo], list[Alloc], list[Ask], int],
) -> None:
    node_list, allocs, ask_list, seed = case
    first = place(ClusterState.build(node_list, allocs), ask_list, seed)
    again = place(ClusterState.build(list(reversed(node_list)), allocs), ask_list, seed)
    assert first == again


@SETTINGS
@given(clusters())
def test_every_task_is_placed_or_explained(
    case: tuple[list[NodeInfo], list[Alloc], list[Ask], int],
) -> None:
    node_list, allocs, ask_list, seed = case
    plan = place(ClusterState.build(node_list, allocs), ask_list, seed)
    for position, ask in enumerate(ask_list):
        placed = len(plan.placements.get(position, []))
        unplaced = plan.unplaced.get(position)
        assert placed + (unplaced.count if unplaced else 0) == ask.count
        if unplaced is not None:
            assert unplaced.reason.startswith("no node")


@SETTINGS
@given(clusters())
def test_the_snapshot_is_not_mutated(
    case: tuple[list[NodeInfo], list[Alloc], list[Ask], int],
) -> None:
    node_list, allocs, ask_list, seed = case
    state = ClusterState.build(node_list, allocs)
    before = (
        dict(state.cpu_used),
        dict(state.mem_used),
        dict(state.ports_used),
        {service: dict(nodes) for service, nodes in state.by_service.items()},
    )
    place(state, ask_list, seed)
    assert before == (state.cpu_used, state.mem_used, state.ports_used, state.by_service)


def lower_bound(ask_list: list[Ask], cpu: int, memory: int) -> int:
    return max(
        math.ceil(sum(a.cpu * a.count for a in ask_list) / cpu),
        math.ceil(sum(a.memory * a.count for a in ask_list) / memory),
    )


@SETTINGS
@given(
    st.integers(1, 8).map(lambda k: 4096 // 2**k),  # cpu per task divides the node's 4096
    st.integers(1, 6).map(lambda k: 8192 // 2**k),  # memory per task divides the node's 8192
    st.integers(1, 120),
    st.integers(0, 2**32),
)
def test_binpack_of_identical_tasks_is_within_5_percent_of_the_bound(
    cpu: int, memory: int, count: int, seed: int
) -> None:
    node_list = [NodeInfo(f"n{i}", 4096, 8192) for i in range(200)]
    ask = Ask("web", count, cpu, memory)
    plan = place(ClusterState.build(node_list, []), [ask], seed)
    assert 0 not in plan.unplaced
    used = {s.node for s in plan.placements[0]}
    assert len(used) <= math.ceil(1.05 * lower_bound([ask], 4096, 8192))


@SETTINGS
@given(
    st.lists(
        st.tuples(st.integers(0, 4).map(lambda k: 2048 // 2**k), st.integers(1, 30)),
        min_size=1,
        max_size=6,
    ),
    st.integers(0, 2**32),
)
def test_binpack_of_mixed_tasks_is_within_5_percent_of_the_bound(
    sizes: list[tuple[int, int]], seed: int
) -> None:
    """Services of different sizes (each dividing the node), placed in one scheduling pass."""
    node_list = [NodeInfo(f"n{i}", 64_000, 4096) for i in range(200)]
    ask_list = [Ask(f"s{i}", count, 10, memory) for i, (memory, count) in enumerate(sizes)]
    plan = place(ClusterState.build(node_list, []), ask_list, seed)
    assert not plan.unplaced
    used = {s.node for placed in plan.placements.values() for s in placed}
    assert len(used) <= math.ceil(1.05 * lower_bound(ask_list, 64_000, 4096))
