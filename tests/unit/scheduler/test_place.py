"""The scheduler's choices and reasons on small, readable cases."""

from __future__ import annotations

from collections import Counter

from moorage.model import Constraint, PortSpec
from moorage.scheduler import Alloc, Ask, ClusterState, NodeInfo, place


def zone_nodes(per_zone: int = 2, memory: int = 4096) -> list[NodeInfo]:
    return [
        NodeInfo(f"{zone}{i}", 4096, memory, {"zone": zone})
        for zone in ("a", "b", "c")
        for i in range(per_zone)
    ]


def test_binpack_picks_the_fullest_node_that_still_fits() -> None:
    nodes = [NodeInfo(n, 4096, 1024) for n in ("empty", "half", "nearly-full")]
    allocs = [Alloc("half", "x", 100, 512), Alloc("nearly-full", "x", 100, 900)]
    plan = place(ClusterState.build(nodes, allocs), [Ask("web", 1, 100, 200)])
    assert plan.placements[0][0].node == "half"  # nearly-full has 124 MiB left: too little
    plan = place(ClusterState.build(nodes, allocs), [Ask("web", 1, 100, 100)])
    assert plan.placements[0][0].node == "nearly-full"


def test_binpack_fills_a_node_before_opening_the_next() -> None:
    nodes = [NodeInfo(f"n{i}", 4096, 1024) for i in range(4)]
    plan = place(ClusterState.build(nodes, []), [Ask("web", 6, 100, 256)])
    assert sorted(Counter(s.node for s in plan.placements[0]).values()) == [2, 4]


def test_binpack_steps_over_spent_nodes_but_keeps_those_a_smaller_ask_can_use() -> None:
    # 200 nodes whose cpu is spent (memory left) sit where every search starts; "crumbs" keeps
    # 40 cpu units and the least memory: too little cpu for "big", enough for one "small".
    nodes = [NodeInfo(f"spent{i:03d}", 1000, 4096) for i in range(200)]
    nodes += [NodeInfo("roomy", 1000, 4096), NodeInfo("crumbs", 1000, 4096)]
    allocs = [Alloc(f"spent{i:03d}", "x", 1000, 2048) for i in range(200)]
    allocs += [Alloc("roomy", "x", 100, 1024), Alloc("crumbs", "x", 960, 3000)]
    state = ClusterState.build(nodes, allocs)
    plan = place(state, [Ask("big", 3, 100, 256), Ask("small", 2, 30, 256)])
    assert [s.node for s in plan.placements[0]] == ["roomy"] * 3
    assert [s.node for s in plan.placements[1]] == ["crumbs", "roomy"]  # crumbs: 10 cpu left
    assert not plan.unplaced


def test_binpack_ends_cleanly_when_the_last_node_is_spent() -> None:
    plan = place(ClusterState.build([NodeInfo("only", 100, 4096)], []), [Ask("w", 3, 50, 64)])
    assert [s.node for s in plan.placements[0]] == ["only", "only"]
    assert plan.unplaced[0].count == 1 and "CPU" in plan.unplaced[0].reason


def test_spread_balances_over_zones_then_nodes() -> None:
    plan = place(
        ClusterState.build(zone_nodes(), []),
        [Ask("web", 6, 100, 64, strategy="spread", spread_attr="zone")],
    )
    nodes = [s.node for s in plan.placements[0]]
    assert Counter(n[0] for n in nodes) == {"a": 2, "b": 2, "c": 2}
    assert len(set(nodes)) == 6


def test_spread_counts_what_already_runs() -> None:
    allocs = [Alloc("a0", "web", 100, 64), Alloc("a1", "web", 100, 64)]
    plan = place(
        ClusterState.build(zone_nodes(), allocs),
        [Ask("web", 4, 100, 64, strategy="spread", spread_attr="zone")],
    )
    assert Counter(s.node[0] for s in plan.placements[0]) == {"b": 2, "c": 2}


def test_spread_without_an_attribute_spreads_over_nodes() -> None:
    nodes = [NodeInfo(f"n{i}", 4096, 4096) for i in range(3)]
    plan = place(ClusterState.build(nodes, []), [Ask("web", 6, 100, 64, strategy="spread")])
    assert sorted(Counter(s.node for s in plan.placements[0]).values()) == [2, 2, 2]


