"""Volume snapshots and backups (docs/volumes.md): pick the agent, have it act, record.

    take(volume, SnapshotRequest)      ─▶ plan_snapshot(volume, nodes) ─▶ agent of that node
                                          detached: the server claims the volume
                                          (task snapshot-<id>) for the copy
    restore(snapshot, RestoreRequest)  ─▶ the new volume is created claimed by restore-<id>,
                                          then an agent fills it
    delete(snapshot)                   ─▶ the archive, then the record
    archive(snapshot)                  ─▶ which agent serves the .tar.gz (the server streams it)

The server never reads volume data: agents do (agent/snapshots.py). Records live under
`/moorage/snapshots/<volume>/<id>` and outlive their volume.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
from collections.abc import AsyncIterator, Awaitable, Callable
from typing import Any, TypeVar

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
from moorage.state import StateCache, StateWriter, kinds, new_event

from .agents import AgentCalls

log = logging.getLogger(__name__)

T = TypeVar("T")
LEASE = 30.0  # seconds: the server's claim while an agent copies; renewed every LEASE / 3
COPY_TIMEOUT = 1800.0  # seconds an agent may take to archive or restore a volume
Change = tuple[Volume | None, list[Any]]


class Snapshots:
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
        self.agents = agents

    # ---- reads -------------------------------------------------------------------------
    def get(self, volume: str, snapshot_id: str) -> Snapshot:
        found = self.cache.snapshots.get((volume, snapshot_id))
        if found is None:
            raise NotFound(f"no snapshot {snapshot_id!r} of volume {volume!r}")
        return found

    def listed(self, volume: str | None = None) -> list[Snapshot]:
        found = [s for s in self.cache.snapshots.values() if volume in (None, s.volume)]
        if volume is not None and not found and volume not in self.cache.volumes:
            raise NotFound(f"no volume named {volume!r} (and no snapshot of one)")
        return sorted(found, key=lambda s: (s.volume, s.created_at, s.id))

    def archive(self, snapshot: Snapshot) -> tuple[str, str, dict[str, str]]:
        """Where the snapshot's archive is read from: (node, agent path, query)."""
        node = archive_node(snapshot, list(self.cache.nodes.values()))
        path = f"/v1/volumes/{snapshot.volume}/snapshots/{snapshot.id}/archive"
        return node, path, {"driver": snapshot.driver}

    # ---- take --------------------------------------------------------------------------
    async def take(self, name: str, options: SnapshotRequest) -> Snapshot:
        """Snapshot a volume: its writer is paused (frozen) for the copy."""
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
            return await self.agents.call(
                plan.node,
                "POST",
                f"/v1/volumes/{name}/snapshots",
                body,
                timeout=options.pause_timeout + COPY_TIMEOUT,
            )

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
        return snapshot

    async def _record(self, snapshot: Snapshot) -> None:
        paused = f", {snapshot.task} paused {snapshot.pause_seconds:.3f}s" if snapshot.task else ""
        text = (
            f"snapshot {snapshot.id} of volume {snapshot.volume} taken on {snapshot.node} "
            f"({snapshot.consistency}{paused}, {snapshot.size} bytes)"
        )
        event = new_event("volume.snapshot", text, now=self.clock(), node=snapshot.node)
        ident = (snapshot.volume, snapshot.id)
        await self.writer.update(kinds.SNAPSHOT, ident, lambda _current: (snapshot, [event]))

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
        def change(current: Volume | None) -> Change:
            if current is None:
                raise NotFound(f"no volume named {name!r}")
            return step(current, self.clock()), []

        updated = await self.writer.update(kinds.VOLUME, name, change)
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

    # ---- delete ------------------------------------------------------------------------
    async def delete(self, snapshot: Snapshot) -> None:
        """The archive (by an agent that can reach it), then the record."""
        node, _path, params = self.archive(snapshot)
        path = f"/v1/volumes/{snapshot.volume}/snapshots/{snapshot.id}"
        await self.agents.call(node, "DELETE", path, params=params)
        text = f"snapshot {snapshot.id} of volume {snapshot.volume} deleted"
        event = new_event("volume.snapshot_deleted", text, now=self.clock())
        ident = (snapshot.volume, snapshot.id)
        await self.writer.update(kinds.SNAPSHOT, ident, lambda _current: (None, [event]))

    # ---- restore -----------------------------------------------------------------------
    async def restore(self, snapshot: Snapshot, body: RestoreRequest) -> Volume:
        """Restore into a new volume (the snapshot's driver, size, node by default)."""
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
                    node,
                    "POST",
                    f"/v1/volumes/{created.name}/restore",
                    call,
                    timeout=COPY_TIMEOUT,
                )
        except BaseException:
            with contextlib.suppress(Exception):  # the agent removed its files
                await self.writer.update(kinds.VOLUME, created.name, lambda _: (None, []))
            raise
        return await self._restored(created.name, node, task, epoch, snapshot, done)

    def _restore_node(self, snapshot: Snapshot, created: VolumeCreate) -> str:
        """The node that both reads the archive and writes the new volume."""
        nodes = list(self.cache.nodes.values())
        if created.driver != "local":
            return archive_node(snapshot, nodes)
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

    async def _create_claimed(
        self, created: VolumeCreate, node: str, task: str, snapshot: Snapshot
    ) -> int:
        """Create the volume already claimed by the restore: no task can attach it half full."""
        now = self.clock()
        text = f"volume {created.name} created from snapshot {snapshot.id} of {snapshot.volume}"

        def change(current: Volume | None) -> Change:
            if current is not None:
                raise Conflict(f"a volume named {created.name!r} exists already")
            volume = claim(new_volume(created, now), node, task, now, LEASE)
            return volume, [new_event("volume.restoring", text, now=now, node=node)]

        volume = await self.writer.update(kinds.VOLUME, created.name, change)
        assert volume is not None
        return volume.epoch

    async def _restored(
        self, name: str, node: str, task: str, epoch: int, snapshot: Snapshot, done: Any
    ) -> Volume:
        """Release the restore's claim and note whether the size is enforced."""
        now = self.clock()
        enforced = bool(done.get("size_enforced")) if isinstance(done, dict) else None
        text = f"volume {name} restored from snapshot {snapshot.id} on {node}"

        def change(current: Volume | None) -> Change:
            if current is None:
                raise NotFound(f"volume {name} was deleted while it was being restored")
            volume = release(current, node, task, epoch, now)[0]
            volume = volume.model_copy(update={"size_enforced": enforced})
            return volume, [new_event("volume.restored", text, now=now, node=node)]

        volume = await self.writer.update(kinds.VOLUME, name, change)
        assert volume is not None
        return volume
