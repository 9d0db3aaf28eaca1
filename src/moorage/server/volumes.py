"""Persistent volumes over HTTP (docs/volumes.md, `moorage.ops.volumes`).

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
"""

from __future__ import annotations

from aiohttp import web

from moorage.model import validate_body
from moorage.model.volume import GrantBody, Volume, VolumeCreate
from moorage.ops import Volumes
from moorage.state import StateCache, Topic

from .auth import node_of
from .blocking import block
from .http import read_json, respond
from .routes import NODE, RouteTable, acl

routes = RouteTable()


class VolumesApi:
    def __init__(self, volumes: Volumes, cache: StateCache) -> None:
        self.volumes = volumes
        self.cache = cache

    # ---- users -------------------------------------------------------------------------
    @routes.get(
        "/v1/volumes",
        "List volumes",
        auth=acl("service"),
        response=list[Volume],
        blocking=True,
        tags=("volumes",),
    )
    async def volume_list(self, request: web.Request) -> web.Response:
        index = await block(request, self.cache, Topic.VOLUMES)
        return respond(self.volumes.all(), index)

    @routes.get(
        "/v1/volumes/{name}",
        "One volume, its attachments and epoch",
        auth=acl("service"),
        response=Volume,
        blocking=True,
        tags=("volumes",),
    )
    async def volume_get(self, request: web.Request) -> web.Response:
        name = request.match_info["name"]
        index = await block(request, self.cache, Topic.volume(name))
        return respond(self.volumes.get(name), index)

    @routes.post(
        "/v1/volumes",
        "Create a volume",
        auth=acl("service"),
        body=VolumeCreate,
        response=Volume,
        tags=("volumes",),
    )
    async def volume_create(self, request: web.Request) -> web.Response:
        body = validate_body(VolumeCreate, await read_json(request))
        return respond(await self.volumes.create(body))

    @routes.delete(
        "/v1/volumes/{name}",
        "Delete a detached volume and its data (409 while a task holds it, 503 when no agent "
        "can remove the data)",
        auth=acl("service"),
        tags=("volumes",),
    )
    async def volume_delete(self, request: web.Request) -> web.Response:
        name = request.match_info["name"]
        node = await self.volumes.delete(name)
        return respond({"deleted": name, "node": node})

    # ---- the agents' side --------------------------------------------------------------
    @routes.post(
        "/v1/volumes/{name}/claim",
        "Agent: claim a volume for a task (an attachment with a lease and the next epoch)",
        auth=NODE,
        body=GrantBody,
        response=Volume,
        tags=("agents", "volumes"),
    )
    async def volume_claim(self, request: web.Request) -> web.Response:
        body = validate_body(GrantBody, await read_json(request))
        name, caller = request.match_info["name"], node_of(request)
        return respond(await self.volumes.claim(name, body, caller))

    @routes.post(
        "/v1/volumes/{name}/renew",
        "Agent: extend a claim's lease (409 when the epoch no longer holds it)",
        auth=NODE,
        body=GrantBody,
        response=Volume,
        tags=("agents", "volumes"),
    )
    async def volume_renew(self, request: web.Request) -> web.Response:
        body = validate_body(GrantBody, await read_json(request))
        name, caller = request.match_info["name"], node_of(request)
        return respond(await self.volumes.renew(name, body, caller))

    @routes.post(
        "/v1/volumes/{name}/release",
        "Agent: release a claim (a stale epoch changes nothing)",
        auth=NODE,
        body=GrantBody,
        response=Volume,
        tags=("agents", "volumes"),
    )
    async def volume_release(self, request: web.Request) -> web.Response:
        body = validate_body(GrantBody, await read_json(request))
        name, caller = request.match_info["name"], node_of(request)
        return respond(await self.volumes.release(name, body, caller))
