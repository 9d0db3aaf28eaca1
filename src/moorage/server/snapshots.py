"""Volume snapshots and backups over HTTP (docs/volumes.md, `moorage.ops.snapshots`).

POST   /v1/volumes/{name}/snapshots         take one ({pause_timeout?}) → Snapshot
GET    /v1/volumes/{name}/snapshots         the volume's snapshots (blocking: ?index)
GET    /v1/snapshots                        every snapshot (blocking: ?index)
GET    /v1/snapshots/{volume}/{id}          one
GET    /v1/snapshots/{volume}/{id}/archive  the .tar.gz, streamed from an agent
POST   /v1/snapshots/{volume}/{id}/restore  {name, driver?, node?, size?, access?} → Volume
DELETE /v1/snapshots/{volume}/{id}          the archive, then the record
"""

from __future__ import annotations

import aiohttp
from aiohttp import web

from moorage.model import Unavailable, validate_body
from moorage.model.snapshot import RestoreRequest, Snapshot, SnapshotRequest
from moorage.model.volume import Volume
from moorage.ops import Snapshots
from moorage.state import StateCache, Topic

from .agents import AgentRelay, agent_error, json_of
from .blocking import block
from .http import read_json, read_optional_json, respond
from .routes import RouteTable, acl

routes = RouteTable()
RELAY_HEADERS = ("Content-Type", "Content-Length", "Content-Disposition")


class SnapshotsApi:
    def __init__(
        self,
        snapshots: Snapshots,
        cache: StateCache,
        session: aiohttp.ClientSession,
        relay: AgentRelay,
    ) -> None:
        self.snapshots = snapshots
        self.cache = cache
        self.session = session
        self.relay = relay

    def _snapshot(self, request: web.Request) -> Snapshot:
        return self.snapshots.get(request.match_info["volume"], request.match_info["id"])

    @routes.get(
        "/v1/snapshots",
        "Every volume snapshot (of deleted volumes too), oldest first per volume",
        auth=acl("service"),
        response=list[Snapshot],
        blocking=True,
        tags=("volumes",),
    )
    async def snapshot_list(self, request: web.Request) -> web.Response:
        index = await block(request, self.cache, Topic.SNAPSHOTS)
        return respond(self.snapshots.listed(), index)

    @routes.get(
        "/v1/volumes/{name}/snapshots",
        "Snapshots of one volume, oldest first (404 when neither it nor any snapshot exists)",
        auth=acl("service"),
        response=list[Snapshot],
        blocking=True,
        tags=("volumes",),
    )
    async def volume_snapshots(self, request: web.Request) -> web.Response:
        name = request.match_info["name"]
        index = await block(request, self.cache, Topic.volume_snapshots(name))
        return respond(self.snapshots.listed(name), index)

    @routes.get(
        "/v1/snapshots/{volume}/{id}",
        "One snapshot",
        auth=acl("service"),
        response=Snapshot,
        tags=("volumes",),
    )
    async def snapshot_get(self, request: web.Request) -> web.Response:
        return respond(self._snapshot(request))

    @routes.post(
        "/v1/volumes/{name}/snapshots",
        "Snapshot a volume: its writer is paused (frozen) for the copy; the body is optional",
        auth=acl("service"),
        body=SnapshotRequest,
        response=Snapshot,
        tags=("volumes",),
    )
    async def snapshot_create(self, request: web.Request) -> web.Response:
        options = validate_body(SnapshotRequest, await read_optional_json(request))
        return respond(await self.snapshots.take(request.match_info["name"], options))

    @routes.get(
        "/v1/snapshots/{volume}/{id}/archive",
        "The snapshot's archive (tar.gz), streamed from the agent that can read it",
        auth=acl("service"),
        content_type="application/gzip",
        tags=("volumes",),
    )
    async def snapshot_archive(self, request: web.Request) -> web.StreamResponse:
        node, path, params = self.snapshots.archive(self._snapshot(request))
        url = self.relay.url(node) + path
        timeout = aiohttp.ClientTimeout(total=None, sock_connect=5, sock_read=60)
        try:
            async with self.session.get(
                url, params=params, ssl=self.relay.tls, timeout=timeout
            ) as upstream:
                if upstream.status >= 400:
                    raise agent_error(node, upstream.status, await json_of(upstream))
                headers = {h: upstream.headers[h] for h in RELAY_HEADERS if h in upstream.headers}
                response = web.StreamResponse(headers=headers)
                await response.prepare(request)
                async for chunk in upstream.content.iter_chunked(256 * 1024):
                    await response.write(chunk)
        except (aiohttp.ClientError, TimeoutError) as exc:
            raise Unavailable(f"cannot read the archive from node {node}: {exc}") from None
        await response.write_eof()
        return response

    @routes.delete(
        "/v1/snapshots/{volume}/{id}",
        "Delete a snapshot: its archive, then its record",
        auth=acl("service"),
        tags=("volumes",),
    )
    async def snapshot_delete(self, request: web.Request) -> web.Response:
        snapshot = self._snapshot(request)
        await self.snapshots.delete(snapshot)
        return respond({"deleted": snapshot.id, "volume": snapshot.volume})

    @routes.post(
        "/v1/snapshots/{volume}/{id}/restore",
        "Restore a snapshot into a new volume (the snapshot's driver, size, node by default)",
        auth=acl("service"),
        body=RestoreRequest,
        response=Volume,
        tags=("volumes",),
    )
    async def snapshot_restore(self, request: web.Request) -> web.Response:
        snapshot = self._snapshot(request)
        body = validate_body(RestoreRequest, await read_json(request))
        return respond(await self.snapshots.restore(snapshot, body))
