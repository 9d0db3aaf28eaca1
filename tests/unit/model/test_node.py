"""A node's liveness and its scheduling state are apart: a drain outlives any downtime."""

from __future__ import annotations

from moorage.controllers.reconcile import reconcile
from moorage.model import Eligibility, Node, NodeStatus, Service, TaskDefinition
from moorage.model.cluster import ClusterSnapshot
from moorage.model.node import back, drained, gone_down, made_eligible, registered
from moorage.state import kinds

NOW = 1_000_000.0


def node(name: str = "n1") -> Node:
    return Node(name=name, cpu=4096, memory=4096)


def test_a_drain_survives_going_down_a_heartbeat_and_a_re_registration() -> None:
    drain = drained(node(), NOW + 120)
    assert (drain.status, drain.eligibility, drain.draining) == (
        NodeStatus.READY,
        Eligibility.INELIGIBLE,
        True,
    )
    down = gone_down(drain)
    assert (down.status, down.state, down.drain_deadline) == (NodeStatus.DOWN, "down", NOW + 120)
    for alive in (back(down, NOW + 30), registered(down, node(), NOW + 30)):
        assert alive.status == NodeStatus.READY and alive.heartbeat_at == NOW + 30
        assert alive.eligibility == Eligibility.INELIGIBLE and alive.drain_deadline == NOW + 120
        assert not alive.schedulable and alive.state == "draining"
    again = made_eligible(back(down, NOW + 30))
    assert again.schedulable and again.drain_deadline is None and again.state == "ready"


def test_made_eligible_while_down_takes_tasks_once_back() -> None:
    down = made_eligible(gone_down(drained(node(), NOW)))
    assert down.eligibility == Eligibility.ELIGIBLE and not down.schedulable
    assert back(down, NOW + 1).schedulable


def test_registration_takes_the_agents_facts_but_not_its_scheduling_state() -> None:
    claims = node().model_copy(
        update={"eligibility": Eligibility.INELIGIBLE, "drain_deadline": 1.0, "cpu": 2048}
    )
    fresh = registered(None, claims, NOW)
    assert fresh.schedulable and fresh.drain_deadline is None
    assert (fresh.cpu, fresh.registered_at) == (2048, NOW)
    known = drained(node(), NOW + 60).model_copy(update={"registered_at": NOW - 100})
    again = registered(known, node(), NOW)
    assert again.registered_at == NOW - 100 and again.drain_deadline == NOW + 60


def test_records_from_before_the_split_keep_their_drain() -> None:
    old = b'{"name": "n1", "cpu": 1, "memory": 1, "status": "draining", "drain_deadline": 5.0}'
    legacy = Node.model_validate_json(old)
    assert (legacy.status, legacy.eligibility) == (NodeStatus.READY, Eligibility.INELIGIBLE)
    # what the old heartbeat path left behind: ready, yet with a deadline
    cancelled = b'{"name": "n1", "cpu": 1, "memory": 1, "status": "ready", "drain_deadline": 5.0}'
    assert Node.model_validate_json(cancelled).state == "draining"
    drain = drained(node(), 5.0)
    assert Node.model_validate_json(kinds.encode(drain)) == drain


def test_a_drained_node_that_came_back_takes_no_new_task() -> None:
    from moorage.model import Container

    app = Container(name="app", command=["x"], cpu=100, memory=64)
    taskdef = TaskDefinition(family="web", revision=1, containers=[app])
    returned = back(gone_down(drained(node("n1"), NOW + 120)), NOW)
    snapshot = ClusterSnapshot(
        services={"web": Service(name="web", family="web", revision=1, count=3)},
        taskdefs={("web", 1): taskdef},
        tasks={},
        nodes={"n1": returned, "n2": node("n2")},
    )
    plan = reconcile(snapshot, NOW, seed=1)
    created = [new for new, old in plan.writes.values() if old is None]
    assert len(created) == 3 and {t.node for t in created} == {"n2"}
