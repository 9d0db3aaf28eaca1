"""Explicit rebalancing: which tasks move (pure decision), and how the reconciler moves them."""

from __future__ import annotations

from collections import Counter
from collections.abc import Sequence

import pytest

from moorage.controllers.plan import Plan
from moorage.controllers.rebalance import plan_rebalance
from moorage.controllers.reconcile import reconcile
from moorage.model import (
    Conflict,
    Container,
    Deployment,
    DeploymentPolicy,
    Desired,
    Health,
    Node,
    NotFound,
    Placement,
    Service,
    Task,
    TaskDefinition,
    TaskStatus,
)
from moorage.model.cluster import ClusterSnapshot

NOW = 1_000_000.0
SPREAD = Placement(strategy="spread", spread_attr="zone")


def taskdef(memory: int = 256) -> TaskDefinition:
    app = Container(name="app", command=["x"], cpu=100, memory=memory)
    return TaskDefinition(family="web", revision=1, containers=[app])


def service(count: int, placement: Placement = SPREAD, **update: object) -> Service:
    svc = Service(name="web", family="web", revision=1, count=count, placement=placement)
    return svc.model_copy(update=update)


def zones(memory: int = 4096) -> list[Node]:
    """n1, n2, n3 in zones a, b, c."""
    return [
        Node(name=f"n{i}", cpu=4096, memory=memory, attrs={"zone": "abc"[i - 1]})
        for i in range(1, 4)
    ]


def running(per_node: dict[str, int], memory: int = 256) -> list[Task]:
    """Healthy running tasks of web:1, ids <node>-<i>, created in order (the last is newest)."""
    return [
        Task(
            id=f"{node}-{i}",
            service="web",
            family="web",
            revision=1,
            node=node,
            status=TaskStatus.RUNNING,
            run_generation=0,
            cpu=100,
            memory=memory,
            created_at=float(i),
        )
        for node, count in per_node.items()
        for i in range(count)
    ]


def snap(
    svc: Service,
    tasks: list[Task],
    nodes: list[Node],
    deployments: Sequence[Deployment] = (),
) -> ClusterSnapshot:
    return ClusterSnapshot(
        services={svc.name: svc},
        taskdefs={("web", 1): taskdef()},
        tasks={t.id: t for t in tasks},
        nodes={n.name: n for n in nodes},
        deployments={d.id: d for d in deployments},
    )


def flag(snapshot: ClusterSnapshot, ids: list[str]) -> ClusterSnapshot:
    tasks = dict(snapshot.tasks)
    for task_id in ids:
        tasks[task_id] = tasks[task_id].model_copy(update={"migrate": True})
    return ClusterSnapshot(
        snapshot.services, snapshot.taskdefs, tasks, snapshot.nodes, snapshot.deployments
    )


def apply(snapshot: ClusterSnapshot, plan: Plan) -> ClusterSnapshot:
    tasks = dict(snapshot.tasks)
    for new, _old in plan.writes.values():
        tasks[new.id] = new
    return ClusterSnapshot(
        snapshot.services, snapshot.taskdefs, tasks, snapshot.nodes, snapshot.deployments
    )


def run_agent(snapshot: ClusterSnapshot, only: set[str] | None = None) -> ClusterSnapshot:
    """Assigned → running, desired stop → stopped (for the tasks in `only`, if given)."""
    tasks = {}
    for task in snapshot.tasks.values():
        if only is None or task.id in only:
            if task.desired == Desired.STOP and not task.status.terminal:
                task = task.model_copy(update={"status": TaskStatus.STOPPED})
            elif task.status == TaskStatus.ASSIGNED:
                task = task.model_copy(update={"status": TaskStatus.RUNNING, "run_generation": 0})
        tasks[task.id] = task
    return ClusterSnapshot(
        snapshot.services, snapshot.taskdefs, tasks, snapshot.nodes, snapshot.deployments
    )


def per_node(snapshot: ClusterSnapshot) -> dict[str, int]:
    return dict(Counter(t.node for t in snapshot.tasks.values() if t.live and t.node))


def rebalanced(snapshot: ClusterSnapshot, rounds: int = 10) -> ClusterSnapshot:
    """Flag what plan_rebalance picks, then reconcile with a well-behaved agent until quiet."""
    moves = plan_rebalance(snapshot, "web").moves
    snapshot = flag(snapshot, [m.task for m in moves])
    for i in range(rounds):
        plan = reconcile(snapshot, NOW + i, seed=i)
        snapshot = run_agent(apply(snapshot, plan))
        if plan.empty:
            return snapshot
    raise AssertionError("did not converge")


