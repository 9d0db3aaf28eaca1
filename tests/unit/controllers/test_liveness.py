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
