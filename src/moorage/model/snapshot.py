"""Volume snapshots: the record the server keeps, and the pure choices around taking one.

A snapshot is a gzipped tar of a volume's file tree, written by an agent next to the volume
(`<volume root>/.snapshots/<volume>/<id>.tar.gz`); the server keeps its metadata under
`/moorage/snapshots/<volume>/<id>`. Like an EBS snapshot it outlives its volume.

Who takes it (`plan_snapshot`): the node of the live single-writer holder, so the agent can
pause that writer for the copy; else a `local` volume's node; else (a detached `shared`
volume) any ready node, the server holding a claim on the volume meanwhile so that no writer
attaches halfway through the copy. How consistent it is (`consistency`):

    frozen     the writer's cgroup was frozen (process driver) or its container paused (docker)
    paused     the writer's process group was stopped with SIGSTOP (no cgroup to freeze)
    stopped    the volume is held by a task that is not running on its node
    read-only  only read-only-many readers hold it: nothing writes
    detached   nobody holds it (the server claimed it for the copy)
"""

from __future__ import annotations

import secrets
from dataclasses import dataclass
from typing import Literal

from pydantic import BaseModel, ConfigDict, Field

from .errors import Conflict, Unavailable
from .node import Node
from .taskdef import NAME_PATTERN, Strict
from .volume import Access, Driver, Volume, holders, reachable

Consistency = Literal["frozen", "paused", "stopped", "read-only", "detached"]
SNAPSHOT_ID_PATTERN = r"^snap-[0-9a-f]{12}$"
SNAPSHOT_TASK = "snapshot-"  # the task name of the server's claim on a detached volume
RESTORE_TASK = "restore-"  # the task name of the claim a restore holds on its new volume


class Snapshot(BaseModel):
    model_config = ConfigDict(extra="ignore", frozen=True)

    id: str
    volume: str
    driver: Driver  # where the archive lives: the shared root, or `node`'s disk
    node: str  # the node whose agent wrote the archive
    size: int  # bytes of the archive
    data_bytes: int = 0  # bytes of the files in it (uncompressed)
    files: int = 0
    volume_size: int | None = None  # MiB: the volume's size, the default of a restore
    access: Access = "single-writer"
    consistency: Consistency
    task: str | None = None  # the writer paused for the copy, if any
    pause_seconds: float = 0.0  # how long the writer was paused
    created_at: float
    duration: float = 0.0  # seconds the whole copy took


class SnapshotRequest(Strict):
    """The body of `POST /v1/volumes/{name}/snapshots` (optional)."""

    pause_timeout: float = Field(default=10.0, gt=0, le=300)  # seconds to wait for a freeze


class RestoreRequest(Strict):
    """The body of `POST /v1/snapshots/{volume}/{id}/restore`: the new volume."""

    name: str = Field(pattern=NAME_PATTERN)
    driver: Driver | None = None  # default: the snapshot's
    node: str | None = Field(default=None, min_length=1)  # local: default the snapshot's node
    size: int | None = Field(default=None, ge=1)  # MiB; default the snapshot's volume size
    access: Access | None = None


def new_snapshot_id() -> str:
    return f"snap-{secrets.token_hex(6)}"


@dataclass(frozen=True)
class SnapshotPlan:
    """Where to take a snapshot: the node, and the writer to pause there (if any)."""

    node: str
    writer: str | None  # the task holding the volume for writing; None: nobody writes
    claim: bool  # the server claims the (detached) volume for the copy
    consistency: Consistency | None  # known in advance (read-only, detached); else the agent's


def plan_snapshot(volume: Volume, nodes: list[Node], now: float) -> SnapshotPlan:
    """Which node snapshots `volume` and what it pauses; Conflict or Unavailable if none can."""
    if volume.state == "deleting":
        raise Conflict(f"volume {volume.name} is being deleted")
    live = [a for a in holders(volume, now) if not a.task.startswith(SNAPSHOT_TASK)]
    up = {n.name for n in reachable(nodes)}
    if live and volume.access == "single-writer":
        writer = live[0]
        if writer.task.startswith(RESTORE_TASK):
            raise Conflict(f"volume {volume.name} is being restored: snapshot it afterwards")
        if writer.node not in up:
            raise Unavailable(
                f"volume {volume.name} is held by {writer.describe()}, whose agent is not "
                f"reachable: its writer cannot be paused"
            )
        return SnapshotPlan(writer.node, writer.task, claim=False, consistency=None)
    consistency: Consistency = "read-only" if live else "detached"
    if volume.driver == "local":
        if volume.node is None:
            raise Conflict(f"local volume {volume.name} has no node yet: it holds no data")
        if volume.node not in up:
            raise Unavailable(f"node {volume.node} of local volume {volume.name} is down")
        return SnapshotPlan(volume.node, None, claim=not live, consistency=consistency)
    ready = reachable(nodes)
    if live:  # read-only readers: their node sees the shared root too
        node = next((a.node for a in live if a.node in up), None)
        if node is not None:
            return SnapshotPlan(node, None, claim=False, consistency=consistency)
    if not ready:
        raise Unavailable("no ready node to take the snapshot (every agent is down)")
    return SnapshotPlan(ready[0].name, None, claim=not live, consistency=consistency)


def archive_node(snapshot: Snapshot, nodes: list[Node]) -> str:
    """The node whose agent can read the snapshot's archive (its own; any, for shared)."""
    up = [n.name for n in reachable(nodes)]
    if snapshot.node in up:
        return snapshot.node
    if snapshot.driver == "shared" and up:
        return up[0]
    raise Unavailable(
        f"the archive of snapshot {snapshot.id} lives on node {snapshot.node}, which is down"
    )


def restore_volume(snapshot: Snapshot, body: RestoreRequest) -> dict[str, object]:
    """The body of the new volume a restore creates (validate it as a `VolumeCreate`): the
    snapshot's driver, size, access and (local) node unless the request overrides them."""
    driver = body.driver or snapshot.driver
    node = body.node
    if node is None and driver == "local":
        node = snapshot.node
    created: dict[str, object] = {
        "name": body.name,
        "driver": driver,
        "access": body.access or snapshot.access,
    }
    size = body.size if body.size is not None else snapshot.volume_size
    if size is not None:
        created["size"] = size
    if node is not None:
        created["node"] = node
    return created
