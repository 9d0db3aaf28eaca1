"""The node agent: registers its node, watches the tasks placed on it, runs them, reports.

    Agent.run() task group
     ├ heartbeat loop     (re-registers when the server forgot the node)
     ├ fence loop         no server answered for a TTL: stop the stop_on_disconnect tasks
     ├ registrations      checks of services registered from outside on this node
     ├ event loop         (with --event-handler) run a command when a user event fires
     ├ watch loop         GET /v1/nodes/<name>/tasks?index=N (blocking) ─▶ sync()
     ├ HTTP API           logs of the tasks it runs
     ├ metrics            node and task figures every --metrics-interval (agent/metrics.py)
     └ one TaskRunner per task (attach volumes, start, watch, stop, detach, report)
        └ its volumes' lease keeper: renew every lease/3; lost ─▶ the task is killed

Restart decisions belong to the server (it bumps a task's `generation`); the agent starts a task
when its generation is newer than what runs, and stops what is no longer wanted.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import random
import time
from pathlib import Path
from typing import Any

import aiohttp
from aiohttp import web

from moorage.drivers.base import Driver, TaskHandle
from moorage.drivers.docker import DockerDriver
from moorage.drivers.errors import DriverError
from moorage.drivers.process import ProcessDriver
from moorage.model import Desired, Node, Task, TaskDefinition, TaskStatus, Unavailable
from moorage.model.messages import TaskReport
from moorage.pki.tokens import parse_join_token
from moorage.volumes import Layout

from .client import ServerClient, ServerError
from .config import AgentConfig
from .handles import HandleStore, SavedTask
from .http import build_app
from .identity import NodeTls
from .metrics import AgentMetrics, disk_paths
from .pause import thaw_leftovers
from .registrations import RegistrationChecks
from .resources import machine_cpu, machine_memory
from .runner import TaskRunner, task_env
from .userevents import WATCH_WAIT, UserEventHandlers
from .volumes import NodeMounts, TaskVolumes, discard_task_volumes

log = logging.getLogger(__name__)

HEARTBEAT = 1.5  # until the server says otherwise (it scales with the cluster)
TTL = 5.0  # the node's heartbeat TTL, until the server says otherwise
FENCE_TICK = 0.25


def traversable(folder: Path) -> None:
    """Create `folder` and the parents it lacks, 0711 whatever the umask, and make `folder`
    and its own parent (the data dir the agent was given) 0711: a task's own user passes
    through to its working directory; listing and reading stay root's."""
    missing = [p for p in (folder, *folder.parents) if not p.exists()]
    folder.mkdir(parents=True, exist_ok=True)
    for created in {*missing, folder, folder.parent}:
        created.chmod(0o711)


