"""Health checks, run by the agent next to the task: one shape for every kind (as in Consul).

    http     GET http://<node address>:<host port><path>: 2xx passing, 429 warning, else critical
    tcp      connect to the node address and host port: passing or critical
    command  run in the task's environment: exit 0 passing, 1 warning, else critical
    ttl      passing/warning/critical as last set through the API; critical once it is older than ttl

A check starts critical (not yet passing). Failures inside `start_period` do not count; after it,
`retries` failures in a row make a passing check critical and mark it `failing` — what a
deployment counts as a failed task. The first run is jittered; the interval floor is 1 s.
"""

from __future__ import annotations

import asyncio
import contextlib
import random
import time
from collections.abc import Awaitable, Callable
from pathlib import Path

import aiohttp

from moorage.model import CheckState, Container, Health, HealthCheck, Task

OUTPUT_LIMIT = 4096
ExecIn = Callable[[list[str], float], Awaitable[tuple[int, str]]]
MIN_INTERVAL = 1.0


def worst(checks: list[CheckState]) -> Health | None:
    if not checks:
        return None
    return max((c.status for c in checks), key=lambda h: h.rank)


class Checker:
    """Runs one container's check until cancelled; calls `on_change` when its state moves."""

    def __init__(
        self,
        task: Task,
        container: Container,
        env: dict[str, str],
        workdir: Path,
        on_change: Callable[[], None],
        session: aiohttp.ClientSession | None = None,
        exec_in: ExecIn | None = None,
        host: str = "127.0.0.1",
        wrap: Callable[[list[str]], list[str]] | None = None,
    ) -> None:
        assert container.health is not None
        self.host = host  # the node's address: where the workload's ports are reachable
        self.task = task
        self.container = container
        self.check: HealthCheck = container.health
        self.env = env
        self.workdir = workdir
        self.on_change = on_change
        self.session = session
        self.exec_in = exec_in
        # A process task's command check runs where the task runs (its mount namespace, where
        # its volumes are mounted at their paths): `wrap` turns the command into that.
        self.wrap = wrap
        self.state = CheckState(
            container=container.name,
            kind=self.check.kind,
            output="waiting for the first check",
            updated_at=time.time(),
        )
        self._failures = 0

    async def run(self) -> None:
        interval = max(self.check.interval, MIN_INTERVAL)
        if self.check.kind == "ttl":
            interval = MIN_INTERVAL  # reads memory only: notice an expiry within a second
        started = time.monotonic()
        await asyncio.sleep(random.uniform(0, min(interval, 1.0)))  # jittered first run
        while True:
            status, output = await self.probe()
            self._record(
                status, output, in_start_period=time.monotonic() - started < self.check.start_period
            )
            await asyncio.sleep(interval)

    def _record(self, status: Health, output: str, in_start_period: bool) -> None:
        previous = self.state
        failing = previous.failing
        if status == Health.PASSING or status == Health.WARNING:
            self._failures = 0
            failing = False
        elif not in_start_period:
            self._failures += 1
            if self._failures < self.check.retries and previous.status != Health.CRITICAL:
                status = previous.status  # tolerate a blip: not critical before `retries` failures
            failing = self._failures >= self.check.retries
        self.state = CheckState(
            container=self.container.name,
            kind=self.check.kind,
            status=status,
            output=output[:OUTPUT_LIMIT],
            failing=failing,
            updated_at=time.time(),
        )
        if (self.state.status, self.state.failing) != (previous.status, previous.failing):
            self.on_change()

    async def probe(self) -> tuple[Health, str]:
        try:
            async with asyncio.timeout(max(self.check.timeout, 0.1)):
                kind = self.check.kind
                if kind == "http":
                    return await self._http()
                if kind == "tcp":
                    return await self._tcp()
                if kind == "command":
                    return await self._command()
                return self._ttl()
        except TimeoutError:
            return Health.CRITICAL, f"timed out after {self.check.timeout:g}s"
        except OSError as exc:
            return Health.CRITICAL, str(exc) or type(exc).__name__

    def _port(self) -> int:
        port = self.task.ports.get(self.check.port or "")
        if port is None:
            raise OSError(f"port {self.check.port!r} has no host port")
        return port

    async def _http(self) -> tuple[Health, str]:
        url = f"http://{self.host}:{self._port()}{self.check.http or '/'}"
        owned = self.session is None
        session = self.session or aiohttp.ClientSession()
        try:
            async with session.get(url, allow_redirects=False) as response:
                body = " ".join((await response.content.read(512)).decode(errors="replace").split())
                output = f"HTTP GET {url}: {response.status} {response.reason}"
                if body:
                    output += f": {body[:120]}"
                if 200 <= response.status < 300:
                    return Health.PASSING, output
                if response.status == 429:
                    return Health.WARNING, output
                return Health.CRITICAL, output
        except aiohttp.ClientError as exc:
            return Health.CRITICAL, f"HTTP GET {url}: {exc}"
        finally:
            if owned:
                await session.close()

    async def _tcp(self) -> tuple[Health, str]:
        port = self._port()
        _reader, writer = await asyncio.open_connection(self.host, port)
        writer.close()
        with contextlib.suppress(OSError):
            await writer.wait_closed()
        return Health.PASSING, f"TCP connect {self.host}:{port}: success"

    async def _command(self) -> tuple[Health, str]:
        assert self.check.command is not None
        if self.exec_in is not None:  # inside the container
            code, text = await self.exec_in(self.check.command, self.check.timeout)
            return _by_exit_code(code, text.strip())
        command = self.wrap(self.check.command) if self.wrap else self.check.command
        process = await asyncio.create_subprocess_exec(
            *command,
            env=self.env,
            cwd=self.workdir if self.workdir.is_dir() else None,
            stdin=asyncio.subprocess.DEVNULL,
            stdout=asyncio.subprocess.PIPE,
            stderr=asyncio.subprocess.STDOUT,
            start_new_session=True,
        )
        try:
            out, _ = await process.communicate()
        except asyncio.CancelledError:
            with contextlib.suppress(ProcessLookupError):
                process.kill()
            await process.wait()
            raise
        return _by_exit_code(process.returncode or 0, out.decode(errors="replace").strip())

    def _ttl(self) -> tuple[Health, str]:
        update = self.task.ttl.get(self.container.name)
        ttl = self.check.ttl or 0.0
        if update is None:
            return Health.CRITICAL, "TTL check: no update yet"
        age = time.time() - update.updated_at
        if age > ttl:
            return Health.CRITICAL, f"TTL expired: last update {age:.0f}s ago (ttl {ttl:g}s)"
        return update.status, update.output


def _by_exit_code(code: int, text: str) -> tuple[Health, str]:
    status = Health.PASSING if code == 0 else Health.WARNING if code == 1 else Health.CRITICAL
    return status, f"exit code {code}" + (f": {text}" if text else "")
