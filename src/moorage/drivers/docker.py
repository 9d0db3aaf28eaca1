"""The Docker driver: runs a container's `image` through the Docker Engine API (aiodocker).

    start    inspect the image (pull when missing) ─▶ create (labels, ports, cpu shares, memory,
             volume bind mounts)
             ─▶ start ─▶ a log pump copies stdout/stderr into the task's rotating log files
    recover  inspect the container named in the handle: running means re-attached (by id, and
             the `moorage.task` label must match)
    wait     the engine's wait, then the container's state (exit code, OOM kill)
    stop     the engine's stop: SIGTERM, SIGKILL after the timeout

Every engine error becomes a `DriverError` with the engine's message: the agent reports it on
the task, it never crashes on it.
"""

from __future__ import annotations

import asyncio
import contextlib
import hashlib
import json
import logging
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any, Literal

import aiodocker
import aiohttp
from aiodocker.containers import DockerContainer

from moorage.model import Container
from moorage.model.runtime import Tmpfs, size_bytes

from ._executor import RotatingFile
from .base import ExitResult, StartRequest, Stats, TaskHandle
from .errors import DriverError, StartError
from .process import LOG_KEEP, LOG_MAX_BYTES, expand

log = logging.getLogger(__name__)
DOCKER_TIMEOUT = aiohttp.ClientTimeout(total=120, sock_connect=10)

LABEL_TASK = "moorage.task"
LABEL_CONTAINER = "moorage.container"
LABEL_SERVICE = "moorage.service"
LABEL_NODE = "moorage.node"
LABEL_CONFIG = "moorage.config"


def _message(exc: aiodocker.DockerError) -> str:
    return str(exc.message) if getattr(exc, "message", None) else str(exc)


