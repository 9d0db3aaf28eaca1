"""Persistent volumes (docs/volumes.md): the objects, and the grants agents ask for.

    create(VolumeCreate)               409 if the name is taken
    delete(name)                       deleting ─▶ an agent deletes the files ─▶ the record goes;
                                       409 naming the holder; 503 when no agent can
    claim | renew | release(GrantBody) the agents' side: an attachment with a lease and a
                                       fencing epoch (409 when refused)
    provision(spec)                    the cluster volumes a deploy autoprovisions

The grant rules are pure functions in `moorage.model.volume`; this module runs them inside the
writer's CAS loop and records events.
"""

from __future__ import annotations

import contextlib
from collections.abc import Callable
from typing import Any

from moorage.model import (
    Conflict,
    FieldError,
    Forbidden,
    MoorageError,
    NotFound,
    ServiceSpec,
    SpecError,
    Unavailable,
    VolumeSpec,
)
from moorage.model.volume import (
    GrantBody,
    Volume,
    VolumeCreate,
    claim,
    mark_deleting,
    new_volume,
    release,
    removal_node,
    renew,
    unmark_deleting,
    with_size_enforced,
)
from moorage.state import StateCache, StateWriter, kinds, new_event

from .agents import AgentCalls, AgentLost

Change = tuple[Volume | None, list[Any]]