def test_a_task_too_big_for_every_node_gets_the_memory_reason() -> None:
    nodes = [NodeInfo(f"n{i}", 4096, 2048) for i in range(3)]
    plan = place(ClusterState.build(nodes, []), [Ask("big", 2, 100, 4096)])
    assert 0 not in plan.placements
    assert plan.unplaced[0].count == 2
    assert plan.unplaced[0].reason == "no node has 4096 MiB of free memory"


def test_an_unmet_constraint_is_named() -> None:
    ask = Ask("web", 1, 100, 64, constraints=(Constraint.parse("zone == z"),))
    plan = place(ClusterState.build(zone_nodes(), []), [ask])
    assert plan.unplaced[0].reason == "no node satisfies zone == z"


def test_mixed_rejections_are_tallied() -> None:
    nodes = [NodeInfo("small", 4096, 128, {"zone": "a"}), *zone_nodes(1)[1:]]
    ask = Ask("web", 1, 100, 256, constraints=(Constraint.parse("zone == a"),))
    plan = place(ClusterState.build(nodes, []), [ask])
    assert plan.unplaced[0].reason == (
        "no node fits: 2 excluded by zone == a, 1 lack memory (256 MiB)"
    )


def test_distinct_hosts_places_at_most_one_per_node() -> None:
    nodes = [NodeInfo(f"n{i}", 4096, 4096) for i in range(3)]
    ask = Ask("db", 5, 100, 64, constraints=(Constraint.parse("distinct_hosts"),))
    plan = place(ClusterState.build(nodes, []), [ask])
    assert len({s.node for s in plan.placements[0]}) == 3
    assert plan.unplaced[0].count == 2
    assert "distinct_hosts" in plan.unplaced[0].reason


def test_a_static_host_port_is_given_once_per_node() -> None:
    nodes = [NodeInfo("n1", 4096, 4096)]
    ask = Ask("web", 2, 100, 64, ports=(PortSpec(name="http", host=8080),))
    plan = place(ClusterState.build(nodes, []), [ask])
    assert plan.placements[0][0].ports == {"http": 8080}
    assert plan.unplaced[0].reason == "no node has host port 8080 free"


def test_dynamic_ports_avoid_ports_in_use_and_run_out_cleanly() -> None:
    nodes = [NodeInfo("n1", 4096, 4096, port_range=(20000, 20003))]
    allocs = [Alloc("n1", "old", 10, 10, (20001,))]
    ask = Ask("web", 4, 100, 64, ports=(PortSpec(name="http"),))
    plan = place(ClusterState.build(nodes, allocs), [ask])
    ports = sorted(s.ports["http"] for s in plan.placements[0])
    assert ports == [20000, 20002, 20003]
    assert plan.unplaced[0].reason == "no node has enough free dynamic ports"


def test_ineligible_nodes_get_nothing() -> None:
    nodes = [NodeInfo("down", 4096, 4096, eligible=False)]
    plan = place(ClusterState.build(nodes, []), [Ask("web", 1, 100, 64)])
    assert plan.unplaced[0].reason == "no node is eligible (all down or draining)"


def test_later_asks_see_earlier_placements() -> None:
    nodes = [NodeInfo("n1", 4096, 512)]
    plan = place(ClusterState.build(nodes, []), [Ask("a", 1, 100, 400), Ask("b", 1, 100, 400)])
    assert plan.placements[0][0].node == "n1"
    assert plan.unplaced[1].reason == "no node has 400 MiB of free memory"


def test_an_unmet_in_constraint_is_named_with_its_list() -> None:
    ask = Ask("web", 1, 100, 64, constraints=(Constraint.parse("zone in [x, y]"),))
    plan = place(ClusterState.build(zone_nodes(), []), [ask])
    assert plan.unplaced[0].reason == "no node satisfies zone in [x, y]"


def test_a_static_port_inside_the_dynamic_range_is_not_handed_out_twice() -> None:
    """Regression: a dynamic port of a task could be given the number of its own static port."""
    nodes = [NodeInfo("n1", 4096, 4096, port_range=(20000, 20003))]
    ports = (PortSpec(name="http"), PortSpec(name="admin", host=20001))
    for seed in range(32):  # the dynamic cursor starts at a seeded random point
        plan = place(ClusterState.build(nodes, []), [Ask("web", 3, 100, 64, ports=ports)], seed)
        (spot,) = plan.placements[0]  # the static port allows one task per node
        assert spot.ports["admin"] == 20001
        assert spot.ports["http"] in {20000, 20002, 20003}
        assert list(spot.ports) == ["http", "admin"]  # in the order the task declares them


