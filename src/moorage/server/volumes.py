"""Persistent volumes (docs/volumes.md): the object and the grants agents will ask for.

    POST   /v1/volumes                  create (VolumeCreate body); 409 if the name is taken
    GET    /v1/volumes                  list (blocking: ?index)
    GET    /v1/volumes/{name}           one volume (blocking: ?index)
    DELETE /v1/volumes/{name}           remove a detached volume and its data (an agent deletes
                                        the files, then the record goes); 409 naming the holder
    POST   /v1/volumes/{name}/claim     agent: {node, task[, lease_ttl, size_enforced]} → attachment,
                                        epoch+1
    POST   /v1/volumes/{name}/renew     agent: {node, task, epoch[, lease_ttl, size_enforced]} →
                                        lease extended
    POST   /v1/volumes/{name}/release   agent: {node, task, epoch} → attachment dropped

The grant rules are pure functions in `moorage.model.volume`; this module reads bodies, runs
them inside a CAS loop (`StateWriter.update`) and records events. The agents' three routes are
guarded by the join token.
"""

from __future__ import annotations

import contextlib
from collections.abc import Callable
from typing import Any

from aiohttp import web

from moorage.model import (
    Conflict,
    FieldError,
    MoorageError,
    NotFound,
    SpecError,
    Unavailable,
    validate_body,
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
from moorage.state import StateCache, StateWriter, Topic
from moorage.state import keys as k
from moorage.state.writer import new_event

from .agents import AgentLost, AgentRelay
from .api import respond, table
from .blocking import block
from .errors import read_json
from .join import JoinGuard


class VolumesApi:
    def __init__(self, cache: StateCache, writer: StateWriter, clock: Callable[[], float]) -> None:
        self.cache = cache
        self.writer = writer
        self.clock = clock
        self.guard: JoinGuard | None = None  # set by the server: the grant routes are agents'
        self.agents: AgentRelay | None = None  # set by the server: rm has an agent delete data
        self._removing: set[str] = set()  # names this server is removing now

    def _agent_only(self, request: web.Request) -> None:
        if self.guard is not None:
            self.guard.check(request)

    # ---- users -------------------------------------------------------------------------
    @table.add(
        "GET",
        "/v1/volumes",
        "List volumes",
        response=list[Volume],
        blocking=True,
        tags=("volumes",),
    )
    async def volume_list(self, request: web.Request) -> web.Response:
        index = await block(request, self.cache, Topic.VOLUMES)
        return respond(sorted(self.cache.volumes.values(), key=lambda v: v.name), index)

    @table.add(
        "GET",
        "/v1/volumes/{name}",
        "One volume, its attachments and epoch",
        response=Volume,
        blocking=True,
        tags=("volumes",),
    )
    async def volume_get(self, request: web.Request) -> web.Response:
        name = request.match_info["name"]
        index = await block(request, self.cache, Topic.volume(name))
        volume = self.cache.volumes.get(name)
        if volume is None:
            raise NotFound(f"no volume named {name!r}")
        return respond(volume, index)

    @table.add(
        "POST",
        "/v1/volumes",
        "Create a volume",
        body=VolumeCreate,
        response=Volume,
        tags=("volumes",),
    )
    async def volume_create(self, request: web.Request) -> web.Response:
        body = validate_body(VolumeCreate, await read_json(request))
        now = self.clock()

        def change(current: Volume | None) -> tuple[Volume, list[Any]]:
            if current is not None:
                raise Conflict(f"a volume named {body.name!r} exists already")
            volume = new_volume(body, now)
            where = f" on node {body.node}" if body.node else ""
            size = f", {body.size} MiB" if body.size else ""
            text = f"volume {body.name} created ({body.driver}{where}{size}, {body.access})"
            return volume, [new_event("volume.created", text, now=now, node=body.node)]

        volume = await self.writer.update(k.volume_key(body.name), Volume, change)
        return respond(volume)

    @table.add(
        "DELETE",
        "/v1/volumes/{name}",
        "Delete a detached volume and its data (409 while a task holds it, 503 when no agent "
        "can remove the data)",
        tags=("volumes",),
    )
    async def volume_delete(self, request: web.Request) -> web.Response:
        name = request.match_info["name"]
        if name in self._removing:
            raise Conflict(f"volume {name} is being removed already")
        self._removing.add(name)
        try:
            node = await self._remove(name)
        finally:
            self._removing.discard(name)
        return respond({"deleted": name, "node": node})

    async def _remove(self, name: str) -> str | None:
        """deleting (no claim gets past it) ─▶ an agent deletes the files ─▶ the record goes.
        An agent that did nothing puts the volume back as it was; one that may have acted
        leaves it `deleting`, for the next `rm` to finish."""
        current = self._deletable(name, self.cache.volumes.get(name), self.users(name))
        node = removal_node(current, list(self.cache.nodes.values()))
        await self._mark(name)
        try:
            if node is not None:
                await self._agents().call(
                    node, "DELETE", f"/v1/volumes/{name}", params={"driver": current.driver}
                )
        except AgentLost as exc:
            raise Unavailable(
                f"{exc.message}; volume {name} stays `deleting` (no task can attach it): run "
                f"`moorage volume rm {name}` again to finish"
            ) from None
        except MoorageError:
            await self._set(name, unmark_deleting)
            raise
        where = f", its data removed by node {node}" if node else ""
        event = new_event("volume.deleted", f"volume {name} deleted{where}", now=self.clock())

        def change(current: Volume | None) -> tuple[None, list[Any]]:
            return None, [event] if current is not None else []

        await self.writer.update(k.volume_key(name), Volume, change)
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

    async def _mark(self, name: str) -> None:
        users = self.users(name)

        def change(current: Volume | None) -> tuple[Volume, list[Any]]:
            return self._deletable(name, current, users), []

        await self.writer.update(k.volume_key(name), Volume, change)

    async def _set(self, name: str, step: Callable[[Volume], Volume]) -> None:
        def change(current: Volume | None) -> tuple[Volume | None, list[Any]]:
            return (step(current) if current is not None else None), []

        with contextlib.suppress(MoorageError):
            await self.writer.update(k.volume_key(name), Volume, change)

    def _agents(self) -> AgentRelay:
        if self.agents is None:
            raise Unavailable("this server cannot call agents (no relay configured)")
        return self.agents

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

    # ---- the agents' side --------------------------------------------------------------
    async def _grant_body(self, request: web.Request, epoch: bool) -> GrantBody:
        body = validate_body(GrantBody, await read_json(request))
        if epoch and body.epoch is None:
            raise SpecError([FieldError("epoch", "is required: the epoch the claim granted")])
        return body

    @table.add(
        "POST",
        "/v1/volumes/{name}/claim",
        "Agent: claim a volume for a task (an attachment with a lease and the next epoch)",
        body=GrantBody,
        response=Volume,
        tags=("agents", "volumes"),
    )
    async def volume_claim(self, request: web.Request) -> web.Response:
        self._agent_only(request)
        name = request.match_info["name"]
        body = await self._grant_body(request, epoch=False)
        now = self.clock()

        def change(current: Volume | None) -> tuple[Volume, list[Any]]:
            if current is None:
                raise NotFound(f"no volume named {name!r}")
            granted = claim(current, body.node, body.task, now, body.lease_ttl)
            granted = with_size_enforced(granted, body.size_enforced)
            text = (
                f"volume {name} claimed by task {body.task} on {body.node} (epoch {granted.epoch})"
            )
            event = new_event("volume.claimed", text, now=now, task=body.task, node=body.node)
            return granted, [event]

        volume = await self.writer.update(k.volume_key(name), Volume, change)
        return respond(volume)

    @table.add(
        "POST",
        "/v1/volumes/{name}/renew",
        "Agent: extend a claim's lease (409 when the epoch no longer holds it)",
        body=GrantBody,
        response=Volume,
        tags=("agents", "volumes"),
    )
    async def volume_renew(self, request: web.Request) -> web.Response:
        self._agent_only(request)
        name = request.match_info["name"]
        body = await self._grant_body(request, epoch=True)
        assert body.epoch is not None
        epoch = body.epoch
        now = self.clock()

        def change(current: Volume | None) -> tuple[Volume, list[Any]]:
            if current is None:
                raise NotFound(f"no volume named {name!r}")
            renewed = renew(current, body.node, body.task, epoch, now, body.lease_ttl)
            return with_size_enforced(renewed, body.size_enforced), []

        volume = await self.writer.update(k.volume_key(name), Volume, change)
        return respond(volume)

    @table.add(
        "POST",
        "/v1/volumes/{name}/release",
        "Agent: release a claim (a stale epoch changes nothing)",
        body=GrantBody,
        response=Volume,
        tags=("agents", "volumes"),
    )
    async def volume_release(self, request: web.Request) -> web.Response:
        self._agent_only(request)
        name = request.match_info["name"]
        body = await self._grant_body(request, epoch=True)
        assert body.epoch is not None
        epoch = body.epoch
        now = self.clock()

        def change(current: Volume | None) -> tuple[Volume, list[Any]]:
            if current is None:
                raise NotFound(f"no volume named {name!r}")
            released, found = release(current, body.node, body.task, epoch, now)
            if not found:
                return released, []
            text = f"volume {name} released by task {body.task} on {body.node} (epoch {epoch})"
            event = new_event("volume.released", text, now=now, task=body.task, node=body.node)
            return released, [event]

        volume = await self.writer.update(k.volume_key(name), Volume, change)
        return respond(volume)