# ---- the decision -----------------------------------------------------------------------------


def test_spread_3_3_0_moves_one_task_from_each_loaded_node() -> None:
    tasks = running({"n1": 3, "n2": 3})
    tasks[0] = tasks[0].model_copy(update={"health": Health.CRITICAL})  # n1-0: the oldest
    decision = plan_rebalance(snap(service(6), tasks, zones()), "web")
    # Unhealthy first (n1-0, though the oldest), then the newest (n2-2).
    assert sorted((m.node, m.task) for m in decision.moves) == [("n1", "n1-0"), ("n2", "n2-2")]
    assert decision.current == {"n1": 3, "n2": 3}
    assert decision.target == {"n1": 2, "n2": 2, "n3": 2}


def test_spread_2_2_2_moves_nothing() -> None:
    decision = plan_rebalance(
        snap(service(6), running({"n1": 2, "n2": 2, "n3": 2}), zones()), "web"
    )
    assert decision.moves == ()
    assert decision.message == "already balanced"


@pytest.mark.parametrize("seed", range(4))
def test_spread_ties_are_not_moves_and_uneven_moves_the_fewest(seed: int) -> None:
    # 7 over 3 zones: the scheduler gives the 3rd task to zone a, but 2+2+3 is as even.
    even = snap(service(7), running({"n1": 2, "n2": 2, "n3": 3}), zones())
    assert plan_rebalance(even, "web", seed=seed).moves == ()
    # 1+2+4: one move (from n3) makes it 2+2+3; two would make it 3+2+2.
    uneven = snap(service(7), running({"n1": 1, "n2": 2, "n3": 4}), zones())
    decision = plan_rebalance(uneven, "web", seed=seed)
    assert [m.node for m in decision.moves] == ["n3"]
    assert decision.target == {"n1": 2, "n2": 2, "n3": 3}
    assert per_node(rebalanced(uneven)) == {"n1": 2, "n2": 2, "n3": 3}


def test_spread_moves_tasks_off_nodes_the_service_may_no_longer_use() -> None:
    placement = Placement(strategy="spread", spread_attr="zone", constraints=["zone != c"])
    decision = plan_rebalance(
        snap(service(4, placement), running({"n1": 2, "n3": 2}), zones()), "web"
    )
    assert sorted(m.task for m in decision.moves) == ["n3-0", "n3-1"]
    assert decision.target == {"n1": 2, "n2": 2}


def test_binpack_already_packed_moves_nothing() -> None:
    # Each node fits 4 tasks: 4 on n2 is as packed as 4 on any other node.
    nodes = zones(memory=1024)
    binpack = Placement()
    for seed in range(4):
        decision = plan_rebalance(
            snap(service(4, binpack), running({"n2": 4}), nodes), "web", seed=seed
        )
        assert decision.moves == ()
    spread_out = snap(service(4, binpack), running({"n1": 2, "n2": 2}), nodes)
    assert plan_rebalance(spread_out, "web").moves  # not packed: it moves
    assert sorted(per_node(rebalanced(spread_out)).values()) == [4]


def test_binpack_spot_preferred_moves_to_spot_nodes_once_there_are_some() -> None:
    spot = Placement(capacity="spot_preferred")
    nodes = [
        Node(name="n1", cpu=4096, memory=1024, attrs={"lifecycle": "spot"}),
        Node(name="n2", cpu=4096, memory=1024),
        Node(name="n3", cpu=4096, memory=1024),
    ]
    on_demand = snap(service(4, spot), running({"n2": 4}), nodes)
    decision = plan_rebalance(on_demand, "web")
    assert len(decision.moves) == 4 and decision.target == {"n1": 4}
    assert per_node(rebalanced(on_demand)) == {"n1": 4}
    assert plan_rebalance(snap(service(4, spot), running({"n1": 4}), nodes), "web").moves == ()


