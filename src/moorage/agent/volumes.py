"""The volumes of one task on this node: claim, mount, keep the lease, fence, release.

    attach()   scope: shared ─▶ claim each from the server (409: the task waits, STARTING, its
               message says who holds the volume; retried every second until granted or the
               task is no longer wanted) ─▶ fence file + watchdog ─▶ provision and mount
               scope: task   ─▶ provision under the task dir (no claim)
    keep()     renew every lease/3 with the granted epoch. A renewal sent at t that succeeds
               moves the deadline to t + 0.75 x lease (fence file rewritten). 409 (lost), or the
               deadline reached without a renewal ─▶ on_lost(reason): the runner kills the task
    detach()   once the task is dead: unmount, release each claim, remove the fence file (the
               watchdog exits); a task that is gone for good also loses its scope: task volumes

The server grants a volume elsewhere only after lease_expires (set when it *received* the last
renewal) plus 2 s of grace, so stopping at send time + 0.75 x lease is always first. The
watchdog (`moorage.volumes.fence`) enforces the same deadline when this agent is dead.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import subprocess
from collections.abc import Awaitable, Callable
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any, Protocol

import psutil

from moorage.drivers.base import BindMount, TaskHandle
from moorage.model import Container, TaskDefinition, VolumeSpec
from moorage.model.volume import GrantBody, Volume
from moorage.volumes import Layout, VolumeError, fence, host, layout

from . import hostvolumes
from .client import ServerError

log = logging.getLogger(__name__)

FENCE_FRACTION = 0.75  # of the lease, after the send time of the last successful renewal
RENEW_FRACTION = 1 / 3  # renew every lease/3
CLAIM_RETRY = 1.0  # a refused claim is tried again after this long
TICK = 0.05
RELEASE_ATTEMPTS = 3

Waiting = Callable[[str], Awaitable[None]]
OnLost = Callable[[str], None]


class Grants(Protocol):
    async def volume_grant(self, action: str, name: str, body: GrantBody, timeout: float) -> Volume:
        """POST /v1/volumes/NAME/{claim,renew,release}; raises ServerError (409: refused)."""
        ...


def env_key(key: str) -> str:
    """`MOORAGE_VOLUME_<KEY>`: the key upper-cased, `-` → `_`."""
    return "MOORAGE_VOLUME_" + key.upper().replace("-", "_")


@dataclass
class Attached:
    """One volume of the task, as mounted on this node (saved with the task's handles)."""

    key: str
    name: str  # the cluster volume; "" for scope: task
    kind: str  # image | directory
    host_path: str
    mountpoint: str  # the image's mountpoint; "" for a directory
    read_only: bool  # mounted read-only (read-only-many, or the spec's read_only)
    epoch: int = 0
    deadline: float | None = None  # fence clock; None: no claim, or not granted yet
    renew_at: float = 0.0
    size_enforced: bool | None = None  # reported with the renewals

    @property
    def claimed(self) -> bool:
        return bool(self.name)


class NodeMounts:
    """Which tasks use each mountpoint of this node: a read-only-many volume mounted once for
    several tasks is unmounted by the last of them."""

    def __init__(self) -> None:
        self._users: dict[str, set[str]] = {}

    def acquire(self, mountpoint: str, task_id: str) -> None:
        self._users.setdefault(mountpoint, set()).add(task_id)

    def release(self, mountpoint: str, task_id: str) -> bool:
        """Drop the task; whether nobody uses the mountpoint any more."""
        users = self._users.get(mountpoint, set())
        users.discard(task_id)
        if not users:
            self._users.pop(mountpoint, None)
        return not users


class TaskVolumes:
    def __init__(
        self,
        task_id: str,
        taskdef: TaskDefinition | None,  # None: only detaching what a saved task attached
        task_dir: Path,
        node: str,
        paths: Layout,
        grants: Grants | None,
        lease: float,
        node_mounts: NodeMounts,
        host_volumes: dict[str, str] | None = None,
    ) -> None:
        self.task_id = task_id
        self.taskdef = taskdef
        self.task_dir = task_dir
        self.node = node
        self.paths = paths
        self.grants = grants
        self.lease = lease
        self.node_mounts = node_mounts
        self.host_volumes = host_volumes or {}
        self.attached: list[Attached] = []
        self.fence_file = paths.fence_file(task_id)
        self._targets: dict[str, Any] = {"pids": [], "cgroups": [], "containers": []}
        self._watchdog: subprocess.Popen[bytes] | None = None
        self._watchdog_id: tuple[int, float | None] | None = None
        self._keeper: asyncio.Task[None] | None = None

    @property
    def claims(self) -> list[Attached]:
        return [a for a in self.attached if a.claimed]

    # ---- attach ----------------------------------------------------------------------------
    async def attach(self, stop: asyncio.Event, waiting: Waiting, on_lost: OnLost) -> bool:
        """Claim, provision and mount every volume; False when the task was stopped while
        waiting for a claim. Raises VolumeError when a volume cannot be mounted here."""
        assert self.taskdef is not None
        mountable = host.can_mount()
        planned: list[tuple[int | None, host.Storage, Attached]] = []
        for key, spec in sorted(self.taskdef.volumes.items()):
            if spec.host_path is not None:  # the node's own directory: nothing to provision
                try:
                    real = hostvolumes.resolve(self.host_volumes, spec.host_path)
                except hostvolumes.HostVolumeError as exc:
                    raise VolumeError(f"volume {key}: {exc}") from None
                self.attached.append(Attached(key, "", "host", str(real), "", spec.read_only))
                continue
            read_only = spec.read_only or spec.access == "read-only-many"
            size = spec.size_mib
            if spec.scope == "shared":
                # The cluster volume is the truth for driver and size (it may have been created
                # with `moorage volume create` before the spec named it): claim, then look.
                name = spec.volume_name(key)
                attached = Attached(key, name, "", "", "", read_only)
                volume = await self._claim(attached, stop, waiting)
                if volume is None:
                    return False
                self.attached.append(attached)
                self._start_keeping(on_lost)
                size = volume.size if volume.size is not None else size
                storage = host.choose(
                    self.paths.image_path(volume.driver, name),
                    self.paths.data_path(volume.driver, name),
                    self.paths.mountpoint(name),
                    size,
                    mountable,
                )
            else:
                storage = self._storage(key, spec, mountable)
                attached = Attached(key, "", "", "", "", read_only)
                self.attached.append(attached)
            attached.kind = storage.kind
            attached.host_path = str(storage.host_path)
            attached.mountpoint = str(storage.mountpoint) if storage.kind == "image" else ""
            attached.size_enforced = storage.size_enforced
            attached.renew_at = 0.0  # renew at once: the server learns size_enforced now
            planned.append((size, storage, attached))
        if self.claims:
            self._write_fence()
            await asyncio.to_thread(self._spawn_watchdog)
        for size, storage, attached in planned:
            await asyncio.to_thread(host.provision, storage, size, attached.read_only)
            if attached.mountpoint:
                self.node_mounts.acquire(attached.mountpoint, self.task_id)
        return True

    def _storage(self, key: str, spec: VolumeSpec, mountable: bool) -> host.Storage:
        if spec.scope == "shared":
            name = spec.volume_name(key)
            image = self.paths.image_path(spec.driver, name)
            data = self.paths.data_path(spec.driver, name)
            mountpoint = self.paths.mountpoint(name)
        else:
            image = layout.task_image_path(self.task_dir, key)
            data = layout.task_data_path(self.task_dir, key)
            mountpoint = layout.task_mountpoint(self.task_dir, key)
        return host.choose(image, data, mountpoint, spec.size_mib, mountable)

    async def _claim(
        self, attached: Attached, stop: asyncio.Event, waiting: Waiting
    ) -> Volume | None:
        """The granted volume, or None when the task was stopped while waiting."""
        assert self.grants is not None, "a task with scope: shared volumes needs a server"
        body = GrantBody(node=self.node, task=self.task_id, lease_ttl=self.lease)
        said = ""
        while not stop.is_set():
            sent = fence.now()
            try:
                volume = await self.grants.volume_grant(
                    "claim", attached.name, body, timeout=max(self.lease / 2, 1.0)
                )
            except ServerError as exc:
                why = exc.detail if exc.status else "no server answers"
                message = f"waiting for volume {attached.name}: {why}"
                if message != said:
                    said = message
                    await waiting(message)
                with contextlib.suppress(TimeoutError):
                    await asyncio.wait_for(stop.wait(), CLAIM_RETRY)
                continue
            attached.epoch = volume.epoch
            self._renewed(attached, sent)
            log.info(
                "task %s: volume %s granted (epoch %d)", self.task_id, volume.name, volume.epoch
            )
            return volume
        return None

    # ---- the workload's view ---------------------------------------------------------------
    def env(self) -> dict[str, str]:
        """MOORAGE_VOLUME_<KEY>=<host path>, and _EPOCH for claimed volumes."""
        env = {}
        for attached in self.attached:
            env[env_key(attached.key)] = attached.host_path
            if attached.claimed:
                env[env_key(attached.key) + "_EPOCH"] = str(attached.epoch)
        return env

    def binds(self, container: Container) -> tuple[BindMount, ...]:
        by_key = {a.key: a for a in self.attached}
        binds = []
        for mount in container.mounts:
            attached = by_key.get(mount.volume)
            if attached is not None:
                read_only = mount.read_only or attached.read_only
                binds.append(BindMount(Path(attached.host_path), mount.path, read_only))
        return tuple(binds)

    def track(self, handle: TaskHandle) -> None:
        """A container started: the watchdog must be able to kill it."""
        state = handle.state
        if handle.driver == "docker" and state.get("container_id"):
            self._targets["containers"].append(str(state["container_id"]))
        if state.get("pid") and handle.driver != "docker":
            self._targets["pids"].append((int(state["pid"]), state.get("pid_start")))
        if state.get("cgroup"):
            self._targets["cgroups"].append(str(state["cgroup"]))
        if self.claims:
            self._write_fence()

    # ---- the lease -------------------------------------------------------------------------
    def _start_keeping(self, on_lost: OnLost) -> None:
        if self._keeper is None or self._keeper.done():
            self._keeper = asyncio.create_task(self._keep(on_lost), name=f"lease-{self.task_id}")

    async def stop_keeping(self) -> None:
        keeper, self._keeper = self._keeper, None
        if keeper is not None:
            keeper.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await keeper

    async def _keep(self, on_lost: OnLost) -> None:
        while True:
            now = fence.now()
            for attached in self.claims:
                if attached.deadline is not None and now >= attached.deadline:
                    on_lost(
                        f"volume {attached.name}: no server confirmed its lease in time "
                        f"(fenced at 0.75 x {self.lease:g}s after the last renewal)"
                    )
                    return
            for attached in self.claims:
                if now >= attached.renew_at:
                    lost = await self._renew(attached)
                    if lost is not None:
                        on_lost(lost)
                        return
            await asyncio.sleep(TICK)

    async def _renew(self, attached: Attached) -> str | None:
        """One renewal; the reason when the claim is lost, else None."""
        assert self.grants is not None and attached.deadline is not None
        sent = fence.now()
        budget = max(attached.deadline - sent, 0.01)
        body = GrantBody(
            node=self.node,
            task=self.task_id,
            epoch=attached.epoch,
            lease_ttl=self.lease,
            size_enforced=attached.size_enforced,
        )
        try:
            await asyncio.wait_for(
                self.grants.volume_grant("renew", attached.name, body, timeout=budget), budget
            )
        except ServerError as exc:
            if exc.status in (404, 409):
                return f"volume {attached.name}: {exc.detail}"
            attached.renew_at = fence.now() + min(CLAIM_RETRY, self.lease / 6)
            log.warning("task %s: renewing volume %s: %s", self.task_id, attached.name, exc)
            return None
        except TimeoutError:
            attached.renew_at = fence.now()
            return None
        self._renewed(attached, sent)
        self._write_fence()
        return None

    def _renewed(self, attached: Attached, sent: float) -> None:
        attached.deadline = sent + FENCE_FRACTION * self.lease
        attached.renew_at = sent + RENEW_FRACTION * self.lease

    # ---- fencing when the agent is gone ----------------------------------------------------
    def deadline(self) -> float | None:
        deadlines = [a.deadline for a in self.claims if a.deadline is not None]
        return min(deadlines) if deadlines else None

    def _write_fence(self) -> None:
        fence.write(
            self.fence_file,
            fence.Fence(
                task=self.task_id,
                deadline=self.deadline(),
                unmount=[a.mountpoint for a in self.claims if a.mountpoint],
                pids=list(self._targets["pids"]),
                cgroups=list(self._targets["cgroups"]),
                containers=list(self._targets["containers"]),
            ),
        )

    def _spawn_watchdog(self) -> None:
        if self._watchdog_alive():
            return
        self._watchdog = fence.spawn(self.fence_file, self.task_dir / "run" / "fence.log")
        pid = self._watchdog.pid
        self._watchdog_id = (pid, _start_time(pid))

    def _watchdog_alive(self) -> bool:
        if self._watchdog is not None:
            return self._watchdog.poll() is None
        if self._watchdog_id is None:
            return False
        pid, start = self._watchdog_id
        actual = _start_time(pid)
        return actual is not None and (start is None or abs(actual - start) < 0.01)

    # ---- detach ----------------------------------------------------------------------------
    async def detach(self, discard: bool) -> None:
        """After the task's workloads are dead: unmount, release, drop the fence file."""
        await self.stop_keeping()
        for attached in self.attached:
            last = not attached.mountpoint or self.node_mounts.release(
                attached.mountpoint, self.task_id
            )
            if attached.mountpoint and last:
                try:
                    await asyncio.to_thread(host.unmount, Path(attached.mountpoint))
                except VolumeError as exc:
                    log.warning("task %s: %s", self.task_id, exc)
        for attached in self.claims:
            await self._release(attached)
        self.fence_file.unlink(missing_ok=True)
        if self._watchdog is not None:
            with contextlib.suppress(subprocess.TimeoutExpired):
                await asyncio.to_thread(self._watchdog.wait, 2)
        if discard:
            await asyncio.to_thread(discard_task_volumes, self.task_dir)
        self.attached = []

    async def _release(self, attached: Attached) -> None:
        assert self.grants is not None
        body = GrantBody(node=self.node, task=self.task_id, epoch=attached.epoch)
        for attempt in range(RELEASE_ATTEMPTS):
            try:
                await self.grants.volume_grant("release", attached.name, body, timeout=5)
                return
            except ServerError as exc:
                if exc.status:  # refused (gone, stale): nothing left to release
                    return
                await asyncio.sleep(0.5 * (attempt + 1))
        log.warning(
            "task %s: could not release volume %s; its lease will run out",
            self.task_id,
            attached.name,
        )

    # ---- recovery --------------------------------------------------------------------------
    def to_json(self) -> dict[str, Any]:
        attached = [asdict(a) | {"deadline": None, "renew_at": 0.0} for a in self.attached]
        watchdog = list(self._watchdog_id) if self._watchdog_id else None
        return {"attached": attached, "targets": self._targets, "watchdog": watchdog}

    def restore(self, data: dict[str, Any]) -> None:
        self.attached = [Attached(**a) for a in data.get("attached", [])]
        targets = data.get("targets") or {}
        self._targets = {
            "pids": [tuple(p) for p in targets.get("pids", [])],
            "cgroups": list(targets.get("cgroups", [])),
            "containers": list(targets.get("containers", [])),
        }
        watchdog = data.get("watchdog")
        self._watchdog_id = (int(watchdog[0]), watchdog[1]) if watchdog else None

    async def resume(self, on_lost: OnLost) -> None:
        """After an agent restart: the same epochs, renewed at once; the deadline is the one
        the fence file still holds (passed: the task is fenced already, or is now)."""
        for attached in self.attached:
            if attached.mountpoint:
                self.node_mounts.acquire(attached.mountpoint, self.task_id)
        if not self.claims:
            return
        saved = fence.read(self.fence_file)
        deadline = saved.deadline if saved is not None and saved.fenced_at is None else None
        for attached in self.claims:
            attached.deadline = deadline if deadline is not None else fence.now()
            attached.renew_at = 0.0
        if deadline is None or fence.now() >= deadline:
            on_lost("its volume lease ran out while the agent was away (fenced)")
            return
        await asyncio.to_thread(self._spawn_watchdog)
        self._start_keeping(on_lost)


def discard_task_volumes(task_dir: Path) -> None:
    """Remove a task's `scope: task` volumes (unmounting what is mounted there)."""
    root = task_dir / "volumes"
    if root.exists():
        host.remove_tree(root)


def _start_time(pid: int) -> float | None:
    try:
        process = psutil.Process(pid)
        if process.status() == psutil.STATUS_ZOMBIE:
            return None
        return float(process.create_time())
    except psutil.Error:
        return None