def test_a_static_port_takes_a_slot_of_the_dynamic_range() -> None:
    """Regression: with the range's only port pinned, the dynamic port used to crash place()."""
    nodes = [NodeInfo("n1", 4096, 4096, port_range=(20000, 20000))]
    ports = (PortSpec(name="admin", host=20000), PortSpec(name="http"))
    plan = place(ClusterState.build(nodes, []), [Ask("web", 1, 100, 64, ports=ports)])
    assert plan.placements == {}
    assert plan.unplaced[0].count == 1
    assert plan.unplaced[0].reason == "no node has enough free dynamic ports"


def test_a_task_needing_a_driver_no_node_offers_is_explained() -> None:
    nodes = [
        NodeInfo("p1", 4096, 4096),
        NodeInfo("d1", 4096, 4096, drivers=frozenset({"process", "docker"})),
    ]
    plan = place(
        ClusterState.build(nodes, []), [Ask("web", 2, 100, 64, drivers=frozenset({"docker"}))]
    )
    assert {s.node for s in plan.placements[0]} == {"d1"}
    plan = place(
        ClusterState.build(nodes[:1], []), [Ask("web", 1, 100, 64, drivers=frozenset({"docker"}))]
    )
    assert plan.unplaced[0].reason == "no node has the docker driver"


def test_spot_preferred_fills_spot_nodes_first_then_overflows() -> None:
    from moorage.model import Constraint

    spot = Constraint(attr="lifecycle", op="==", values=("spot",))
    nodes = [
        NodeInfo("od1", 4096, 1024, {"lifecycle": "on-demand"}),
        NodeInfo("spot1", 4096, 1024, {"lifecycle": "spot"}),
        NodeInfo("spot2", 4096, 1024, {"lifecycle": "spot"}),
    ]
    plan = place(ClusterState.build(nodes, []), [Ask("worker", 8, 100, 256, prefer=spot)])
    assert Counter(s.node for s in plan.placements[0]) == {"spot1": 4, "spot2": 4}
    plan = place(ClusterState.build(nodes, []), [Ask("worker", 10, 100, 256, prefer=spot)])
    assert Counter(s.node for s in plan.placements[0]) == {"spot1": 4, "spot2": 4, "od1": 2}
    on_demand = Constraint.parse("lifecycle != spot")
    plan = place(ClusterState.build(nodes, []), [Ask("web", 6, 100, 256, constraints=(on_demand,))])
    assert {s.node for s in plan.placements[0]} == {"od1"} and plan.unplaced[0].count == 2


def test_host_volumes_pin_a_task_to_the_nodes_that_share_the_path() -> None:
    nodes = [
        NodeInfo("plain", 4096, 4096),
        NodeInfo("data", 4096, 4096, host_volumes=("/srv",)),
        NodeInfo("prefix", 4096, 4096, host_volumes=("/srv-other",)),
    ]
    for strategy in ("binpack", "spread"):
        ask = Ask("db", 3, 100, 64, host_paths=("/srv/pg",), strategy=strategy)  # type: ignore[arg-type]
        plan = place(ClusterState.build(nodes, []), [ask])
        assert {s.node for s in plan.placements[0]} == {"data"}, strategy
    ask = Ask("db", 1, 100, 64, host_paths=("/var/lib/docker",))
    plan = place(ClusterState.build(nodes, []), [ask])
    assert plan.unplaced[0].reason == (
        "no node shares the host path /var/lib/docker (agent --host-volume NAME=PATH)"
    )


def test_privileged_tasks_go_only_where_the_agent_allows_them() -> None:
    nodes = [NodeInfo("locked", 4096, 4096), NodeInfo("open", 4096, 8, privileged=True)]
    plan = place(ClusterState.build(nodes, []), [Ask("fuse", 1, 100, 64, privileged=True)])
    assert plan.unplaced[0].reason == (
        "no node fits: 1 lack memory (64 MiB), 1 do not allow privileged containers"
    )
    nodes[1] = NodeInfo("open", 4096, 4096, privileged=True)
    plan = place(ClusterState.build(nodes, []), [Ask("fuse", 1, 100, 64, privileged=True)])
    assert plan.placements[0][0].node == "open"
