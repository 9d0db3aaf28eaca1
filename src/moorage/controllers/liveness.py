"""Node liveness: a node that misses its heartbeats for longer than its TTL (plus grace) is down.

Heartbeats are kept in memory by the API (the store only gets a coarse mark): this loop reads
them through `last_seen`. When it starts — a fresh leader — every node is given a full TTL from
that moment, as Nomad resets its timers on election, so a restart never marks the cluster down.

    ready ──(no heartbeat for ttl + grace)──▶ down ──(a heartbeat)──▶ ready
                                               └─ the reconciler marks its tasks lost and
                                                  replaces them on other nodes

Only liveness moves here: a drained (ineligible) node stays so, down or back (model/node.py).
"""

from __future__ import annotations

import asyncio
import math
from collections.abc import Callable

from moorage.model import Node, NodeStatus
from moorage.model.node import gone_down
from moorage.state import StateCache, StateWriter

from .apply import PlanApplier
from .plan import Plan

GRACE = 2.0
MIN_INTERVAL = 1.5
MAX_HEARTBEATS_PER_S = 50.0


def heartbeat_interval(nodes: int) -> float:
    """How often agents heartbeat: grows with the cluster so the server sees at most
    MAX_HEARTBEATS_PER_S of them (Nomad caps its heartbeat rate the same way)."""
    return max(MIN_INTERVAL, nodes / MAX_HEARTBEATS_PER_S)


def heartbeat_ttl(nodes: int) -> float:
    """A node is down after missing this long (plus GRACE): at least 5 s, three intervals."""
    return max(5.0, math.ceil(3 * heartbeat_interval(nodes)))


class Heartbeats:
    """When each node's agent was last heard from, in this server's memory (like Nomad's TTL
    timers): the store gets only a coarse mark (`PERSIST`), so a quiet cluster does not write
    every few seconds."""

    PERSIST = 60.0  # how stale the stored mark may get before a heartbeat refreshes it

    def __init__(self) -> None:
        self._seen: dict[str, float] = {}

    def beat(self, node: str, now: float) -> None:
        self._seen[node] = now

    def last_seen(self, node: str) -> float | None:
        return self._seen.get(node)

    def with_last_seen(self, node: Node) -> Node:
        """The node as its agent last showed it (a heartbeat newer than the stored mark)."""
        seen = self._seen.get(node.name)
        if seen is None or seen <= node.heartbeat_at:
            return node
        return node.model_copy(update={"heartbeat_at": seen})


class NodeLiveness:
    def __init__(
        self,
        cache: StateCache,
        writer: StateWriter,
        clock: Callable[[], float],
        last_seen: Callable[[str], float | None],
        interval: float = 0.5,
    ) -> None:
        self.cache = cache
        self.applier = PlanApplier(cache, writer, clock)
        self.clock = clock
        self.last_seen = last_seen
        self.interval = interval

    async def run(self) -> None:
        await self.cache.wait_synced()
        started = self.clock()
        while True:
            await self.check(started)
            await asyncio.sleep(self.interval)

    def overdue(self, started: float) -> list[Node]:
        now = self.clock()
        limit = heartbeat_ttl(len(self.cache.nodes)) + GRACE
        late = []
        for node in self.cache.nodes.values():
            if node.status == NodeStatus.DOWN:
                continue
            seen = max(self.last_seen(node.name) or 0.0, node.heartbeat_at, started)
            if now - seen > limit:
                late.append(node)
        return late

    async def check(self, started: float) -> None:
        now = self.clock()
        for node in self.overdue(started):
            seen = self.last_seen(node.name)
            silent = f"{now - seen:.0f}s" if seen else "since this server started"
            plan = Plan()
            plan.write_node(gone_down(node), node)
            plan.event(
                "node.down", f"node {node.name} is down: no heartbeat for {silent}", node=node.name
            )
            await self.applier.apply(plan)
