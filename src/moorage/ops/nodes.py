"""Nodes: an agent registers and heartbeats; users drain them and make them eligible again.

register(name, Node)  ─▶ stored (re-registering keeps a drain: model/node.py), a sign of life
heartbeat(name)       ─▶ kept in memory (Heartbeats); the store gets a coarse mark at most
                         once a minute; a node marked down comes back up
drain(name, body)     ─▶ ineligible, tasks move away within the deadline (2 minutes for a
                         spot interruption notice)
eligible(name)        ─▶ takes tasks again
"""

from __future__ import annotations

from collections.abc import Callable

from moorage.controllers.liveness import Heartbeats, heartbeat_interval, heartbeat_ttl
from moorage.model import FieldError, Node, NodeStatus, NotFound, SpecError, Task
from moorage.model import node as rules
from moorage.model.messages import HeartbeatAnswer
from moorage.model.views import DrainBody
from moorage.state import StateCache, StateWriter, kinds, new_event
from moorage.store import Op

SPOT_NOTICE = 120.0  # seconds a cloud gives between its spot interruption notice and the end

NodeChange = tuple[Node | None, list[Op]]


class Nodes:
    def __init__(
        self,
        cache: StateCache,
        writer: StateWriter,
        clock: Callable[[], float],
        heartbeats: Heartbeats,
    ) -> None:
        self.cache = cache
        self.writer = writer
        self.clock = clock
        self.heartbeats = heartbeats

    def all(self) -> list[Node]:
        nodes = sorted(self.cache.nodes.values(), key=lambda n: n.name)
        return [self.heartbeats.with_last_seen(n) for n in nodes]

    def tasks(self, name: str) -> list[Task]:
        """The tasks placed on the node (its agent converges to this list)."""
        return self.cache.tasks_on_node(name)

    async def register(self, name: str, node: Node) -> Node:
        if node.name != name:
            raise SpecError(
                [FieldError("name", f"must match the URL ({name!r}), got {node.name!r}")]
            )
        now = self.clock()
        self.heartbeats.beat(name, now)  # registering is a sign of life too

        def change(current: Node | None) -> NodeChange:
            registered = rules.registered(current, node, now)
            verb = "registered" if current is None else "re-registered"
            text = f"node {name} {verb}: {node.cpu} cpu units, {node.memory} MiB, {node.address}"
            if registered.draining:
                text += "; still draining (until `moorage node eligible`)"
            return registered, [new_event("node.registered", text, now=now, node=name)]

        return await self._update(name, change)

    async def heartbeat(self, name: str) -> HeartbeatAnswer:
        node = self.cache.nodes.get(name)
        if node is None:
            raise NotFound(f"no node {name!r}: register first")
        now = self.clock()
        self.heartbeats.beat(name, now)
        count = len(self.cache.nodes)
        answer = HeartbeatAnswer(interval=heartbeat_interval(count), ttl=heartbeat_ttl(count))
        if node.status == NodeStatus.DOWN:
            await self._update(name, _back(name, now))
        elif now - node.heartbeat_at >= Heartbeats.PERSIST:
            await self._update(name, _marked(name, now))
        return answer

    async def drain(self, name: str, body: DrainBody) -> Node:
        # A spot interruption notice gives two minutes before the machine goes.
        deadline = min(body.deadline, SPOT_NOTICE) if body.spot_notice else body.deadline
        now = self.clock()

        def change(current: Node | None) -> NodeChange:
            if current is None:
                raise NotFound(f"no node {name!r}")
            why = " (spot interruption notice)" if body.spot_notice else ""
            text = f"node {name} draining{why}: tasks move away within {deadline:g}s"
            event = new_event("node.draining", text, now=now, node=name)
            return rules.drained(current, now + deadline), [event]

        return await self._update(name, change)

    async def eligible(self, name: str) -> Node:
        now = self.clock()

        def change(current: Node | None) -> NodeChange:
            if current is None:
                raise NotFound(f"no node {name!r}")
            event = new_event("node.eligible", f"node {name} takes tasks again", now=now, node=name)
            return rules.made_eligible(current), [event]

        return await self._update(name, change)

    async def _update(self, name: str, change: Callable[[Node | None], NodeChange]) -> Node:
        node = await self.writer.update(kinds.NODE, name, change)
        assert node is not None
        return node


def _back(name: str, now: float) -> Callable[[Node | None], NodeChange]:
    def change(current: Node | None) -> NodeChange:
        if current is None:
            raise NotFound(f"no node {name!r}: register first")
        text = f"node {name} is back: its lost tasks are stopped there"
        if current.draining:
            text += "; still draining (until `moorage node eligible`)"
        return rules.back(current, now), [new_event("node.up", text, now=now, node=name)]

    return change


def _marked(name: str, now: float) -> Callable[[Node | None], NodeChange]:
    """The coarse heartbeat mark in the store (a quiet cluster does not write every beat)."""

    def change(current: Node | None) -> NodeChange:
        if current is None:
            raise NotFound(f"no node {name!r}: register first")
        return current.model_copy(update={"heartbeat_at": now}), []

    return change
