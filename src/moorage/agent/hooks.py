"""A task's life on this node, in hooks beside the runner's own steps (Nomad's task-runner hooks).

    prestart, in order   secrets: fetch the task's secret values
                         volumes: claim, provision, mount; keep the lease
    each container       env(container)          what the container and its checks see
                         prepare(container, req) what only the start gets (secrets, mounts)
                         started(container, h)   volumes: the watchdog knows the workload;
                                                 checks: the container's check starts
    recovered            the agent restarted while the task ran: the lease is resumed, the
                         checks start again
    poststop             its workloads are dead: checks stop; volumes unmount and release
    exit                 the runner ends (the agent's exit too: mounts and leases stay)

A prestart that must keep the task from starting raises `HookStop(status, message)`; the
runner then runs the poststop of every hook that prestarted (the stopping one included) and
reports the status.
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Awaitable, Callable, Mapping
from dataclasses import replace
from pathlib import Path
from typing import Protocol

from moorage.drivers.base import CommandCapable, Driver, StartRequest, TaskHandle
from moorage.drivers.process import beside
from moorage.model import CheckState, Container, Task, TaskDefinition, TaskStatus
from moorage.volumes import VolumeError

from .health import Checker, ExecIn
from .volumes import TaskVolumes

log = logging.getLogger(__name__)

SecretFetcher = Callable[[str], Awaitable[dict[str, dict[str, str]]]]


class HookStop(Exception):
    """A prestart keeps the task from starting: the runner reports `status` and `message`."""

    def __init__(self, status: TaskStatus, message: str) -> None:
        super().__init__(message)
        self.status = status
        self.message = message


class Hook:
    """One concern of a task's life; every step does nothing unless the hook says otherwise."""

    async def prestart(self) -> None:
        """Before the first container starts; raise HookStop to keep the task from starting."""

    def env(self, container: Container) -> dict[str, str]:
        """Environment the container and its checks get."""
        return {}

    def prepare(self, container: Container, request: StartRequest) -> StartRequest:
        """The container's start request, with what this hook adds (start only)."""
        return request

    def started(self, container: Container, handle: TaskHandle) -> None:
        """The container runs."""

    async def recovered(self) -> None:
        """The task ran before this agent restarted and still does."""

    async def poststop(self) -> None:
        """The task's workloads are dead (or never started)."""

    async def exit(self) -> None:
        """The runner ends; called last, also when the agent exits and tasks keep running."""


class SecretsHook(Hook):
    def __init__(self, task_id: str, taskdef: TaskDefinition, fetch: SecretFetcher | None) -> None:
        self.task_id = task_id
        self.taskdef = taskdef
        self.fetch = fetch
        self.values: dict[str, dict[str, str]] = {}

    async def prestart(self) -> None:
        if self.fetch is None or not any(c.secrets for c in self.taskdef.containers):
            return
        try:
            self.values = await self.fetch(self.task_id)
        except Exception as exc:  # the server's message names the missing secret
            raise HookStop(TaskStatus.FAILED, f"secrets: {exc}") from None

    def prepare(self, container: Container, request: StartRequest) -> StartRequest:
        secrets = self.values.get(container.name)
        return replace(request, env={**request.env, **secrets}) if secrets else request


class VolumeControl(Protocol):
    """What the volumes hook needs of its runner (it must not reach into the runner itself)."""

    stopping: asyncio.Event  # set when the task is no longer wanted
    hard: bool  # the lease was lost: kill, report exited
    stop_reason: str | None
    discard_volumes: bool  # the task is gone for good: its scope: task volumes go too

    def fence(self, reason: str) -> None: ...
    async def waiting(self, message: str) -> None: ...


