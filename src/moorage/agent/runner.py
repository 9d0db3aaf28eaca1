"""One task on this node: start its containers, watch them, report, stop on request.

prestart hooks ─▶ start containers (in order) ─▶ report running ─▶ wait: an essential container
(secrets; volumes:                                               │   exits ─▶ stop the others
 claim, mount; a                                                 │   ─▶ poststop ─▶ report exited
 held volume: wait)                                              ├ stop requested ─▶ stop all
                                                                 │   ─▶ poststop ─▶ report stopped
                                                                 └ volume lease lost ─▶ kill all
                                                                     ─▶ poststop ─▶ report exited

What belongs to secrets, volumes and health checks lives in their hooks (hooks.py); the runner
owns the order, the containers and the reports.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import os
import time
from collections.abc import Awaitable, Callable, Mapping
from pathlib import Path

from moorage.drivers.base import Driver, ExitResult, StartRequest, TaskHandle
from moorage.drivers.errors import DriverError
from moorage.model import Container, ContainerState, Health, Task, TaskDefinition, TaskStatus
from moorage.model.messages import TaskReport

from .configs import ConfigsHook
from .handles import HandleStore, SavedTask
from .health import Checker, worst
from .hooks import ChecksHook, Hook, HookStop, SecretFetcher, SecretsHook, VolumesHook
from .volumes import TaskVolumes

log = logging.getLogger(__name__)

Reporter = Callable[[str, TaskReport], Awaitable[bool]]
DEPENDENCY_TIMEOUT = 300.0
INHERITED_ENV = ("PATH", "LANG", "LC_ALL", "HOME", "TMPDIR", "TZ")


def task_env(
    task: Task,
    container: Container,
    node: str,
    taskdef_containers: list[Container] | None = None,
    address: str = "127.0.0.1",
) -> dict[str, str]:
    """The environment of a container: the agent's basics (processes only), the spec's env,
    the port variables and the task's identity."""
    env = {}
    if container.driver == "process":
        env = {k: os.environ[k] for k in INHERITED_ENV if k in os.environ}
    env.update(container.env)
    # Every container learns every port of its task (a sidecar reaches the app by PORT_APP);
    # PORT is the container's own first port.
    for owner in taskdef_containers or [container]:
        own = owner.name == container.name
        for position, port in enumerate(owner.ports):
            host = task.ports.get(port.name)
            if host is None:
                continue
            # What the workload listens on: the host port for a process, the mapped container
            # port for a Docker container (HOST_PORT_<NAME> tells it the host side).
            inside = port.container or host if owner.driver == "docker" else host
            name = port.name.upper().replace("-", "_")
            if position == 0 and own:
                env["PORT"] = str(inside)
            env[f"PORT_{name}"] = str(inside if own else host)
            env[f"HOST_PORT_{name}"] = str(host)
    env.update(
        {
            "MOORAGE_TASK_ID": task.id,
            "MOORAGE_SERVICE": task.service,
            "MOORAGE_NODE": node,
            "MOORAGE_NODE_IP": address,  # what a workload binds to be reachable on the node
            "MOORAGE_REVISION": str(task.revision),
        }
    )
    return env