class DockerDriver:
    name = "docker"

    def __init__(self, docker: aiodocker.Docker | None = None) -> None:
        self._docker = docker
        self._pumps: dict[str, asyncio.Task[None]] = {}

    @property
    def docker(self) -> aiodocker.Docker:
        if self._docker is None:
            # every call has a total budget: a wedged engine fails a start, it does not hang
            # the agent (pulls, logs and waits are long-running: aiodocker lifts the total
            # for them, keeping the connect timeout)
            self._docker = aiodocker.Docker(timeout=DOCKER_TIMEOUT)
        return self._docker

    async def available(self) -> bool:
        """Whether an engine answers (the agent offers the driver only then)."""
        try:
            async with asyncio.timeout(5):
                await self.docker.version()
            return True
        except (aiodocker.DockerError, OSError, TimeoutError, ValueError) as exc:
            log.info("docker driver unavailable: %s", exc)
            return False

    async def close(self) -> None:
        for pump in self._pumps.values():
            pump.cancel()
        if self._docker is not None:
            await self._docker.close()
            self._docker = None

    # ---- start ---------------------------------------------------------------------------
    async def start(self, req: StartRequest) -> TaskHandle:
        try:
            return await self._start(req)
        except (aiohttp.ClientError, OSError) as exc:  # the engine went away
            raise StartError(f"the Docker engine does not answer: {exc}") from None

    async def _start(self, req: StartRequest) -> TaskHandle:
        container = req.container
        if container.image is None:
            raise StartError(
                f"container {container.name!r} has no image (the docker driver runs images)"
            )
        await self._ensure_image(container.image, req.progress)
        logs = req.task_dir / "logs"
        logs.mkdir(parents=True, exist_ok=True)
        name = f"moorage-{req.task_id}-{container.name}"
        config = self._config(req)
        try:
            with contextlib.suppress(aiodocker.DockerError):  # a leftover from a crashed start
                await (await self.docker.containers.get(name)).delete(force=True)
            created = await self.docker.containers.create(config, name=name)
            await created.start()
        except aiodocker.DockerError as exc:
            with contextlib.suppress(aiodocker.DockerError):
                await (await self.docker.containers.get(name)).delete(force=True)
            raise StartError(f"docker: {_message(exc)}") from None
        handle = TaskHandle(
            self.name,
            req.task_id,
            container.name,
            {"container_id": created.id, "name": name, "logs": str(logs)},
        )
        info = await created.show()
        handle.state["pid"] = info["State"].get("Pid")
        self._pump(handle, created, since=0)
        return handle

    async def _ensure_image(self, image: str, progress: Callable[[str], None] | None) -> None:
        try:
            await self.docker.images.inspect(image)
            return
        except aiodocker.DockerError as exc:
            if exc.status != 404:
                raise StartError(f"docker: {_message(exc)}") from None
        say = progress or (lambda _text: None)
        repo, _, tag = (
            image.rpartition(":") if ":" in image.split("/")[-1] else (image, "", "latest")
        )
        say(f"pulling image {image}")
        last = 0.0
        try:
            async for update in self.docker.images.pull(
                repo or image, tag=tag or "latest", stream=True
            ):
                if "error" in update:
                    raise StartError(
                        f"image {image} is not on this node and cannot be pulled: {update['error']}"
                    )
                if time.monotonic() - last >= 1.0 and update.get("status"):
                    last = time.monotonic()
                    detail = update.get("progress") or update.get("id") or ""
                    say(f"pulling image {image}: {update['status']} {detail}".strip())
        except aiodocker.DockerError as exc:
            raise StartError(
                f"image {image} is not on this node and cannot be pulled: {_message(exc)}"
            ) from None
        say(f"pulled image {image}")

    def _config(self, req: StartRequest) -> dict[str, Any]:
        container = req.container
        exposed: dict[str, dict[str, Any]] = {}
        bindings: dict[str, list[dict[str, str]]] = {}
        for spec in container.ports:
            host = req.ports.get(spec.name)
            if host is None:
                continue
            inside = f"{spec.container or host}/{spec.protocol}"
            exposed[inside] = {}
            bindings.setdefault(inside, []).append({"HostIp": "", "HostPort": str(host)})
        labels = {
            **container.labels,
            LABEL_TASK: req.task_id,
            LABEL_CONTAINER: container.name,
            LABEL_SERVICE: req.env.get("MOORAGE_SERVICE", ""),
            LABEL_NODE: req.env.get("MOORAGE_NODE", ""),
            LABEL_CONFIG: config_hash(req),
        }
        host_config: dict[str, Any] = {
            "PortBindings": bindings,
            "Memory": container.memory * 1024 * 1024,
            "CpuShares": max(container.cpu, 2),
            # reap zombies and forward signals, as `docker run --init`, unless told not to
            "Init": container.init is not False,
            **runtime_options(container),
        }
        if container.network_mode == "host":  # its ports are the node's (static, reserved)
            host_config["NetworkMode"] = "host"
            host_config.pop("PortBindings")
            exposed = {}
        if req.mounts:  # volumes: bind mounts of their host paths
            host_config["Binds"] = [
                f"{m.source}:{m.path}" + (":ro" if m.read_only else "") for m in req.mounts
            ]
        if container.memory_reservation:
            host_config["MemoryReservation"] = container.memory_reservation * 1024 * 1024
        config: dict[str, Any] = {
            "Image": container.image,
            "Env": [f"{k}={v}" for k, v in req.env.items()],
            "Labels": labels,
            "ExposedPorts": exposed,
            "HostConfig": host_config,
            "StopTimeout": int(container.stop_timeout),
        }
        if container.command is not None:
            config["Cmd"] = [expand(a, req.env) for a in container.command]
        if container.entrypoint is not None:
            config["Entrypoint"] = [expand(a, req.env) for a in container.entrypoint]
        if container.workdir:
            config["WorkingDir"] = container.workdir
        if container.user:
            config["User"] = container.user
        if container.stop_signal:
            config["StopSignal"] = container.stop_signal
        return config

    # ---- logs ----------------------------------------------------------------------------
    def _pump(self, handle: TaskHandle, container: DockerContainer, since: int) -> None:
        key = handle.state["container_id"]
        if key in self._pumps and not self._pumps[key].done():
            return
        self._pumps[key] = asyncio.create_task(
            self._pump_logs(handle, container, since), name=f"docker-logs-{handle.task_id}"
        )

    async def _pump_logs(self, handle: TaskHandle, container: DockerContainer, since: int) -> None:
        async def copy(stream: Literal["stdout", "stderr"]) -> None:
            sink = RotatingFile(self.log_path(handle, stream), LOG_MAX_BYTES, LOG_KEEP)
            try:
                lines = container.log(**{stream: True}, follow=True, since=since, timeout=None)
                async for line in lines:
                    sink.write(line.encode() if isinstance(line, str) else line)
            except (TimeoutError, aiodocker.DockerError, OSError) as exc:
                log.debug("log stream of %s ended: %s", handle.task_id, exc)
            finally:
                sink.file.close()

        await asyncio.gather(copy("stdout"), copy("stderr"))

    # ---- observe -------------------------------------------------------------------------
    async def _container(self, handle: TaskHandle) -> DockerContainer | None:
        try:
            container = await self.docker.containers.get(handle.state["container_id"])
            info = await container.show()
        except aiodocker.DockerError as exc:
            if exc.status >= 500:
                raise DriverError(f"docker: {_message(exc)}") from None
            return None
        if info["Config"]["Labels"].get(LABEL_TASK) != handle.task_id:
            return None
        return container

    async def recover(self, handle: TaskHandle) -> bool:
        try:
            container = await self._container(handle)
        except (DriverError, aiohttp.ClientError, OSError) as exc:
            log.warning("cannot recover %s: %s", handle.task_id, exc)
            return False
        if container is None:
            return False
        info = await container.show()
        if not info["State"]["Running"]:
            return False
        stdout = self.log_path(handle, "stdout")
        since = int(stdout.stat().st_mtime) if stdout.exists() else 0
        self._pump(handle, container, since)
        return True

    async def wait(self, handle: TaskHandle) -> ExitResult:
        while True:
            try:
                return await self._wait(handle)
            except (aiohttp.ClientError, OSError, DriverError) as exc:
                # The engine restarted or is down: the container may well still run.
                log.warning("waiting on %s: %s; retrying", handle.task_id, exc)
                await asyncio.sleep(2)

    async def _wait(self, handle: TaskHandle) -> ExitResult:
        container = await self._container(handle)
        if container is None:
            return ExitResult(None, message="the container vanished")
        try:
            await container.wait(timeout=None)
            info = await container.show()
        except aiodocker.DockerError as exc:
            return ExitResult(None, message=f"docker: {_message(exc)}")
        state = info["State"]
        code = state.get("ExitCode")
        pump = self._pumps.get(handle.state["container_id"])
        if pump is not None:
            with contextlib.suppress(TimeoutError, asyncio.CancelledError):
                await asyncio.wait_for(asyncio.shield(pump), 2)
        return ExitResult(
            code,
            9 if code == 137 else None,
            bool(state.get("OOMKilled")),
            str(state.get("Error") or ""),
        )

    async def stop(self, handle: TaskHandle, timeout: float) -> ExitResult:
        container = await self._container(handle)
        if container is None:
            return ExitResult(None, message="the container vanished")
        with contextlib.suppress(aiodocker.DockerError):
            await container.stop(t=max(int(timeout), 0), timeout=timeout + 30)
        return await self.wait(handle)

    async def destroy(self, handle: TaskHandle) -> None:
        pump = self._pumps.pop(handle.state.get("container_id", ""), None)
        if pump is not None:
            pump.cancel()
        container = await self._container(handle)
        if container is not None:
            with contextlib.suppress(aiodocker.DockerError):
                await container.delete(force=True)

    def log_path(self, handle: TaskHandle, stream: Literal["stdout", "stderr"]) -> Path:
        return Path(handle.state["logs"]) / f"{handle.container}.{stream}"

    def memory_enforced(self, handle: TaskHandle) -> bool:
        return True

    async def stats(self, handle: TaskHandle) -> Stats:
        """One sample from the engine (memory in use, CPU time), with a timeout."""
        container = await self._container(handle)
        if container is None:
            raise DriverError("the container is gone")
        try:
            async with asyncio.timeout(10):
                samples = await container.stats(stream=False)
        except (aiodocker.DockerError, TimeoutError) as exc:
            raise DriverError(f"docker stats: {exc}") from None
        sample = samples[0] if isinstance(samples, list) else samples
        memory = sample.get("memory_stats", {})
        usage = int(memory.get("usage", 0)) - int(memory.get("stats", {}).get("cache", 0))
        cpu_ns = int(sample.get("cpu_stats", {}).get("cpu_usage", {}).get("total_usage", 0))
        return Stats(max(usage, 0), cpu_ns / 1e9)

    async def exec(
        self, handle: TaskHandle, command: list[str], env: dict[str, str], timeout: float
    ) -> tuple[int, str]:
        """Run a command inside the container; its exit code and combined output."""
        container = await self._container(handle)
        if container is None:
            raise DriverError("the container is gone")
        try:
            execution = await container.exec(command, stdout=True, stderr=True)
            chunks: list[bytes] = []
            async with asyncio.timeout(timeout), execution.start(detach=False) as stream:
                while (message := await stream.read_out()) is not None:
                    chunks.append(message.data)
            info = await execution.inspect()
        except aiodocker.DockerError as exc:
            raise DriverError(f"docker: {_message(exc)}") from None
        return int(info.get("ExitCode") or 0), b"".join(chunks).decode(errors="replace")

    async def open_exec(
        self, handle: TaskHandle, command: list[str], env: dict[str, str], tty: bool
    ) -> DockerExec:
        container = await self._container(handle)
        if container is None:
            raise DriverError("the container is gone")
        try:
            execution = await container.exec(command, stdout=True, stderr=True, stdin=True, tty=tty)
            stream = execution.start(detach=False)
        except aiodocker.DockerError as exc:
            raise DriverError(f"docker: {_message(exc)}") from None
        return DockerExec(execution, stream)

    async def managed(self, node: str) -> dict[str, str]:
        """Containers this node's moorage created: container id -> task id."""
        try:
            found = await self.docker.containers.list(
                all=True, filters=json.dumps({"label": [f"{LABEL_NODE}={node}"]})
            )
        except aiodocker.DockerError as exc:
            raise DriverError(f"docker: {_message(exc)}") from None
        return {c.id: c["Labels"].get(LABEL_TASK, "") for c in found}

    async def remove(self, container_id: str) -> None:
        with contextlib.suppress(aiodocker.DockerError):
            await (await self.docker.containers.get(container_id)).delete(force=True)


