"""One task on this node: start its containers, watch them, report, stop on request.

attach volumes ─▶ start containers (in order) ─▶ report running ─▶ wait: an essential container
(claim, mount;                                                   │   exits ─▶ stop the others
 a held volume: wait)                                            │   ─▶ detach ─▶ report exited
                                                                 ├ stop requested ─▶ stop all
                                                                 │   ─▶ detach ─▶ report stopped
                                                                 └ volume lease lost ─▶ kill all
                                                                     ─▶ detach ─▶ report exited
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import os
import time
from collections.abc import Awaitable, Callable, Mapping
from pathlib import Path
from typing import Any

from moorage.drivers.base import Driver, ExitResult, StartRequest, TaskHandle
from moorage.drivers.errors import DriverError
from moorage.drivers.process import in_mount_namespace
from moorage.model import Container, ContainerState, Health, Task, TaskDefinition, TaskStatus
from moorage.volumes import VolumeError

from .handles import HandleStore, SavedTask
from .health import Checker, ExecIn, worst
from .volumes import TaskVolumes

log = logging.getLogger(__name__)

Reporter = Callable[[str, dict[str, Any]], Awaitable[bool]]
SecretFetcher = Callable[[str], Awaitable[dict[str, dict[str, str]]]]
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
        self._fetch_secrets = fetch_secrets
        self.handles: list[TaskHandle] = list(recovered.handles) if recovered else []
        self.started_at = recovered.started_at if recovered else 0.0
        self.recovered = recovered is not None
        self.volumes = volumes
        if volumes is not None and recovered is not None:
            volumes.restore(recovered.volumes)
        self.discard_volumes = False  # set when the task is gone for good: scope: task ones go
        self._hard = False  # a lost volume lease: kill at once, report exited
        self.stop_reason: str | None = None
        self._stop = asyncio.Event()
        self.done = asyncio.Event()
        self.checkers: list[Checker] = []
        self._check_tasks: list[asyncio.Task[None]] = []
        self._send_lock = asyncio.Lock()
        self._final_sent = False
        self._health_dirty = asyncio.Event()
        self._progress_tasks: set[asyncio.Task[None]] = set()

    @property
    def active(self) -> bool:
        return not self.done.is_set()

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
        for checker in self.checkers:
            checker.task = task

    def request_stop(self, reason: str) -> None:
        if self.stop_reason is None:
            self.stop_reason = reason
        self._stop.set()

    def fence(self, reason: str) -> None:
        """The volume lease may run out: kill the task now (no stop timeout), report it exited."""
        if not self._hard:
            log.warning("task %s: %s: stopping it hard", self.task.id, reason)
        self._hard = True
        self.stop_reason = f"fenced: {reason}"
        self._stop.set()

    async def run(self) -> None:
        try:
            if self.recovered:
                if self.volumes is not None:
                    await self.volumes.resume(self.fence)
                self._start_checks()
            elif not await self._start_all():
                return
            await self._watch()
        finally:
            for check in self._check_tasks:
                check.cancel()
            if self.volumes is not None:  # cancelled (agent exit): tasks and mounts stay
                await self.volumes.stop_keeping()
            self.done.set()

    # ---- health ----------------------------------------------------------------------------
    def _start_checks(self) -> None:
        for container in self.taskdef.containers:
            self._start_check(container)

    def _env(self, container: Container) -> dict[str, str]:
        env = task_env(self.task, container, self.node, self.taskdef.containers, self.node_address)
        if self.volumes is not None:
            env.update(self.volumes.env())
        return env

    def _start_check(self, container: Container) -> None:
        if container.health is not None:
            env = self._env(container)
            handle = next((h for h in self.handles if h.container == container.name), None)
            checker = Checker(
                self.task,
                container,
                env,
                self.task_dir / container.name,
                self._health_dirty.set,
                host=self.node_address,
                exec_in=self._exec_in(handle, env) if container.driver == "docker" else None,
                wrap=_namespace_of(handle) if container.driver == "process" else None,
            )
            self.checkers.append(checker)
            self._check_tasks.append(
                asyncio.create_task(checker.run(), name=f"check-{self.task.id}-{container.name}")
            )

    def _exec_in(self, handle: TaskHandle | None, env: dict[str, str]) -> ExecIn | None:
        """Command checks of a Docker container run inside it."""
        driver = self.drivers.get("docker")
        execute = getattr(driver, "exec", None)
        if handle is None or execute is None:
            return None

        async def run(command: list[str], timeout: float) -> tuple[int, str]:
            result: tuple[int, str] = await execute(handle, command, env, timeout)
            return result

        return run

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
                await asyncio.wait_for(self._stop.wait(), delay)
            if self._stop.is_set():
                await self._send(TaskStatus.STOPPED, self.stop_reason or "stopped", None, [])
                return False
        # Reported while the containers start (the send lock keeps it ahead of what follows).
        starting = asyncio.create_task(self._send(TaskStatus.STARTING, "", None, []))
        await asyncio.sleep(0)  # let it take the lock first
        secrets: dict[str, dict[str, str]] = {}
        if any(c.secrets for c in self.taskdef.containers) and self._fetch_secrets is not None:
            try:
                secrets = await self._fetch_secrets(self.task.id)
            except Exception as exc:  # the server's message names the missing secret
                await self._send(TaskStatus.FAILED, f"secrets: {exc}", None, [], finished=True)
                return False
        if not await self._attach_volumes():
            return False
        for container in start_order(self.taskdef.containers):
            env = self._env(container)
            env.update(secrets.get(container.name, {}))
            request = StartRequest(
                self.task.id,
                container,
                env,
                self.task.ports,
                self.task_dir,
                progress=self._progress,
                mounts=self.volumes.binds(container) if self.volumes else (),
                fence_file=self.volumes.fence_file
                if self.volumes and self.volumes.claims
                else None,
            )
            try:
                await self._dependencies_ready(container)
                if self._hard:
                    raise DriverError(self.stop_reason or "fenced")
                driver = self.drivers.get(container.driver)
                if driver is None:
                    raise DriverError(f"this node has no {container.driver} driver")
                handle = await driver.start(request)
                self.handles.append(handle)
                if self.volumes is not None:
                    self.volumes.track(handle)
                # Checks start with their container: before the RUNNING report (a task with
                # checks is not healthy until they pass) and before dependants wait on them.
                self._start_check(container)
            except (DriverError, OSError) as exc:
                message = f"container {container.name}: {exc}"
                await self._stop_handles()
                await self._detach()
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

    async def _attach_volumes(self) -> bool:
        """Claim and mount the task's volumes; False (reported) if it is not to start."""
        if self.volumes is None or not self.taskdef.volumes:
            return True

        async def waiting(message: str) -> None:
            await self._send(TaskStatus.STARTING, message, None, [])

        try:
            attached = await self.volumes.attach(self._stop, waiting, self.fence)
        except (VolumeError, OSError) as exc:
            await self._detach()
            await self._send(TaskStatus.FAILED, f"volumes: {exc}", None, [], finished=True)
            return False
        if not attached or self._hard:
            await self._detach()
            reason = self.stop_reason or "stopped"
            status = TaskStatus.EXITED if self._hard else TaskStatus.STOPPED
            await self._send(status, reason, None, [], finished=True)
            return False
        return True

    async def _detach(self) -> None:
        """Unmount and release the volumes once the task's workloads are dead."""
        if self.volumes is None:
            return
        try:
            await self.volumes.detach(discard=self.discard_volumes)
        except (VolumeError, OSError) as exc:
            log.warning("task %s: detaching volumes: %s", self.task.id, exc)

    async def _dependencies_ready(self, container: Container) -> None:
        """Wait until every `healthy` dependency passes its check (`started` ones already run)."""
        for dependency in container.depends_on:
            if dependency.condition != "healthy":
                continue
            checker = next(
                (c for c in self.checkers if c.container.name == dependency.container), None
            )
            if checker is None:
                continue  # validation guarantees a check; nothing to wait on otherwise
            deadline = time.monotonic() + DEPENDENCY_TIMEOUT
            while checker.state.status != Health.PASSING:
                if self._stop.is_set():
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
        stopper = asyncio.create_task(self._stop.wait())
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
        status = TaskStatus.EXITED if self._hard else TaskStatus.STOPPED
        await self._finish(status, self.stop_reason or "stopped", None, results)

    async def _finish(
        self, status: TaskStatus, message: str, code: int | None, results: dict[str, ExitResult]
    ) -> None:
        for check in self._check_tasks:
            check.cancel()
        results.update(await self._stop_handles())
        states = self._states(results)
        for handle in self.handles:
            with contextlib.suppress(DriverError, OSError):
                await self.driver(handle).destroy(handle)
        await self._detach()
        self.store.remove(self.task.id)
        await self._send(status, message, code, states, finished=True)

    async def _stop_handles(self) -> dict[str, ExitResult]:
        async def stop(handle: TaskHandle) -> tuple[str, ExitResult]:
            timeout = 0.0 if self._hard else self._container(handle.container).stop_timeout
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
        checks = [c.state for c in self.checkers] if status == TaskStatus.RUNNING else []
        health = worst(checks)
        body = {
            "status": status.value,
            "message": message,
            "exit_code": code,
            "containers": [s.model_dump(mode="json") for s in states],
            "started_at": self.started_at or None,
            "finished_at": time.time() if finished else None,
            "run_generation": self.generation,
            "health": health.value if health is not None else None,
            "checks": [c.model_dump(mode="json") for c in checks],
        }
        async with self._send_lock:
            if self._final_sent:
                return  # a late health report must never overwrite how the task ended
            if status.terminal:
                self._final_sent = True
            await self._report(self.task.id, body)


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


def _namespace_of(handle: TaskHandle | None) -> Callable[[list[str]], list[str]] | None:
    """A process container's command check runs in its mount namespace (its volume mounts)."""
    if handle is None:
        return None
    pid = handle.state.get("pid")
    return lambda command: in_mount_namespace(command, pid)