class TaskRunner:
    def __init__(
        self,
        task: Task,
        taskdef: TaskDefinition,
        generation: int,
        drivers: Mapping[str, Driver],
        handles: HandleStore,
        task_dir: Path,
        node: str,
        report: Reporter,
        recovered: SavedTask | None = None,
        fetch_secrets: SecretFetcher | None = None,
        node_address: str = "127.0.0.1",
        volumes: TaskVolumes | None = None,
        configs: Path | None = None,
        privileged: bool = False,
    ) -> None:
        self.task = task
        self.taskdef = taskdef
        self.generation = generation
        self.drivers = drivers
        self.store = handles
        self.task_dir = task_dir
        self.node = node
        self.node_address = node_address
        self._report = report
        self.handles: list[TaskHandle] = list(recovered.handles) if recovered else []
        self.started_at = recovered.started_at if recovered else 0.0
        self.recovered = recovered is not None
        self.volumes = volumes
        if volumes is not None and recovered is not None:
            volumes.restore(recovered.volumes)
        self.discard_volumes = False  # set when the task is gone for good: scope: task ones go
        self.hard = False  # a lost volume lease: kill at once, report exited
        self.stop_reason: str | None = None
        self.stopping = asyncio.Event()
        self.done = asyncio.Event()
        self.checks = ChecksHook(
            task,
            task_dir,
            self._env,
            self._health_changed,
            node_address,
            drivers,
            lambda: self.handles,
        )
        self.hooks: list[Hook] = [SecretsHook(task.id, taskdef, fetch_secrets)]
        if volumes is not None:
            self.hooks.append(VolumesHook(volumes, self))
        if configs is not None:
            self.hooks.append(ConfigsHook(taskdef, task_dir, configs, privileged))
        self.hooks.append(self.checks)
        self._send_lock = asyncio.Lock()
        self._final_sent = False
        self._health_dirty = asyncio.Event()
        self._progress_tasks: set[asyncio.Task[None]] = set()

    @property
    def active(self) -> bool:
        return not self.done.is_set()

    @property
    def checkers(self) -> list[Checker]:
        return self.checks.checkers

    def _health_changed(self) -> None:
        self._health_dirty.set()

    async def waiting(self, message: str) -> None:
        """A long wait before the start (a volume held elsewhere): the STARTING message."""
        await self._send(TaskStatus.STARTING, message, None, [])

    def _progress(self, message: str) -> None:
        """A long start step (an image pull): reported as the STARTING task's message."""
        self._progress_tasks.add(
            asyncio.create_task(self._send(TaskStatus.STARTING, message, None, []))
        )

    def driver(self, handle: TaskHandle) -> Driver:
        driver = self.drivers.get(handle.driver)
        if driver is None:
            raise DriverError(f"this node has no {handle.driver} driver any more")
        return driver

    def update_task(self, task: Task) -> None:
        """The server's newer view of this task (TTL check updates arrive this way)."""
        self.task = task
        self.checks.update_task(task)

    def request_stop(self, reason: str) -> None:
        if self.stop_reason is None:
            self.stop_reason = reason
        self.stopping.set()

    def fence(self, reason: str) -> None:
        """The volume lease may run out: kill the task now (no stop timeout), report it exited."""
        if not self.hard:
            log.warning("task %s: %s: stopping it hard", self.task.id, reason)
        self.hard = True
        self.stop_reason = f"fenced: {reason}"
        self.stopping.set()

    async def run(self) -> None:
        try:
            if self.recovered:
                for hook in self.hooks:
                    await hook.recovered()
                self.checks.start_all(self.taskdef.containers)
            elif not await self._start_all():
                return
            await self._watch()
        finally:
            for hook in self.hooks:
                await hook.exit()
            self.done.set()

    # ---- health ----------------------------------------------------------------------------
    def _env(self, container: Container) -> dict[str, str]:
        env = task_env(self.task, container, self.node, self.taskdef.containers, self.node_address)
        for hook in self.hooks:
            env.update(hook.env(container))
        return env

    async def _report_health(self) -> None:
        """Send the checks' state while the task runs (never after its final report)."""
        while True:
            await self._health_dirty.wait()
            self._health_dirty.clear()
            await self._send(TaskStatus.RUNNING, "", None, self._states())

    # ---- start -----------------------------------------------------------------------------
    async def _start_all(self) -> bool:
        delay = self.task.not_before - time.time()
        if delay > 0:
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(self.stopping.wait(), delay)
            if self.stopping.is_set():
                await self._send(TaskStatus.STOPPED, self.stop_reason or "stopped", None, [])
                return False
        # Reported while the containers start (the send lock keeps it ahead of what follows).
        starting = asyncio.create_task(self._send(TaskStatus.STARTING, "", None, []))
        await asyncio.sleep(0)  # let it take the lock first
        if not await self._prestart():
            return False
        for container in start_order(self.taskdef.containers):
            request = StartRequest(
                self.task.id,
                container,
                self._env(container),
                self.task.ports,
                self.task_dir,
                progress=self._progress,
            )
            for hook in self.hooks:
                request = hook.prepare(container, request)
            try:
                await self._dependencies_ready(container)
                if self.hard:
                    raise DriverError(self.stop_reason or "fenced")
                driver = self.drivers.get(container.driver)
                if driver is None:
                    raise DriverError(f"this node has no {container.driver} driver")
                handle = await driver.start(request)
                self.handles.append(handle)
                for hook in self.hooks:
                    hook.started(container, handle)
            except (DriverError, OSError) as exc:
                message = f"container {container.name}: {exc}"
                await self._stop_handles()
                await self._poststop()
                await self._send(TaskStatus.FAILED, message, None, [], finished=True)
                self.store.remove(self.task.id)
                return False
        self.started_at = time.time()
        volumes = self.volumes.to_json() if self.volumes is not None else {}
        saved = SavedTask(self.task.id, self.generation, self.started_at, self.handles, volumes)
        self.store.save(saved)
        await starting
        await self._send(TaskStatus.RUNNING, "", None, self._states())
        return True

    async def _prestart(self) -> bool:
        """Every hook's prestart, in order; False (reported) if one keeps the task from starting."""
        for position, hook in enumerate(self.hooks):
            try:
                await hook.prestart()
            except HookStop as stop:
                for started in self.hooks[: position + 1]:
                    await started.poststop()
                await self._send(stop.status, stop.message, None, [], finished=True)
                return False
        return True

    async def _poststop(self) -> None:
        for hook in self.hooks:
            await hook.poststop()

    async def _dependencies_ready(self, container: Container) -> None:
        """Wait until every `healthy` dependency passes its check (`started` ones already run)."""
        for dependency in container.depends_on:
            if dependency.condition != "healthy":
                continue
            checker = self.checks.of(dependency.container)
            if checker is None:
                continue  # validation guarantees a check; nothing to wait on otherwise
            deadline = time.monotonic() + DEPENDENCY_TIMEOUT
            while checker.state.status != Health.PASSING:
                if self.stopping.is_set():
                    raise DriverError("stopped while waiting for its dependencies")
                if checker.state.failing or time.monotonic() > deadline:
                    raise DriverError(
                        f"dependency {dependency.container} did not turn healthy: "
                        f"{checker.state.output}"
                    )
                await asyncio.sleep(0.1)

    # ---- watch -----------------------------------------------------------------------------
    async def _watch(self) -> None:
        waits = {asyncio.create_task(self.driver(h).wait(h)): h for h in self.handles}
        stopper = asyncio.create_task(self.stopping.wait())
        health = asyncio.create_task(self._report_health())
        results: dict[str, ExitResult] = {}
        try:
            while True:
                done, _ = await asyncio.wait({*waits, stopper}, return_when=asyncio.FIRST_COMPLETED)
                if stopper in done:
                    break
                finished = [w for w in waits if w in done]
                ended = [(waits.pop(w), w.result()) for w in finished]
                for handle, result in ended:
                    results[handle.container] = result
                essential = [(h, r) for h, r in ended if self._container(h.container).essential]
                if essential or not waits:
                    handle, result = (essential or ended)[0]
                    await self._finish(
                        TaskStatus.EXITED,
                        f"{handle.container}: {result.describe()}",
                        result.exit_code,
                        results,
                    )
                    return
        finally:
            stopper.cancel()
            health.cancel()
            for waiter in waits:
                waiter.cancel()
        status = TaskStatus.EXITED if self.hard else TaskStatus.STOPPED
        await self._finish(status, self.stop_reason or "stopped", None, results)

    async def _finish(
        self, status: TaskStatus, message: str, code: int | None, results: dict[str, ExitResult]
    ) -> None:
        self.checks.stop()
        results.update(await self._stop_handles())
        states = self._states(results)
        for handle in self.handles:
            with contextlib.suppress(DriverError, OSError):
                await self.driver(handle).destroy(handle)
        await self._poststop()
        self.store.remove(self.task.id)
        await self._send(status, message, code, states, finished=True)

    async def _stop_handles(self) -> dict[str, ExitResult]:
        async def stop(handle: TaskHandle) -> tuple[str, ExitResult]:
            timeout = 0.0 if self.hard else self._container(handle.container).stop_timeout
            try:
                return handle.container, await self.driver(handle).stop(handle, timeout)
            except (DriverError, OSError, TimeoutError) as exc:
                return handle.container, ExitResult(None, message=f"stop failed: {exc}")

        pairs = await asyncio.gather(*(stop(h) for h in self.handles))
        return dict(pairs)

    # ---- reporting -------------------------------------------------------------------------
    def _container(self, name: str) -> Container:
        return next(c for c in self.taskdef.containers if c.name == name)

    def _states(self, results: dict[str, ExitResult] | None = None) -> list[ContainerState]:
        states = []
        for handle in self.handles:
            result = (results or {}).get(handle.container)
            states.append(
                ContainerState(
                    name=handle.container,
                    status=TaskStatus.RUNNING if result is None else TaskStatus.EXITED,
                    pid=handle.state.get("pid"),
                    exit_code=result.exit_code if result else None,
                    started_at=self.started_at or None,
                    finished_at=time.time() if result else None,
                    message=result.describe() if result else "",
                    memory_enforced=self.driver(handle).memory_enforced(handle),
                )
            )
        return states

    async def _send(
        self,
        status: TaskStatus,
        message: str,
        code: int | None,
        states: list[ContainerState],
        finished: bool = False,
    ) -> None:
        checks = self.checks.states() if status == TaskStatus.RUNNING else []
        report = TaskReport(
            status=status,
            message=message,
            exit_code=code,
            containers=states,
            started_at=self.started_at or None,
            finished_at=time.time() if finished else None,
            run_generation=self.generation,
            health=worst(checks),
            checks=checks,
        )
        async with self._send_lock:
            if self._final_sent:
                return  # a late health report must never overwrite how the task ended
            if status.terminal:
                self._final_sent = True
            await self._report(self.task.id, report)


def start_order(containers: list[Container]) -> list[Container]:
    """Dependencies first (the spec refuses cycles); otherwise in the order written."""
    by_name = {c.name: c for c in containers}
    ordered: list[Container] = []
    seen: set[str] = set()

    def visit(container: Container) -> None:
        if container.name in seen:
            return
        seen.add(container.name)
        for dependency in container.depends_on:
            if dependency.container in by_name:
                visit(by_name[dependency.container])
        ordered.append(container)

    for container in containers:
        visit(container)
    return ordered