class Agent:
    def __init__(self, config: AgentConfig) -> None:
        self.config = config
        self.name = config.name
        self.data_dir = config.data_dir
        self.token = config.token
        self.cpu = config.cpu or machine_cpu()
        self.memory = config.memory or machine_memory()
        self.process_driver = ProcessDriver()
        self.drivers: dict[str, Driver] = {"process": self.process_driver}
        self.docker_driver: DockerDriver | None = None  # when this node runs Docker
        self.handles = HandleStore(config.data_dir)
        self.runners: dict[str, TaskRunner] = {}
        self._runner_tasks: dict[str, asyncio.Task[None]] = {}
        self._recovered: dict[str, SavedTask] = {}
        self.client: ServerClient | None = None
        self.ttl = TTL
        self.fenced = False  # True while cut off from every server beyond the TTL
        # Shared volumes live under one directory every node mounts (default: beside the
        # agent's data dir, as `moorage dev` has it).
        shared_root = config.shared_volume_root or config.data_dir.parent / "shared-volumes"
        self.volume_layout = Layout(config.data_dir, shared_root)
        self.node_mounts = NodeMounts()

    @property
    def docker(self) -> Any | None:
        """The Docker Engine client (aiodocker) when this node runs Docker, else None."""
        return self.docker_driver.docker if self.docker_driver is not None else None

    def reachable_at(self) -> str:
        """HOST:PORT where the servers reach this agent's HTTP port: the listen address, or the
        advertised one when it listens on every interface (an IPv6 host in brackets)."""
        host, port = self.config.http_addr
        if host in ("0.0.0.0", "::", ""):
            host = self.config.advertise_address
        return f"[{host}]:{port}" if ":" in host else f"{host}:{port}"

    def node(self) -> Node:
        cgroups = self.process_driver.cgroups
        return Node(
            name=self.name,
            address=self.config.advertise_address,
            agent_addr=self.reachable_at(),
            cpu=self.cpu,
            memory=self.memory,
            attrs=self.config.attrs,
            drivers=sorted(self.drivers),
            cgroups=cgroups,
            host_volumes=self.config.host_volumes,
            privileged=self.config.privileged and "docker" in self.drivers,
        )

    def task_dir(self, task_id: str) -> Path:
        return self.data_dir / "alloc" / task_id

    async def run(
        self, ready: asyncio.Event | None = None, stop_tasks_on_exit: bool = False
    ) -> None:
        """Run until cancelled. With stop_tasks_on_exit, every task is stopped and reported first."""
        traversable(self.data_dir / "alloc")
        docker = DockerDriver()
        if await docker.available():
            self.drivers["docker"] = self.docker_driver = docker
        else:
            await docker.close()
        try:
            await self._run(ready, stop_tasks_on_exit)
        finally:
            if self.docker_driver is not None:
                await self.docker_driver.close()
            await self.process_driver.close()

    def addresses(self) -> list[str]:
        """The addresses the node's certificate names: where servers reach its port."""
        host = self.reachable_at().rpartition(":")[0].strip("[]")
        return sorted({host, self.config.advertise_address})

    async def _run(self, ready: asyncio.Event | None, stop_tasks_on_exit: bool) -> None:
        servers = list(self.config.servers)
        token = parse_join_token(self.token) if self.token else None
        tls = NodeTls(self.data_dir, self.name, self.addresses(), token, self.config.ca_cert)
        await tls.ensure(servers)
        assert tls.client is not None
        connector = aiohttp.TCPConnector(ssl=tls.client)
        # each call sets its own total (blocking queries wait longer); this is the default
        timeout = aiohttp.ClientTimeout(total=60, sock_connect=10)
        async with aiohttp.ClientSession(connector=connector, timeout=timeout) as session:
            self.client = ServerClient(session, servers)
            await self._register_until_done()
            self._recovered = {s.task_id: s for s in self.handles.load_all()}
            await self._remove_unknown_containers()
            # A snapshot interrupted by this agent's death may have left a writer paused.
            saved_handles = [h for saved in self._recovered.values() for h in saved.handles]
            for thawed in await thaw_leftovers(saved_handles, self.docker):
                log.warning("resumed %s, left paused by an interrupted snapshot", thawed)
            app = build_app(self)
            runner = web.AppRunner(app, access_log=None, shutdown_timeout=1.0)
            await runner.setup()
            try:
                try:
                    site = web.TCPSite(
                        runner, *self.config.http_addr, ssl_context=tls.server, reuse_address=True
                    )
                    await site.start()
                except OSError as exc:
                    host, port = self.config.http_addr
                    raise Unavailable(
                        f"agent cannot listen on {host}:{port} (--agent-addr): {exc.strerror}"
                    ) from None
                if ready is not None:
                    ready.set()
                try:
                    async with asyncio.TaskGroup() as group:
                        group.create_task(self._heartbeat_loop())
                        group.create_task(tls.keep_renewed(servers))
                        group.create_task(self._watch_loop())
                        group.create_task(self._fence_loop())
                        checks = RegistrationChecks(
                            self.client, self.name, session, scripts=self.config.script_checks
                        )
                        group.create_task(checks.run())
                        if self.config.event_handlers:
                            handlers = dict(self.config.event_handlers)
                            events = UserEventHandlers(self.client, self.name, handlers)
                            group.create_task(events.run())
                        if self.config.metrics_interval > 0:
                            group.create_task(self._metrics().run())
                finally:
                    await self._shutdown(stop_tasks_on_exit)
            finally:
                await runner.cleanup()

    def _metrics(self) -> AgentMetrics:
        assert self.client is not None
        return AgentMetrics(
            node=self.name,
            client=self.client,
            runners=lambda: list(self.runners.values()),
            docker=lambda: self.docker,
            buffer_dir=self.data_dir / "metrics-buffer",
            disk_paths=disk_paths(self.data_dir, self.volume_layout.shared_root),
            interval=self.config.metrics_interval,
            buffer_bytes=self.config.metrics_buffer_bytes,
        )

    async def _shutdown(self, stop_tasks: bool) -> None:
        runners = list(self.runners.values())
        if stop_tasks:
            for runner in runners:
                runner.request_stop("agent shut down")
            tasks = [t for t in self._runner_tasks.values() if not t.done()]
            if tasks:
                await asyncio.shield(asyncio.wait(tasks, timeout=30))
        for task in self._runner_tasks.values():
            task.cancel()
        with contextlib.suppress(asyncio.CancelledError):
            await asyncio.gather(*self._runner_tasks.values(), return_exceptions=True)

    # ---- server conversation ---------------------------------------------------------------
    async def _register_until_done(self) -> None:
        assert self.client is not None
        backoff = 0.2
        while True:
            try:
                await self.client.register(self.node())
                log.info("node %s registered with %s", self.name, self.client.base)
                return
            except ServerError as exc:
                log.warning("registration failed: %s; retrying in %.1fs", exc, backoff)
                await asyncio.sleep(backoff)
                backoff = min(backoff * 2, 5.0)

    async def _heartbeat_loop(self) -> None:
        assert self.client is not None
        interval = HEARTBEAT
        await asyncio.sleep(random.uniform(0, interval))  # jittered first tick
        while True:
            try:
                answer = await self.client.heartbeat(self.name)
                interval, self.ttl = answer.interval, answer.ttl
            except ServerError as exc:
                if exc.status == 404:
                    await self._register_until_done()
                else:
                    log.warning("heartbeat failed: %s", exc)
            await asyncio.sleep(interval * random.uniform(0.9, 1.0))

    async def _fence_loop(self) -> None:
        """Agent-side fencing. The servers declare this node down after its TTL (plus grace)
        without heartbeats and start replacements elsewhere; a task marked stop_on_disconnect
        must not still be running then, so once no server has answered for a TTL this agent
        stops those tasks itself (they are replaced when it is back)."""
        assert self.client is not None
        since = time.monotonic()
        while True:
            await asyncio.sleep(FENCE_TICK)
            silent = time.monotonic() - (self.client.last_contact or since)
            if silent <= self.ttl:
                if self.fenced:
                    log.info("a server answers again: fencing over")
                self.fenced = False
                continue
            fenced = [
                r
                for r in self.runners.values()
                if r.active and r.taskdef.stop_on_disconnect and r.stop_reason is None
            ]
            if not self.fenced or fenced:
                log.warning(
                    "no server answered for %.1fs (TTL %gs): stopping %d stop_on_disconnect "
                    "task(s)",
                    silent,
                    self.ttl,
                    len(fenced),
                )
            self.fenced = True
            for runner in fenced:
                runner.request_stop(f"no server reachable for {self.ttl:g}s (stop_on_disconnect)")

    async def _watch_loop(self) -> None:
        assert self.client is not None
        index, backoff = 0, 0.2
        while True:
            try:
                tasks, new_index = await self.client.node_tasks(self.name, index, WATCH_WAIT)
            except ServerError as exc:
                log.warning("watching tasks failed: %s; retrying in %.1fs", exc, backoff)
                await asyncio.sleep(backoff)
                backoff = min(backoff * 2, 5.0)
                index = 0  # the server may have restarted: start from a fresh list
                continue
            backoff = 0.2
            index = new_index if new_index >= index else 0
            await self.sync(tasks)

    async def report(self, task_id: str, body: TaskReport) -> bool:
        """Send a task report, retrying while the server is unreachable; False if it is gone."""
        assert self.client is not None
        backoff = 0.1
        for _ in range(200):
            try:
                await self.client.report(task_id, body)
                return True
            except ServerError as exc:
                if exc.status in (400, 404):
                    log.warning("report for %s refused: %s", task_id, exc)
                    return False
                await asyncio.sleep(backoff)
                backoff = min(backoff * 2, 5.0)
        return False

    # ---- convergence -----------------------------------------------------------------------
    async def sync(self, tasks: list[Task]) -> None:
        """Converge this node to the task list: start what is wanted, stop what is not."""
        wanted = {t.id for t in tasks}
        for task in tasks:
            await self._sync_one(task)
        for task_id, runner in list(self.runners.items()):
            if task_id not in wanted and runner.active:
                runner.discard_volumes = True
                runner.request_stop("task removed")
        for task_id in [i for i in self._recovered if i not in wanted]:
            await self._adopt_orphan(self._recovered.pop(task_id))

    async def _sync_one(self, task: Task) -> None:
        runner = self.runners.get(task.id)
        saved = self._recovered.pop(task.id, None)
        if saved is not None and runner is None:
            runner = await self._recover(task, saved)
        if task.desired == Desired.STOP:
            if runner is not None and runner.active:
                runner.discard_volumes = True
                runner.request_stop(task.message or "stopped")
            else:
                if runner is None and not task.status.terminal:
                    await self.report(task.id, _stopped_report(task))
                await asyncio.to_thread(discard_task_volumes, self.task_dir(task.id))
            return
        if runner is not None and runner.active:
            if runner.generation >= task.generation:
                runner.update_task(task)
                return
            runner.request_stop("restarting")
            await runner.done.wait()
        if task.generation > task.run_generation or (
            runner is None and task.status in (TaskStatus.ASSIGNED,)
        ):
            await self._start(task, task.generation)
        elif runner is None and task.status in (TaskStatus.STARTING, TaskStatus.RUNNING):
            lost = _stopped_report(task).model_copy(
                update={"status": TaskStatus.LOST, "message": "the agent lost track of this task"}
            )
            await self.report(task.id, lost)

    async def _start(
        self, task: Task, generation: int, saved: SavedTask | None = None
    ) -> TaskRunner:
        assert self.client is not None
        taskdef = await self.client.taskdef(task.family, task.revision)
        runner = TaskRunner(
            task,
            taskdef,
            generation,
            self.drivers,
            self.handles,
            self.task_dir(task.id),
            self.name,
            self.report,
            saved,
            self._secrets,
            node_address=self.config.advertise_address,
            volumes=self._volumes(task.id, taskdef),
            configs=self.data_dir / "configs",
            privileged=self.config.privileged,
        )
        self.runners[task.id] = runner
        self._runner_tasks[task.id] = asyncio.create_task(runner.run(), name=f"task-{task.id}")
        return runner

    async def _recover(self, task: Task, saved: SavedTask) -> TaskRunner:
        """Re-attach to a task that ran before this agent restarted (or collect how it ended)."""
        alive = [await self._driver_of(h).recover(h) for h in saved.handles]
        log.info("task %s: recovered %d/%d running containers", task.id, sum(alive), len(alive))
        return await self._start(task, saved.generation, saved)

    async def exec_env(self, runner: TaskRunner, container: str) -> dict[str, str]:
        """The environment an exec gets: the container's own (secrets included) for processes;
        a Docker exec inherits the container's environment from the engine."""
        spec = next((c for c in runner.taskdef.containers if c.name == container), None)
        if spec is None or spec.driver == "docker":
            return {}
        address = self.config.advertise_address
        env = task_env(runner.task, spec, self.name, runner.taskdef.containers, address)
        if spec.secrets:
            env.update((await self._secrets(runner.task.id)).get(container, {}))
        return env

    async def _secrets(self, task_id: str) -> dict[str, dict[str, str]]:
        assert self.client is not None
        return await self.client.task_secrets(task_id)

    def _driver_of(self, handle: TaskHandle) -> Driver:
        return self.drivers.get(handle.driver) or self.process_driver

    async def _remove_unknown_containers(self) -> None:
        """Containers labelled for this node that no saved task owns: leftovers, removed."""
        docker = self.docker_driver
        if docker is None:
            return
        known = {
            h.state.get("container_id") for saved in self._recovered.values() for h in saved.handles
        }
        try:
            managed = await docker.managed(self.name)
        except DriverError as exc:
            log.warning("cannot list containers: %s", exc)
            return
        for container_id, task_id in managed.items():
            if container_id not in known:
                log.warning(
                    "removing container %s (task %s): labelled by moorage, unknown here",
                    container_id[:12],
                    task_id,
                )
                await docker.remove(container_id)

    async def _adopt_orphan(self, saved: SavedTask) -> None:
        """A saved task the server no longer lists: stop whatever of it still runs, then
        unmount and release its volumes."""
        for handle in saved.handles:
            driver = self._driver_of(handle)
            if await driver.recover(handle):
                await driver.stop(handle, 5.0)
            await driver.destroy(handle)
        if saved.volumes:
            volumes = self._volumes(saved.task_id, None)
            volumes.restore(saved.volumes)
            await volumes.detach(discard=True)
        self.handles.remove(saved.task_id)

    def _volumes(self, task_id: str, taskdef: TaskDefinition | None) -> TaskVolumes:
        return TaskVolumes(
            task_id,
            taskdef,
            self.task_dir(task_id),
            self.name,
            self.volume_layout,
            self.client,
            self.config.volume_lease,
            self.node_mounts,
            self.config.host_volumes,
        )


def _stopped_report(task: Task) -> TaskReport:
    return TaskReport(
        status=TaskStatus.STOPPED,
        message=task.message or "stopped",
        exit_code=task.exit_code,
        containers=task.containers,
        started_at=task.started_at,
        finished_at=task.finished_at,
        run_generation=max(task.run_generation, 0),
    )
