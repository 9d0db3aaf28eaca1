"""Volume snapshots and backups (docs/volumes.md): the server picks the agent, relays, records.

    POST   /v1/volumes/{name}/snapshots         take one ({pause_timeout?}) → Snapshot
    GET    /v1/volumes/{name}/snapshots         the volume's snapshots (blocking: ?index)
    GET    /v1/snapshots                        every snapshot (blocking: ?index)
    GET    /v1/snapshots/{volume}/{id}          one
    GET    /v1/snapshots/{volume}/{id}/archive  the .tar.gz, streamed from an agent
    POST   /v1/snapshots/{volume}/{id}/restore  {name, driver?, node?, size?, access?} → Volume
    DELETE /v1/snapshots/{volume}/{id}          the archive, then the record

    CLI ──▶ server ── plan_snapshot(volume, nodes) ──▶ agent of that node (join token)
                      detached: the server claims the volume (task snapshot-<id>) meanwhile
                      restore: the new volume is created claimed by restore-<id>, then filled

The server never reads volume data: agents do (agent/snapshots.py). Records live under
`/moorage/snapshots/<volume>/<id>` and outlive their volume.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
from collections.abc import AsyncIterator, Awaitable, Callable
from typing import Any, TypeVar

import aiohttp
from aiohttp import web

from moorage.model import Conflict, FieldError, NotFound, SpecError, Unavailable, validate_body
from moorage.model.snapshot import (
    RESTORE_TASK,
    SNAPSHOT_TASK,
    RestoreRequest,
    Snapshot,
    SnapshotRequest,
    archive_node,
    new_snapshot_id,
    plan_snapshot,
    restore_volume,
)
from moorage.model.volume import Volume, VolumeCreate, claim, new_volume, release, renew
from moorage.state import StateCache, StateWriter, Topic
from moorage.state import keys as k
from moorage.state.writer import new_event

from .agents import AgentRelay, agent_error, json_of
from .api import respond, table
from .blocking import block
from .errors import read_json

log = logging.getLogger(__name__)

T = TypeVar("T")
LEASE = 30.0  # seconds: the server's claim while an agent copies; renewed every LEASE / 3
RELAY_HEADERS = ("Content-Type", "Content-Length", "Content-Disposition")


class SnapshotsApi:
    def __init__(
        self,
        cache: StateCache,
        writer: StateWriter,
        clock: Callable[[], float],
        session: aiohttp.ClientSession,
        join_token: str,
    ) -> None:
        self.cache = cache
        self.writer = writer
        self.clock = clock
        self.session = session
        self.agents = AgentRelay(cache, session, join_token)

    # ---- reads -------------------------------------------------------------------------
    def _snapshot(self, request: web.Request) -> Snapshot:
        volume, snapshot_id = request.match_info["volume"], request.match_info["id"]
        found = self.cache.snapshots.get((volume, snapshot_id))
        if found is None:
            raise NotFound(f"no snapshot {snapshot_id!r} of volume {volume!r}")
        return found

    def _listed(self, volume: str | None = None) -> list[Snapshot]:
        found = [s for s in self.cache.snapshots.values() if volume in (None, s.volume)]
        return sorted(found, key=lambda s: (s.volume, s.created_at, s.id))

    @table.add(
        "GET",
        "/v1/snapshots",
        "Every volume snapshot (of deleted volumes too), oldest first per volume",
        response=list[Snapshot],
        blocking=True,
        tags=("volumes",),
    )
    async def snapshot_list(self, request: web.Request) -> web.Response:
        index = await block(request, self.cache, Topic.SNAPSHOTS)
        return respond(self._listed(), index)

    @table.add(
        "GET",
        "/v1/volumes/{name}/snapshots",
        "Snapshots of one volume, oldest first (404 when neither it nor any snapshot exists)",
        response=list[Snapshot],
        blocking=True,
        tags=("volumes",),
    )
    async def volume_snapshots(self, request: web.Request) -> web.Response:
        name = request.match_info["name"]
        index = await block(request, self.cache, Topic.volume_snapshots(name))
        found = self._listed(name)
        if not found and name not in self.cache.volumes:
            raise NotFound(f"no volume named {name!r} (and no snapshot of one)")
        return respond(found, index)

    @table.add(
        "GET",
        "/v1/snapshots/{volume}/{id}",
        "One snapshot",
        response=Snapshot,
        tags=("volumes",),
    )
    async def snapshot_get(self, request: web.Request) -> web.Response:
        return respond(self._snapshot(request))

    # ---- take --------------------------------------------------------------------------
    @table.add(
        "POST",
        "/v1/volumes/{name}/snapshots",
        "Snapshot a volume: its writer is paused (frozen) for the copy; the body is optional",
        body=SnapshotRequest,
        response=Snapshot,
        tags=("volumes",),
    )
    async def snapshot_create(self, request: web.Request) -> web.Response:
        name = request.match_info["name"]
        options = SnapshotRequest()
        if await request.read():
            options = validate_body(SnapshotRequest, await read_json(request))
        volume = self.cache.volumes.get(name)
        if volume is None:
            raise NotFound(f"no volume named {name!r}")
        snapshot_id = new_snapshot_id()
        plan = plan_snapshot(volume, list(self.cache.nodes.values()), self.clock())
        body = {
            "id": snapshot_id,
            "driver": volume.driver,
            "writer": plan.writer,
            "pause_timeout": options.pause_timeout,
        }

        async def take() -> Any:
            return await self.agents.call(plan.node, "POST", f"/v1/volumes/{name}/snapshots", body)

        if plan.claim:
            taken = await self._holding(name, plan.node, SNAPSHOT_TASK + snapshot_id, take)
        else:
            taken = await take()
        snapshot = Snapshot.model_validate(
            {
                **taken,
                "id": snapshot_id,
                "volume": name,
                "driver": volume.driver,
                "node": plan.node,
                "volume_size": volume.size,
                "access": volume.access,
                "consistency": plan.consistency or taken["consistency"],
            }
        )
        await self._record(snapshot)
        return respond(snapshot)

    async def _record(self, snapshot: Snapshot) -> None:
        paused = f", {snapshot.task} paused {snapshot.pause_seconds:.3f}s" if snapshot.task else ""
        text = (
            f"snapshot {snapshot.id} of volume {snapshot.volume} taken on {snapshot.node} "
            f"({snapshot.consistency}{paused}, {snapshot.size} bytes)"
        )
        event = new_event("volume.snapshot", text, now=self.clock(), node=snapshot.node)

        def change(current: Snapshot | None) -> tuple[Snapshot, list[Any]]:
            return snapshot, [event]

        await self.writer.update(k.snapshot_key(snapshot.volume, snapshot.id), Snapshot, change)

    # ---- the claim a copy or a restore holds -------------------------------------------
    async def _holding(
        self, name: str, node: str, task: str, work: Callable[[], Awaitable[T]]
    ) -> T:
        """Run `work` while `task` on `node` holds volume `name` (claimed, renewed, released),
        so that no writer attaches halfway through a copy."""
        epoch = await self._grant(name, lambda v, now: claim(v, node, task, now, LEASE))
        try:
            async with self._renewing(name, node, task, epoch):
                return await work()
        finally:
            with contextlib.suppress(NotFound, Conflict):
                await self._grant(name, lambda v, now: release(v, node, task, epoch, now)[0])

    @contextlib.asynccontextmanager
    async def _renewing(self, name: str, node: str, task: str, epoch: int) -> AsyncIterator[None]:
        """Keep the claim `epoch` alive for the body of the `async with`."""
        renewer = asyncio.create_task(self._renew(name, node, task, epoch))
        try:
            yield
        finally:
            renewer.cancel()
            await asyncio.gather(renewer, return_exceptions=True)

    async def _grant(self, name: str, step: Callable[[Volume, float], Volume]) -> int:
        def change(current: Volume | None) -> tuple[Volume, list[Any]]:
            if current is None:
                raise NotFound(f"no volume named {name!r}")
            return step(current, self.clock()), []

        updated = await self.writer.update(k.volume_key(name), Volume, change)
        assert updated is not None
        return updated.epoch

    async def _renew(self, name: str, node: str, task: str, epoch: int) -> None:
        while True:
            await asyncio.sleep(LEASE / 3)
            try:
                await self._grant(name, lambda v, now: renew(v, node, task, epoch, now, LEASE))
            except (NotFound, Conflict) as exc:
                log.warning("the claim of %s on volume %s was lost: %s", task, name, exc)
                return

    # ---- archive, delete ---------------------------------------------------------------
    @table.add(
        "GET",
        "/v1/snapshots/{volume}/{id}/archive",
        "The snapshot's archive (tar.gz), streamed from the agent that can read it",
        content_type="application/gzip",
        tags=("volumes",),
    )
    async def snapshot_archive(self, request: web.Request) -> web.StreamResponse:
        snapshot = self._snapshot(request)
        node = archive_node(snapshot, list(self.cache.nodes.values()))
        url = (
            self.agents.url(node) + f"/v1/volumes/{snapshot.volume}/snapshots/{snapshot.id}/archive"
        )
        timeout = aiohttp.ClientTimeout(total=None, sock_connect=5, sock_read=60)
        params = {"driver": snapshot.driver}
        try:
            async with self.session.get(
                url, params=params, headers=self.agents.auth, timeout=timeout
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

    @table.add(
        "DELETE",
        "/v1/snapshots/{volume}/{id}",
        "Delete a snapshot: its archive, then its record",
        tags=("volumes",),
    )
    async def snapshot_delete(self, request: web.Request) -> web.Response:
        snapshot = self._snapshot(request)
        node = archive_node(snapshot, list(self.cache.nodes.values()))
        path = f"/v1/volumes/{snapshot.volume}/snapshots/{snapshot.id}"
        await self.agents.call(node, "DELETE", path, params={"driver": snapshot.driver})
        text = f"snapshot {snapshot.id} of volume {snapshot.volume} deleted"
        event = new_event("volume.snapshot_deleted", text, now=self.clock())

        def change(current: Snapshot | None) -> tuple[None, list[Any]]:
            return None, [event]

        await self.writer.update(k.snapshot_key(snapshot.volume, snapshot.id), Snapshot, change)
        return respond({"deleted": snapshot.id, "volume": snapshot.volume})

    # ---- restore -----------------------------------------------------------------------
    @table.add(
        "POST",
        "/v1/snapshots/{volume}/{id}/restore",
        "Restore a snapshot into a new volume (the snapshot's driver, size, node by default)",
        body=RestoreRequest,
        response=Volume,
        tags=("volumes",),
    )
    async def snapshot_restore(self, request: web.Request) -> web.Response:
        snapshot = self._snapshot(request)
        body = validate_body(RestoreRequest, await read_json(request))
        created = validate_body(VolumeCreate, restore_volume(snapshot, body))
        node = self._restore_node(snapshot, created)
        task = RESTORE_TASK + snapshot.id
        epoch = await self._create_claimed(created, node, task, snapshot)
        call = {
            "source": snapshot.volume,
            "id": snapshot.id,
            "source_driver": snapshot.driver,
            "driver": created.driver,
            "size": created.size,
        }
        try:
            async with self._renewing(created.name, node, task, epoch):
                done = await self.agents.call(
                    node, "POST", f"/v1/volumes/{created.name}/restore", call
                )
        except BaseException:
            await self._drop(created.name)
            raise
        volume = await self._restored(created.name, node, task, epoch, snapshot, done)
        return respond(volume)

    def _restore_node(self, snapshot: Snapshot, created: VolumeCreate) -> str:
        """The node that both reads the archive and writes the new volume."""
        nodes = list(self.cache.nodes.values())
        if created.driver == "local":
            assert created.node is not None
            target = self.cache.nodes.get(created.node)
            if target is None:
                raise SpecError([FieldError("node", f"no node named {created.node!r}")])
            if snapshot.driver == "local" and snapshot.node != created.node:
                raise SpecError(
                    [
                        FieldError(
                            "node",
                            f"the archive of snapshot {snapshot.id} is on node {snapshot.node}:"
                            f" restore a local volume there (or download it with --to and "
                            f"import it by hand)",
                        )
                    ]
                )
            if archive_node(snapshot, [target]) != created.node:
                raise Unavailable(f"node {created.node} is down")
            return created.node
        return archive_node(snapshot, nodes)

    async def _create_claimed(
        self, created: VolumeCreate, node: str, task: str, snapshot: Snapshot
    ) -> int:
        """Create the volume already claimed by the restore: no task can attach it half full."""
        now = self.clock()
        text = f"volume {created.name} created from snapshot {snapshot.id} of {snapshot.volume}"

        def change(current: Volume | None) -> tuple[Volume, list[Any]]:
            if current is not None:
                raise Conflict(f"a volume named {created.name!r} exists already")
            volume = claim(new_volume(created, now), node, task, now, LEASE)
            return volume, [new_event("volume.restoring", text, now=now, node=node)]

        volume = await self.writer.update(k.volume_key(created.name), Volume, change)
        assert volume is not None
        return volume.epoch

    async def _restored(
        self, name: str, node: str, task: str, epoch: int, snapshot: Snapshot, done: Any
    ) -> Volume:
        """Release the restore's claim and note whether the size is enforced."""
        now = self.clock()
        enforced = bool(done.get("size_enforced")) if isinstance(done, dict) else None
        text = f"volume {name} restored from snapshot {snapshot.id} on {node}"

        def change(current: Volume | None) -> tuple[Volume, list[Any]]:
            if current is None:
                raise NotFound(f"volume {name} was deleted while it was being restored")
            volume = release(current, node, task, epoch, now)[0]
            volume = volume.model_copy(update={"size_enforced": enforced})
            return volume, [new_event("volume.restored", text, now=now, node=node)]

        volume = await self.writer.update(k.volume_key(name), Volume, change)
        assert volume is not None
        return volume

    async def _drop(self, name: str) -> None:
        """Remove the volume a failed restore created (the agent removed its files)."""

        def change(current: Volume | None) -> tuple[None, list[Any]]:
            return None, []

        with contextlib.suppress(Exception):
            await self.writer.update(k.volume_key(name), Volume, change)
