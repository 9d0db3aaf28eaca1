"""Persistent volumes: the object, and the pure rules that grant it to one task at a time.

A volume is created on its own (`POST /v1/volumes`) and outlives the tasks that use it. An agent
that is about to mount it *claims* it for a task; the server grants an attachment with a lease
and a **fencing epoch** (the volume's counter, bumped on every grant). The holder renews the
lease with its epoch; once the lease has expired (plus a grace period) another node may claim
the volume, getting a higher epoch, and a renewal with the older epoch is refused: the old
holder has lost the claim and must stop writing.

`claim`, `renew`, `release` and `holders` are pure: the clock is an argument, so the rules are
tested without a server.

Removal (`volume rm`) is a grant of its own: `mark_deleting` refuses a live holder and sets the
state `deleting`, which no claim gets past; `removal_node` picks the agent that deletes the
files (a local volume's node, any reachable one for a shared volume); then the record goes.
`unmark_deleting` undoes the mark when that agent did nothing. The agent side (mounting, renewing, fencing) is `moorage.agent.volumes`
with `moorage.volumes` (docs/volumes.md).
"""

from __future__ import annotations

from typing import Literal

from pydantic import BaseModel, ConfigDict, Field, model_validator

from .errors import Conflict, FieldError, FieldProblems, Unavailable
from .node import Node, NodeStatus
from .taskdef import NAME_PATTERN, Strict

DEFAULT_LEASE = 10.0  # seconds an attachment lasts without a renewal
MIN_LEASE = 1.0
MAX_LEASE = 3600.0
GRACE = 2.0  # an expired lease still holds for this long (clock skew, a late renewal)

Driver = Literal["local", "shared"]
Scope = Literal["task", "shared"]
Access = Literal["single-writer", "read-only-many"]
VolumeState = Literal["detached", "attached", "deleting"]


class VolumeCreate(Strict):
    """The body of `POST /v1/volumes`."""

    name: str = Field(pattern=NAME_PATTERN)
    driver: Driver
    node: str | None = Field(default=None, min_length=1)
    size: int | None = Field(default=None, ge=1)  # MiB
    scope: Scope = "shared"
    access: Access = "single-writer"
    autoprovision: bool = False

    @model_validator(mode="after")
    def _node(self) -> VolumeCreate:
        if self.scope == "task":
            raise FieldProblems(
                [
                    FieldError(
                        "scope",
                        "a scope: task volume is created with its task and deleted after it: "
                        "declare it in the spec's volumes (docs/spec.md); a volume created on "
                        "its own is scope: shared",
                    )
                ]
            )
        if self.driver == "local" and self.node is None:
            raise FieldProblems(
                [FieldError("node", "a local volume lives on one node: name it (--node)")]
            )
        if self.driver == "shared" and self.node is not None:
            raise FieldProblems(
                [FieldError("node", "only a local volume is bound to a node; drop it")]
            )
        return self


class GrantBody(Strict):
    """The body of the agents' claim, renew and release calls."""

    node: str = Field(min_length=1)
    task: str = Field(min_length=1)
    epoch: int | None = Field(default=None, ge=1)  # renew and release: the epoch granted
    lease_ttl: float = Field(default=DEFAULT_LEASE, ge=MIN_LEASE, le=MAX_LEASE)
    # claim and renew: whether the agent enforces the size (a loop-mounted ext4 image)
    size_enforced: bool | None = None


class Attachment(BaseModel):
    model_config = ConfigDict(extra="ignore", frozen=True)

    node: str
    task: str
    epoch: int  # the fencing epoch this grant carries
    granted_at: float
    lease_expires: float

    def live(self, now: float) -> bool:
        """Still held: the lease (plus the grace period) has not run out."""
        return self.lease_expires + GRACE >= now

    def describe(self) -> str:
        return f"task {self.task} on node {self.node} (epoch {self.epoch})"


class Volume(BaseModel):
    model_config = ConfigDict(extra="ignore", frozen=True)

    name: str
    driver: Driver
    node: str | None = None  # a local volume's node
    size: int | None = None  # MiB
    scope: Scope = "shared"
    access: Access = "single-writer"
    autoprovision: bool = False
    state: VolumeState = "detached"
    attachments: list[Attachment] = Field(default_factory=list)
    epoch: int = 0  # monotonic: bumped on every grant
    created_at: float = 0.0
    size_enforced: bool | None = None  # None until an agent provisions it


def new_volume(body: VolumeCreate, now: float) -> Volume:
    return Volume(
        name=body.name,
        driver=body.driver,
        node=body.node,
        size=body.size,
        scope=body.scope,
        access=body.access,
        autoprovision=body.autoprovision,
        created_at=now,
    )


def with_size_enforced(volume: Volume, enforced: bool | None) -> Volume:
    """What the agent reported about the size (None: nothing reported, nothing changes)."""
    if enforced is None or volume.size_enforced == enforced:
        return volume
    return volume.model_copy(update={"size_enforced": enforced})


def holders(volume: Volume, now: float) -> list[Attachment]:
    """The attachments still live at `now`."""
    return [a for a in volume.attachments if a.live(now)]


