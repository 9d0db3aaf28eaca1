"""Checks of services registered from outside on this node (Consul's agent API): the agent runs
the HTTP, TCP and command checks at their interval and expires TTL checks that were not
refreshed in time, reporting a check only when its status changes."""

from __future__ import annotations

import asyncio
import contextlib
import logging
import time

import aiohttp

from moorage.model import Health
from moorage.model.catalog import RegisteredCheck, Registration
from moorage.model.messages import CheckReport

from .client import ServerClient, ServerError

log = logging.getLogger(__name__)
WATCH_WAIT = 30.0


SCRIPTS_OFF = (
    "script checks are off on this agent: start it with --enable-script-checks to run"
    " the command checks of registered services"
)


class RegistrationChecks:
    def __init__(
        self,
        client: ServerClient,
        node: str,
        session: aiohttp.ClientSession,
        *,
        scripts: bool = False,
    ) -> None:
        self.client = client
        self.node = node
        self.session = session
        self.scripts = scripts
        self._running: dict[tuple[str, str], tuple[RegisteredCheck, asyncio.Task[None]]] = {}

    async def run(self) -> None:
        index, backoff = 0, 0.2
        try:
            while True:
                try:
                    found, new_index = await self.client.node_registrations(
                        self.node, index, WATCH_WAIT
                    )
                except ServerError as exc:
                    log.warning("watching registrations failed: %s", exc)
                    await asyncio.sleep(backoff)
                    backoff = min(backoff * 2, 5.0)
                    index = 0
                    continue
                backoff = 0.2
                index = new_index if new_index >= index else 0
                self._sync(found)
        finally:
            for _, task in self._running.values():
                task.cancel()

    def _sync(self, registrations: list[Registration]) -> None:
        wanted = {(r.id, c.id): (r, c) for r in registrations for c in r.checks}
        for key in list(self._running):
            if key not in wanted:
                self._running.pop(key)[1].cancel()
        for key, (registration, check) in wanted.items():
            running = self._running.get(key)
            if running is not None:
                old, task = running
                same = (
                    old.model_copy(
                        update={
                            "status": check.status,
                            "output": check.output,
                            "updated_at": check.updated_at,
                        }
                    )
                    == check
                )
                if same and check.kind != "ttl":
                    self._running[key] = (check, task)
                    continue
                task.cancel()
            runner = (
                self._ttl(registration, check)
                if check.kind == "ttl"
                else self._probe(registration, check)
            )
            self._running[key] = (check, asyncio.create_task(runner))

    async def _ttl(self, registration: Registration, check: RegisteredCheck) -> None:
        """Turn a TTL check critical when it was not refreshed within its TTL."""
        if check.status == Health.CRITICAL or check.ttl <= 0:
            return
        await asyncio.sleep(max(0.0, check.updated_at + check.ttl - time.time()))
        await self._report(registration, check, Health.CRITICAL, "TTL expired")

    async def _probe(self, registration: Registration, check: RegisteredCheck) -> None:
        status = check.status
        if check.kind == "command" and not self.scripts:
            # Reported once (retried until the server takes it); the command never runs.
            while not await self._report(registration, check, Health.CRITICAL, SCRIPTS_OFF):
                await asyncio.sleep(check.interval)
            return
        while True:
            new, output = await self._once(check)
            if new != status and await self._report(registration, check, new, output):
                status = new
            await asyncio.sleep(check.interval)

    async def _once(self, check: RegisteredCheck) -> tuple[Health, str]:
        try:
            async with asyncio.timeout(check.timeout):
                if check.kind == "http":
                    async with self.session.get(check.target, allow_redirects=False) as response:
                        text = f"HTTP GET {check.target}: {response.status} {response.reason}"
                        if 200 <= response.status < 300:
                            return Health.PASSING, text
                        if response.status == 429:
                            return Health.WARNING, text
                        return Health.CRITICAL, text
                if check.kind == "tcp":
                    host, _, port = check.target.rpartition(":")
                    _reader, writer = await asyncio.open_connection(host, int(port))
                    writer.close()
                    with contextlib.suppress(OSError):
                        await writer.wait_closed()
                    return Health.PASSING, f"TCP connect {check.target}: success"
                process = await asyncio.create_subprocess_exec(
                    *check.args,
                    stdout=asyncio.subprocess.PIPE,
                    stderr=asyncio.subprocess.STDOUT,
                )
                try:
                    output, _ = await process.communicate()
                except asyncio.CancelledError:
                    process.kill()
                    raise
                code = process.returncode
                text = output.decode(errors="replace")[:4096]
                status = {0: Health.PASSING, 1: Health.WARNING}.get(code or 0, Health.CRITICAL)
                return status, text
        except TimeoutError:
            return Health.CRITICAL, f"timed out after {check.timeout:g}s"
        except (OSError, ValueError, aiohttp.ClientError) as exc:
            return Health.CRITICAL, str(exc) or type(exc).__name__

    async def _report(
        self, registration: Registration, check: RegisteredCheck, status: Health, output: str
    ) -> bool:
        try:
            report = CheckReport(status=status, output=output)
            await self.client.registration_check(registration.id, check.id, report)
            return True
        except ServerError as exc:
            log.warning("check %s of %s: report failed: %s", check.id, registration.id, exc)
            return False