class VolumesHook(Hook):
    def __init__(self, volumes: TaskVolumes, control: VolumeControl) -> None:
        self.volumes = volumes
        self.control = control

    async def prestart(self) -> None:
        taskdef = self.volumes.taskdef
        if taskdef is None or not taskdef.volumes:
            return
        control = self.control
        try:
            attached = await self.volumes.attach(control.stopping, control.waiting, control.fence)
        except (VolumeError, OSError) as exc:
            raise HookStop(TaskStatus.FAILED, f"volumes: {exc}") from None
        if not attached or control.hard:
            status = TaskStatus.EXITED if control.hard else TaskStatus.STOPPED
            raise HookStop(status, control.stop_reason or "stopped")

    def env(self, container: Container) -> dict[str, str]:
        return self.volumes.env()

    def prepare(self, container: Container, request: StartRequest) -> StartRequest:
        fence_file = self.volumes.fence_file if self.volumes.claims else None
        return replace(request, mounts=self.volumes.binds(container), fence_file=fence_file)

    def started(self, container: Container, handle: TaskHandle) -> None:
        self.volumes.track(handle)

    async def recovered(self) -> None:
        await self.volumes.resume(self.control.fence)

    async def poststop(self) -> None:
        """Unmount and release the volumes once the task's workloads are dead."""
        try:
            await self.volumes.detach(discard=self.control.discard_volumes)
        except (VolumeError, OSError) as exc:
            log.warning("task %s: detaching volumes: %s", self.volumes.task_id, exc)

    async def exit(self) -> None:
        await self.volumes.stop_keeping()  # cancelled (agent exit): tasks and mounts stay


class ChecksHook(Hook):
    """Each container's health check, started with its container: before the task is reported
    running (a task with checks is not healthy until they pass) and before dependants wait."""

    def __init__(
        self,
        task: Task,
        task_dir: Path,
        env: Callable[[Container], dict[str, str]],
        on_change: Callable[[], None],
        node_address: str,
        drivers: Mapping[str, Driver],
        handles: Callable[[], list[TaskHandle]],
    ) -> None:
        self.task = task
        self.task_dir = task_dir
        self.container_env = env
        self.on_change = on_change
        self.node_address = node_address
        self.drivers = drivers
        self.handles = handles
        self.checkers: list[Checker] = []
        self._tasks: list[asyncio.Task[None]] = []

    def states(self) -> list[CheckState]:
        return [c.state for c in self.checkers]

    def of(self, container: str) -> Checker | None:
        return next((c for c in self.checkers if c.container.name == container), None)

    def update_task(self, task: Task) -> None:
        """The server's newer view of the task (TTL check updates arrive this way)."""
        self.task = task
        for checker in self.checkers:
            checker.task = task

    def started(self, container: Container, handle: TaskHandle | None) -> None:
        if container.health is None:
            return
        env = self.container_env(container)
        checker = Checker(
            self.task,
            container,
            env,
            self.task_dir / container.name,
            self.on_change,
            host=self.node_address,
            exec_in=self._exec_in(handle, env) if container.driver == "docker" else None,
            wrap=_namespace_of(handle) if container.driver == "process" else None,
        )
        self.checkers.append(checker)
        self._tasks.append(
            asyncio.create_task(checker.run(), name=f"check-{self.task.id}-{container.name}")
        )

    def start_all(self, containers: list[Container]) -> None:
        for container in containers:
            handle = next((h for h in self.handles() if h.container == container.name), None)
            self.started(container, handle)

    def stop(self) -> None:
        for check in self._tasks:
            check.cancel()

    async def poststop(self) -> None:
        self.stop()

    async def exit(self) -> None:
        self.stop()

    def _exec_in(self, handle: TaskHandle | None, env: dict[str, str]) -> ExecIn | None:
        """Command checks of a Docker container run inside it."""
        driver = self.drivers.get(handle.driver) if handle is not None else None
        if handle is None or not isinstance(driver, CommandCapable):
            return None

        async def run(command: list[str], timeout: float) -> tuple[int, str]:
            return await driver.exec(handle, command, env, timeout)

        return run


def _namespace_of(handle: TaskHandle | None) -> Callable[[list[str]], list[str]] | None:
    """A process container's command check runs in its mount namespace (its volume mounts),
    as its user."""
    if handle is None:
        return None
    return lambda command: beside(handle, command)