def _with(volume: Volume, attachments: list[Attachment], epoch: int | None = None) -> Volume:
    state: VolumeState = "attached" if attachments else "detached"
    if volume.state == "deleting":
        state = "deleting"
    update: dict[str, object] = {"attachments": attachments, "state": state}
    if epoch is not None:
        update["epoch"] = epoch
    return volume.model_copy(update=update)


def claim(volume: Volume, node: str, task: str, now: float, ttl: float = DEFAULT_LEASE) -> Volume:
    """Grant `task` on `node` an attachment with the next epoch, or raise Conflict.

    Granted when nothing live holds the volume, when the only live holder is this same task
    on this same node (a re-claim: it gets a new epoch), or always for read-only-many.
    """
    if volume.state == "deleting":
        raise Conflict(f"volume {volume.name} is being deleted")
    if volume.driver == "local" and volume.node is not None and node != volume.node:
        raise Conflict(f"volume {volume.name} is local to node {volume.node}, not {node}")
    live = holders(volume, now)
    others = [a for a in live if (a.node, a.task) != (node, task)]
    if volume.access == "single-writer" and others:
        holder = others[0]
        # No time in the text: an agent waiting on the volume repeats it as its task's message.
        raise Conflict(
            f"volume {volume.name} is held by {holder.describe()}; a single-writer volume "
            f"takes one holder (free {GRACE:g}s after its lease runs out)"
        )
    epoch = volume.epoch + 1
    granted = Attachment(node=node, task=task, epoch=epoch, granted_at=now, lease_expires=now + ttl)
    claimed = _with(volume, [*others, granted], epoch)
    if volume.driver == "local" and volume.node is None:
        # An autoprovisioned local volume lives where it is first used, and stays there.
        claimed = claimed.model_copy(update={"node": node})
    return claimed


def _find(volume: Volume, node: str, task: str, epoch: int) -> Attachment | None:
    return next(
        (a for a in volume.attachments if (a.node, a.task, a.epoch) == (node, task, epoch)),
        None,
    )


def renew(
    volume: Volume, node: str, task: str, epoch: int, now: float, ttl: float = DEFAULT_LEASE
) -> Volume:
    """Extend the lease of the attachment granted with `epoch`; Conflict if it was lost."""
    found = _find(volume, node, task, epoch)
    if found is None or not found.live(now):
        current = holders(volume, now)
        now_held = f"; now held by {current[-1].describe()}" if current else ""
        raise Conflict(
            f"the claim on volume {volume.name} with epoch {epoch} by task {task} on node "
            f"{node} was lost (current epoch {volume.epoch}{now_held}): stop writing and "
            f"claim again"
        )
    renewed = found.model_copy(update={"lease_expires": now + ttl})
    attachments = [renewed if a is found else a for a in volume.attachments if a.live(now)]
    return _with(volume, attachments)


def release(volume: Volume, node: str, task: str, epoch: int, now: float) -> tuple[Volume, bool]:
    """Drop the attachment granted with `epoch` (and any expired ones); whether it was there.

    Releasing a claim that is gone already changes nothing: a stale epoch never removes a
    newer holder."""
    found = _find(volume, node, task, epoch)
    attachments = [a for a in volume.attachments if a is not found and a.live(now)]
    return _with(volume, attachments), found is not None


def check_deletable(volume: Volume, now: float) -> None:
    """Conflict naming the holders while the volume is attached."""
    live = holders(volume, now)
    if live:
        held = ", ".join(a.describe() for a in live)
        raise Conflict(
            f"volume {volume.name} is attached to {held}: stop the task (or let it release "
            f"the volume) before deleting it"
        )


def mark_deleting(volume: Volume, now: float) -> Volume:
    """The volume in state `deleting` (no claim is granted any more); Conflict while attached.
    A volume already `deleting` (a removal interrupted) stays so, to be finished."""
    check_deletable(volume, now)
    return volume.model_copy(update={"state": "deleting", "attachments": []})


def unmark_deleting(volume: Volume) -> Volume:
    """Back to `detached`: the removal did not touch the files."""
    if volume.state != "deleting":
        return volume
    return volume.model_copy(update={"state": "detached"})


def reachable(nodes: list[Node]) -> list[Node]:
    """The nodes whose agents the server can call (not down, address known), by name."""
    return sorted(
        (n for n in nodes if n.status != NodeStatus.DOWN and n.agent_addr), key=lambda n: n.name
    )


def removal_node(volume: Volume, nodes: list[Node]) -> str | None:
    """The node whose agent deletes the volume's files: a local volume's own node (None: it
    never had one, so it has no files), the first reachable one for a shared volume (every
    node sees the shared root). Unavailable when no agent can: the volume is left as it is."""
    ready = [n.name for n in reachable(nodes)]
    if volume.driver == "local":
        if volume.node is None or volume.node in ready:
            return volume.node
        raise Unavailable(
            f"node {volume.node} of local volume {volume.name} is down: its data cannot be "
            f"removed, so the volume is kept as it was (remove it once the node is back)"
        )
    if not ready:
        raise Unavailable(
            f"no ready node can remove the data of shared volume {volume.name} (every agent "
            f"is down): the volume is kept as it was"
        )
    return ready[0]
