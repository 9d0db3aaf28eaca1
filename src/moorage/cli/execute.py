"""`moorage exec`: run a command in a task's container from any machine that reaches the server."""

from __future__ import annotations

import asyncio
import contextlib
import json
import os
import ssl
import sys
from typing import Any

import aiohttp
import click

from moorage.model import Forbidden, MoorageError, NotFound, Unavailable

from .common import client


@click.command(name="exec", context_settings={"ignore_unknown_options": True})
@click.argument("target")
@click.option("-c", "--container", default=None, help="Container of the task (default: the first).")
@click.option("-i", "--interactive", is_flag=True, help="Send stdin to the command.")
@click.option("-t", "--tty", is_flag=True, help="Allocate a terminal (Docker containers).")
@click.argument("command", nargs=-1, required=True, type=click.UNPROCESSED)
@click.pass_context
def exec_cmd(
    ctx: click.Context,
    target: str,
    container: str | None,
    interactive: bool,
    tty: bool,
    command: tuple[str, ...],
) -> None:
    """Run COMMAND in TARGET (a task id, or a service: its first running task).

    \b
      moorage exec web -- cat /etc/hostname
      moorage exec -it web-3f2a9c -- sh
    The command's exit code is moorage's exit code.
    """
    with client(ctx) as api:
        try:
            api.task(target)
        except NotFound:
            summary = api.service(target)["summary"]  # NotFound names the target if neither
            if not summary["running"]:
                raise Unavailable(f"{target} has no running task") from None
        address, headers, context = api.address, dict(api.headers), api.tls()
    params = [("cmd", part) for part in command]
    if container:
        params.append(("container", container))
    if tty:
        params.append(("tty", "1"))
    url = f"{address}/v1/exec/{target}"
    code = asyncio.run(_run(url, params, headers, context, interactive, tty))
    sys.exit(code)


async def _run(
    url: str,
    params: list[tuple[str, str]],
    headers: dict[str, str],
    context: ssl.SSLContext,
    interactive: bool,
    tty: bool,
) -> int:
    raw = tty and interactive and sys.stdin.isatty()
    restore: Any = None
    if raw:
        import termios
        import tty as tty_module

        restore = termios.tcgetattr(sys.stdin.fileno())
        tty_module.setraw(sys.stdin.fileno())
    try:
        connector = aiohttp.TCPConnector(ssl=context)
        # no total: a session lasts as long as the command; the connect is bounded, and the
        # websocket heartbeat finds a peer that went away
        timeout = aiohttp.ClientTimeout(total=None, sock_connect=10)
        async with aiohttp.ClientSession(
            headers=headers, connector=connector, timeout=timeout
        ) as session:
            try:
                ws = await session.ws_connect(url, params=params, heartbeat=30)
            except aiohttp.WSServerHandshakeError as exc:
                raise await _refusal(session, url, params, exc.status) from None
            except aiohttp.ClientError as exc:
                raise Unavailable(f"cannot reach the moorage server: {exc}") from None
            async with ws:
                feeder = asyncio.create_task(_feed(ws)) if interactive else None
                try:
                    return await _drain(ws)
                finally:
                    if feeder is not None:
                        feeder.cancel()
    finally:
        if restore is not None:
            import termios

            termios.tcsetattr(sys.stdin.fileno(), termios.TCSADRAIN, restore)


async def _refusal(
    session: aiohttp.ClientSession, url: str, params: list[tuple[str, str]], status: int
) -> MoorageError:
    """Why the server refused the upgrade: the same request without it answers the JSON error."""
    message = f"HTTP {status}"
    with contextlib.suppress(aiohttp.ClientError, ValueError, TimeoutError):
        async with session.get(url, params=params) as response:
            body = await response.json(content_type=None)
            if isinstance(body, dict) and body.get("message"):
                message = str(body["message"])
    if status == 403:
        return Forbidden(message)
    if status == 404:
        return NotFound(message)
    return Unavailable(f"exec refused by the server: {message}")


async def _feed(ws: aiohttp.ClientWebSocketResponse) -> None:
    loop = asyncio.get_running_loop()
    fd = sys.stdin.fileno()
    while True:
        data = await loop.run_in_executor(None, os.read, fd, 65536)
        if not data:
            await ws.send_str(json.dumps({"type": "eof"}))
            return
        await ws.send_bytes(data)


async def _drain(ws: aiohttp.ClientWebSocketResponse) -> int:
    async for message in ws:
        if message.type == aiohttp.WSMsgType.BINARY:
            channel, data = message.data[0], message.data[1:]
            out = sys.stderr.buffer if channel == 2 else sys.stdout.buffer
            out.write(data)
            out.flush()
        elif message.type == aiohttp.WSMsgType.TEXT:
            info = json.loads(message.data)
            if info.get("type") == "exit":
                return int(info.get("code", 1))
        else:
            break
    with contextlib.suppress(Exception):
        sys.stderr.write("error: the exec stream ended without an exit code\n")
    return 1


COMMANDS = [exec_cmd]