def runtime_options(container: Container) -> dict[str, Any]:
    """The container's runtime options as the Engine API's HostConfig fields (only those set)."""
    options: dict[str, Any] = {}
    if container.cap_add:
        options["CapAdd"] = list(container.cap_add)
    if container.cap_drop:
        options["CapDrop"] = list(container.cap_drop)
    if container.ulimits:
        options["Ulimits"] = [
            {"Name": name, "Soft": limit.soft, "Hard": limit.hard}
            for name, limit in sorted(container.ulimits.items())
        ]
    if container.sysctls:
        options["Sysctls"] = dict(container.sysctls)
    if container.shm_size:
        options["ShmSize"] = size_bytes(container.shm_size)
    if container.tmpfs:
        options["Tmpfs"] = {t.path: _tmpfs_options(t) for t in container.tmpfs}
    if container.extra_hosts:
        options["ExtraHosts"] = [f"{h}:{a}" for h, a in sorted(container.extra_hosts.items())]
    if container.read_only:
        options["ReadonlyRootfs"] = True
    if container.privileged:  # the agent only starts it when --allow-privileged (configs hook)
        options["Privileged"] = True
    return options


def _tmpfs_options(tmpfs: Tmpfs) -> str:
    options = []
    if tmpfs.size is not None:
        options.append(f"size={size_bytes(tmpfs.size)}")
    if tmpfs.mode is not None:
        options.append(f"mode={tmpfs.mode:o}")
    return ",".join(options)


def config_hash(req: StartRequest) -> str:
    body = json.dumps(
        {"container": req.container.model_dump(mode="json"), "ports": req.ports}, sort_keys=True
    )
    return hashlib.sha256(body.encode()).hexdigest()[:16]


class DockerExec:
    """`docker exec` over the engine API: one multiplexed stream, then the exit code."""

    def __init__(self, execution: Any, stream: Any) -> None:
        self.execution = execution
        self.stream = stream

    async def write(self, data: bytes) -> None:
        await self.stream.write_in(data)

    async def close_stdin(self) -> None:
        return None  # the engine's attach protocol has no half-close

    async def read(self) -> tuple[int, bytes] | None:
        message = await self.stream.read_out()
        if message is None:
            return None
        return (2 if message.stream == 2 else 1), bytes(message.data)

    async def wait(self) -> int:
        for _ in range(50):
            info = await self.execution.inspect()
            if not info.get("Running"):
                return int(info.get("ExitCode") or 0)
            await asyncio.sleep(0.05)
        return int((await self.execution.inspect()).get("ExitCode") or 0)

    async def close(self) -> None:
        with contextlib.suppress(Exception):
            await self.stream.close()