class Volumes:
    def __init__(
        self,
        cache: StateCache,
        writer: StateWriter,
        clock: Callable[[], float],
        agents: AgentCalls,
    ) -> None:
        self.cache = cache
        self.writer = writer
        self.clock = clock
        self.agents = agents  # `delete` has an agent remove the data
        self._removing: set[str] = set()  # names this server is removing now

    # ---- reads -------------------------------------------------------------------------
    def all(self) -> list[Volume]:
        return sorted(self.cache.volumes.values(), key=lambda v: v.name)

    def get(self, name: str) -> Volume:
        volume = self.cache.volumes.get(name)
        if volume is None:
            raise NotFound(f"no volume named {name!r}")
        return volume

    def users(self, name: str) -> list[str]:
        """The active services whose current revision claims volume `name`."""
        found = []
        for service in self.cache.services.values():
            if service.status != "active":
                continue
            taskdef = self.cache.taskdefs.get((service.family, service.revision))
            if taskdef is None:
                continue
            claimed = taskdef.claimed_volumes()
            if any(spec.volume_name(key) == name for key, spec in claimed.items()):
                found.append(service.name)
        return sorted(found)

    # ---- users' writes -----------------------------------------------------------------
    async def create(self, body: VolumeCreate) -> Volume:
        now = self.clock()

        def change(current: Volume | None) -> Change:
            if current is not None:
                raise Conflict(f"a volume named {body.name!r} exists already")
            where = f" on node {body.node}" if body.node else ""
            size = f", {body.size} MiB" if body.size else ""
            text = f"volume {body.name} created ({body.driver}{where}{size}, {body.access})"
            return new_volume(body, now), [
                new_event("volume.created", text, now=now, node=body.node)
            ]

        return await self._update(body.name, change)

    async def provision(self, spec: ServiceSpec) -> None:
        """Create the cluster volumes the spec autoprovisions (an existing one is kept)."""
        now = self.clock()
        for key, entry in spec.volumes.items():
            if entry.scope != "shared" or not entry.autoprovision:
                continue
            name = entry.volume_name(key)
            if name not in self.cache.volumes:
                await self.writer.update(
                    kinds.VOLUME, name, _provisioned(spec.service, name, entry, now)
                )

    async def delete(self, name: str) -> str | None:
        """Remove a detached volume and its data; the node whose agent removed the files."""
        if name in self._removing:
            raise Conflict(f"volume {name} is being removed already")
        self._removing.add(name)
        try:
            return await self._remove(name)
        finally:
            self._removing.discard(name)

    async def _remove(self, name: str) -> str | None:
        """deleting (no claim gets past it) ─▶ an agent deletes the files ─▶ the record goes.
        An agent that did nothing puts the volume back as it was; one that may have acted
        leaves it `deleting`, for the next `rm` to finish."""
        current = self._deletable(name, self.cache.volumes.get(name), self.users(name))
        node = removal_node(current, list(self.cache.nodes.values()))
        users = self.users(name)
        await self._update(name, lambda found: (self._deletable(name, found, users), []))
        try:
            if node is not None:
                await self.agents.call(
                    node, "DELETE", f"/v1/volumes/{name}", params={"driver": current.driver}
                )
        except AgentLost as exc:
            raise Unavailable(
                f"{exc.message}; volume {name} stays `deleting` (no task can attach it): run "
                f"`moorage volume rm {name}` again to finish"
            ) from None
        except MoorageError:
            with contextlib.suppress(MoorageError):
                await self.writer.update(kinds.VOLUME, name, _unmarked)
            raise
        where = f", its data removed by node {node}" if node else ""
        event = new_event("volume.deleted", f"volume {name} deleted{where}", now=self.clock())
        await self.writer.update(
            kinds.VOLUME, name, lambda found: (None, [event] if found is not None else [])
        )
        return node

    def _deletable(self, name: str, current: Volume | None, users: list[str]) -> Volume:
        """The volume marked `deleting`; NotFound, or Conflict while a task or service uses it."""
        if current is None:
            raise NotFound(f"no volume named {name!r}")
        marked = mark_deleting(current, self.clock())
        if users:
            raise Conflict(
                f"volume {name} is used by service {', '.join(users)}: its next task would "
                f"wait for the volume forever; stop the service first (moorage stop "
                f"{users[0]})"
            )
        return marked

    # ---- the agents' grants ------------------------------------------------------------
    async def claim(self, name: str, body: GrantBody, node: str | None = None) -> Volume:
        """An attachment for the task on the node, with a lease and the next epoch (`node`:
        the asking node; it claims only for its own tasks)."""
        self._own(body, node)
        if node is not None:
            task = self.cache.tasks.get(body.task)
            if task is None or task.node != node:
                raise Forbidden(f"task {body.task} is not on node {node}: no claim for it")
        now = self.clock()

        def change(current: Volume | None) -> Change:
            granted = claim(_found(name, current), body.node, body.task, now, body.lease_ttl)
            granted = with_size_enforced(granted, body.size_enforced)
            text = (
                f"volume {name} claimed by task {body.task} on {body.node} (epoch {granted.epoch})"
            )
            event = new_event("volume.claimed", text, now=now, task=body.task, node=body.node)
            return granted, [event]

        return await self._update(name, change)

    async def renew(self, name: str, body: GrantBody, node: str | None = None) -> Volume:
        """Extend a claim's lease (409 when the epoch no longer holds it)."""
        self._own(body, node)
        epoch, now = _epoch(body), self.clock()

        def change(current: Volume | None) -> Change:
            found = _found(name, current)
            renewed = renew(found, body.node, body.task, epoch, now, body.lease_ttl)
            return with_size_enforced(renewed, body.size_enforced), []

        return await self._update(name, change)

    async def release(self, name: str, body: GrantBody, node: str | None = None) -> Volume:
        """Drop a claim (a stale epoch changes nothing)."""
        self._own(body, node)
        epoch, now = _epoch(body), self.clock()

        def change(current: Volume | None) -> Change:
            released, found = release(_found(name, current), body.node, body.task, epoch, now)
            if not found:
                return released, []
            text = f"volume {name} released by task {body.task} on {body.node} (epoch {epoch})"
            event = new_event("volume.released", text, now=now, task=body.task, node=body.node)
            return released, [event]

        return await self._update(name, change)

    def _own(self, body: GrantBody, node: str | None) -> None:
        if node is not None and body.node != node:
            raise Forbidden(f"node {node} may not hold volumes for node {body.node}")

    async def _update(self, name: str, change: Callable[[Volume | None], Change]) -> Volume:
        volume = await self.writer.update(kinds.VOLUME, name, change)
        assert volume is not None  # these changes never delete
        return volume


def _found(name: str, current: Volume | None) -> Volume:
    if current is None:
        raise NotFound(f"no volume named {name!r}")
    return current


def _unmarked(current: Volume | None) -> Change:
    return (unmark_deleting(current) if current is not None else None), []


def _epoch(body: GrantBody) -> int:
    if body.epoch is None:
        raise SpecError([FieldError("epoch", "is required: the epoch the claim granted")])
    return body.epoch


def _provisioned(
    service: str, name: str, entry: VolumeSpec, now: float
) -> Callable[[Volume | None], Change]:
    def change(current: Volume | None) -> Change:
        if current is not None:
            return current, []
        volume = Volume(
            name=name,
            driver=entry.driver,
            size=entry.size_mib,
            scope="shared",
            access=entry.access,
            autoprovision=True,
            created_at=now,
        )
        size = f", {volume.size} MiB" if volume.size else ""
        text = (
            f"volume {name} created for service {service} ({volume.driver}{size}, {volume.access})"
        )
        return volume, [new_event("volume.created", text, now=now, service=service)]

    return change
