"""Which nodes the liveness loop declares down, and how heartbeats scale with the cluster."""

from __future__ import annotations

from moorage.controllers.liveness import GRACE, NodeLiveness, heartbeat_interval, heartbeat_ttl
from moorage.model import Node, NodeStatus


class Cache:
    def __init__(self, nodes: list[Node]) -> None:
        self.nodes = {n.name: n for n in nodes}


def test_heartbeats_slow_down_as_the_cluster_grows() -> None:
    assert heartbeat_interval(3) == 1.5 and heartbeat_ttl(3) == 5.0
    assert heartbeat_interval(1000) == 20.0 and heartbeat_ttl(1000) == 60.0
    assert 1000 / heartbeat_interval(1000) <= 50  # never more than 50 heartbeats a second


def test_only_silent_ready_nodes_are_overdue() -> None:
    now = 1000.0
    seen = {"fresh": now - 1, "silent": now - 10}
    nodes = [
        Node(name="fresh", cpu=1, memory=1),
        Node(name="silent", cpu=1, memory=1),
        Node(name="down", cpu=1, memory=1, status=NodeStatus.DOWN),
        Node(name="never", cpu=1, memory=1),
    ]
    liveness = NodeLiveness(Cache(nodes), None, lambda: now, seen.get)  # type: ignore[arg-type]
    # A leader that just started gives every node a full TTL from its start.
    assert liveness.overdue(started=now - 1) == []
    late = liveness.overdue(started=now - heartbeat_ttl(4) - GRACE - 1)
    assert sorted(n.name for n in late) == ["never", "silent"]


def test_a_drained_node_that_goes_down_stays_drained() -> None:
    import asyncio

    from moorage.model import Eligibility
    from moorage.model.node import drained
    from moorage.state import kinds
    from moorage.store import Put

    now = 1000.0
    written: list[Node] = []

    class Writer:
        async def commit(self, compares: object, ops: list[object]) -> None:
            nodes = [op for op in ops if isinstance(op, Put) and op.key == kinds.NODE.key("n1")]
            written.extend(Node.model_validate_json(op.value) for op in nodes)

    cache = Cache([drained(Node(name="n1", cpu=1, memory=1), now + 60)])
    cache.mod_revisions = {kinds.NODE.key("n1"): 3}  # type: ignore[attr-defined]
    liveness = NodeLiveness(cache, Writer(), lambda: now, {}.get)  # type: ignore[arg-type]
    asyncio.run(liveness.check(started=now - 60))
    (down,) = written
    assert down.status == NodeStatus.DOWN
    assert (down.eligibility, down.drain_deadline) == (Eligibility.INELIGIBLE, now + 60)