def test_nothing_to_rebalance_errors() -> None:
    tasks = running({"n1": 3, "n2": 3})
    with pytest.raises(NotFound, match="no service named 'api'"):
        plan_rebalance(snap(service(6), tasks, zones()), "api")
    deploying = Deployment(
        id="web-1-abc", service="web", family="web", from_revision=None, to_revision=1, count=6
    )
    busy = snap(service(6, deployment_id=deploying.id), tasks, zones(), [deploying])
    with pytest.raises(Conflict, match="deployment web-1-abc running"):
        plan_rebalance(busy, "web")
    moving = flag(snap(service(6), tasks, zones()), ["n1-2"])
    with pytest.raises(Conflict, match="still moving 1 task"):
        plan_rebalance(moving, "web")
    with pytest.raises(Conflict, match="stopped"):
        plan_rebalance(snap(service(6, status="stopped"), tasks, zones()), "web")


# ---- the migration, as the reconciler runs it ---------------------------------------------------


def test_migrating_tasks_are_replaced_on_the_empty_node_then_stopped_while_healthy() -> None:
    snapshot = flag(snap(service(6), running({"n1": 3, "n2": 3}), zones()), ["n1-2", "n2-2"])
    plan = reconcile(snapshot, NOW, seed=1)
    created = [new for new, old in plan.writes.values() if old is None]
    assert sorted(t.node or "" for t in created) == ["n3", "n3"]
    assert not [t for t, old in plan.writes.values() if old and t.desired == Desired.STOP]

    # One replacement runs: 7 healthy, min_healthy 6 (100%): exactly one old task may stop.
    snapshot = run_agent(apply(snapshot, plan), only={created[0].id})
    plan = reconcile(snapshot, NOW + 1, seed=2)
    stopped = [t for t, old in plan.writes.values() if old and t.desired == Desired.STOP]
    assert len(stopped) == 1 and stopped[0].id in ("n1-2", "n2-2")
    assert stopped[0].message.startswith("moved off n")
    assert not [new for new, old in plan.writes.values() if old is None]  # count is met

    snapshot = run_agent(apply(snapshot, plan))  # the other replacement runs, n?-2 stops
    plan = reconcile(snapshot, NOW + 2, seed=3)
    snapshot = run_agent(apply(snapshot, plan))
    assert per_node(snapshot) == {"n1": 2, "n2": 2, "n3": 2}
    assert reconcile(snapshot, NOW + 3, seed=4).empty


def test_a_lower_min_healthy_stops_migrating_tasks_at_once() -> None:
    svc = service(6, deployment=DeploymentPolicy(min_healthy_percent=50))
    snapshot = flag(snap(svc, running({"n1": 3, "n2": 3}), zones()), ["n1-2", "n2-2"])
    plan = reconcile(snapshot, NOW, seed=1)
    stopped = {t.id for t, old in plan.writes.values() if old and t.desired == Desired.STOP}
    assert stopped == {"n1-2", "n2-2"}  # 6 healthy - 2 = 4 >= 3


def test_a_replacement_never_lands_on_the_node_its_task_leaves() -> None:
    # Binpack prefers the tightest node: n1, the node the task leaves, if it were allowed.
    nodes = [Node(name="n1", cpu=4096, memory=1024), Node(name="n2", cpu=4096, memory=4096)]
    snapshot = flag(snap(service(1, Placement()), running({"n1": 1}), nodes), ["n1-0"])
    plan = reconcile(snapshot, NOW, seed=1)
    (created,) = [new for new, old in plan.writes.values() if old is None]
    assert created.node == "n2"


def test_a_move_no_other_node_can_take_is_cancelled() -> None:
    snapshot = flag(snap(service(1, Placement()), running({"n1": 1}), zones()[:1]), ["n1-0"])
    plan = reconcile(snapshot, NOW, seed=1)
    assert [new for new, old in plan.writes.values() if old is None] == []  # nothing created
    assert plan.writes["n1-0"][0].migrate is False
    assert plan.writes["n1-0"][0].desired == Desired.RUN
    (event,) = plan.events
    assert event.type == "service.rebalance" and "1 move(s) cancelled" in event.message
    assert reconcile(apply(snapshot, plan), NOW + 1, seed=2).empty


def test_a_deployment_takes_over_from_a_rebalance() -> None:
    deploying = Deployment(
        id="web-1-abc", service="web", family="web", from_revision=None, to_revision=1, count=6
    )
    svc = service(6, deployment_id=deploying.id)
    snapshot = flag(snap(svc, running({"n1": 3, "n2": 3}), zones(), [deploying]), ["n1-2"])
    plan = reconcile(snapshot, NOW, seed=1)
    assert plan.writes["n1-2"][0].migrate is False
    assert plan.writes["n1-2"][0].desired == Desired.RUN
    assert "service.rebalance" in [e.type for e in plan.events]
