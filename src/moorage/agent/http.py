"""The agent's own HTTP API: logs of the tasks it runs, and a health probe.

    GET /v1/health
    GET /v1/tasks/{id}/logs?container=&stream=stdout|stderr|both&follow=true&tail=N
    GET /v1/tasks/{id}/exec (WebSocket)
    volume snapshots: take, archive, restore, delete (agent/snapshots.py)

The port speaks TLS with the node's certificate. Every route but the health probe needs a
server's certificate (mutual TLS), declared with the route in `build_app`: the server relays
users' logs and exec calls here after checking their ACL token, and the agent's address is
reachable from the network in a cluster, so the agent must not answer strangers. Path
parameters are checked before any handler runs (a task id never walks out of its directory).

Logs are read from the files the driver's executor writes (`<data>/alloc/<id>/logs/<container>.<stream>`,
rotated to `.1`, `.2` …). Following survives rotation: a file whose inode changed or that shrank is
re-opened from its start.
"""

from __future__ import annotations

import asyncio
import contextlib
import os
import re
from collections import deque
from collections.abc import Awaitable, Callable
from pathlib import Path
from typing import Any

from aiohttp import WSMsgType, web
from aiohttp.web_urldispatcher import AbstractRoute

from moorage.drivers.base import ExecCapable
from moorage.pki import identity_of

from . import snapshots
from .surface import AGENT_KEY, LocalAgent

POLL = 0.2
CHUNK = 64 * 1024
# How long a followed task may have no runner (it is between restarts) before the stream ends.
FOLLOW_GRACE = 5.0
STREAMS = ("stdout", "stderr", "both")


Handler = Callable[[web.Request], Awaitable[web.StreamResponse]]
OPEN = "open"  # anyone: the health probe
SERVER = "server"  # a server's certificate: relaying a user's call after checking its token
NAME = re.compile(r"^[A-Za-z0-9_][A-Za-z0-9_.:@-]{0,127}$")  # task ids, volumes, snapshots


def build_app(agent: LocalAgent) -> web.Application:
    """The agent's routes, each with who may call it; one middleware enforces it, and a route
    without a declaration cannot be added."""
    declared: dict[AbstractRoute, str] = {}

    @web.middleware
    async def guard(request: web.Request, handler: Handler) -> web.StreamResponse:
        auth = declared.get(request.match_info.route)
        if auth == SERVER:
            transport = request.transport
            peer = transport.get_extra_info("peercert") if transport is not None else None
            identity = identity_of(peer)
            if identity is None or identity.role != "server":
                return _error(403, "forbidden", "", "only a server of the cluster may call this")
        for name, value in request.match_info.items():
            if NAME.fullmatch(value) is None:
                return _error(400, "invalid_path", name, f"{value!r} is not a valid {name}")
        return await handler(request)

    app = web.Application(middlewares=[guard])
    app[AGENT_KEY] = agent
    routes: list[tuple[str, str, Handler, str]] = [
        ("GET", "/v1/health", health, OPEN),
        ("GET", "/v1/tasks/{id}/logs", task_logs, SERVER),
        ("GET", "/v1/tasks/{id}/exec", task_exec, SERVER),
        *((method, path, handler, SERVER) for method, path, handler in snapshots.ROUTES),
    ]
    for method, path, handler, auth in routes:
        declared[app.router.add_route(method, path, handler)] = auth
    return app


def _error(status: int, code: str, field: str, message: str) -> web.Response:
    body = {"code": code, "message": message, "errors": [{"field": field, "message": message}]}
    return web.json_response(body, status=status)


async def health(request: web.Request) -> web.Response:
    agent = request.app[AGENT_KEY]
    return web.json_response({"node": agent.name, "tasks": len(agent.runners)})


async def task_logs(request: web.Request) -> web.StreamResponse:
    agent = request.app[AGENT_KEY]
    task_id = request.match_info["id"]
    query = request.query
    stream = query.get("stream", "both")
    if stream not in STREAMS:
        return _error(400, "invalid_query", "stream", f"must be one of {', '.join(STREAMS)}")
    tail_text = query.get("tail", "")
    if tail_text and not tail_text.isdigit():
        return _error(400, "invalid_query", "tail", "must be a non-negative integer")
    tail = int(tail_text) if tail_text else None
    follow = query.get("follow") in ("1", "true")
    log_dir = agent.task_dir(task_id) / "logs"
    if not log_dir.is_dir():
        return _error(404, "not_found", "id", f"no logs for task {task_id!r} on this node")
    container = query.get("container") or None
    names = sorted({p.name.split(".")[0] for p in log_dir.glob("*.std*")})
    if container is not None:
        if container not in names:
            return _error(
                404, "not_found", "container", f"task {task_id} has no container {container!r}"
            )
        names = [container]
    kinds = ("stdout", "stderr") if stream == "both" else (stream,)
    followers = [_Follower(log_dir / f"{name}.{kind}") for name in names for kind in kinds]

    response = web.StreamResponse(headers={"Content-Type": "text/plain; charset=utf-8"})
    await response.prepare(request)
    try:
        for follower in followers:
            for line in follower.backlog(tail):
                await response.write(line)
        if follow:
            await _follow(agent, task_id, followers, response)
        await response.write_eof()
    except (ConnectionError, asyncio.CancelledError):
        # The client went away; nothing to clean up beyond the open files.
        pass
    finally:
        for follower in followers:
            follower.close()
    return response


async def _follow(
    agent: LocalAgent, task_id: str, followers: list[_Follower], response: web.StreamResponse
) -> None:
    idle_since: float | None = None
    loop = asyncio.get_running_loop()
    while True:
        wrote = False
        for follower in followers:
            for line in follower.read_new():
                await response.write(line)
                wrote = True
        runner = agent.runners.get(task_id)
        if runner is not None and runner.active:
            idle_since = None
        elif not wrote:
            now = loop.time()
            idle_since = idle_since if idle_since is not None else now
            if now - idle_since >= FOLLOW_GRACE:
                return
        if not wrote:
            await asyncio.sleep(POLL)


async def task_exec(request: web.Request) -> web.StreamResponse:
    """Run a command in a task's container over a WebSocket (the server relays `moorage exec`).

    Frames: client → agent binary = stdin, text {"type": "eof"} = end of stdin; agent → client
    binary = one channel byte (1 stdout, 2 stderr) + data, then text {"type": "exit", "code": n}.
    """
    agent = request.app[AGENT_KEY]
    task_id = request.match_info["id"]
    command = request.query.getall("cmd", [])
    if not command:
        return _error(400, "invalid_query", "cmd", "the command to run is missing")
    runner = agent.runners.get(task_id)
    if runner is None or not runner.active or not runner.handles:
        return _error(404, "not_found", "id", f"task {task_id!r} is not running on this node")
    wanted = request.query.get("container") or runner.handles[0].container
    handle = next((h for h in runner.handles if h.container == wanted), None)
    if handle is None:
        return _error(404, "not_found", "container", f"task {task_id} has no container {wanted!r}")
    driver = runner.driver(handle)
    if not isinstance(driver, ExecCapable):
        return _error(400, "unsupported", "container", f"the {driver.name} driver cannot exec")
    env = await agent.exec_env(runner, wanted)
    ws = web.WebSocketResponse(heartbeat=30)
    await ws.prepare(request)
    try:
        session = await driver.open_exec(handle, command, env, request.query.get("tty") == "1")
    except Exception as exc:  # the driver's message, to the user, not a crash
        await ws.send_bytes(b"\x02" + f"exec failed: {exc}\n".encode())
        await ws.send_json({"type": "exit", "code": 126})
        await ws.close()
        return ws

    async def stdin() -> None:
        async for message in ws:
            if message.type == WSMsgType.BINARY:
                await session.write(message.data)
            elif message.type == WSMsgType.TEXT and message.json().get("type") == "eof":
                await session.close_stdin()

    feeder = asyncio.create_task(stdin())
    try:
        while (chunk := await session.read()) is not None:
            channel, data = chunk
            await ws.send_bytes(bytes([channel]) + data)
        code = await session.wait()
        await ws.send_json({"type": "exit", "code": code})
    except (ConnectionError, RuntimeError):
        pass  # the client went away
    finally:
        feeder.cancel()
        await session.close()
        await ws.close()
    return ws


class _Follower:
    """Reads one log file: its last lines, then whatever is appended, across rotations."""

    def __init__(self, path: Path) -> None:
        self.path = path
        self.file: Any = None
        self.inode: int | None = None
        self.partial = b""

    def _open(self) -> bool:
        try:
            self.file = self.path.open("rb")
        except FileNotFoundError:
            return False
        self.inode = os.fstat(self.file.fileno()).st_ino
        return True

    def backlog(self, tail: int | None) -> list[bytes]:
        """Everything in the current file (or its last `tail` lines); leaves the cursor at the end."""
        if not self._open():
            return []
        if tail == 0:
            self.file.seek(0, os.SEEK_END)
            return []
        lines: deque[bytes] | list[bytes] = deque(maxlen=tail) if tail is not None else []
        for line in self._read_lines():
            lines.append(line)
        return list(lines)

    def read_new(self) -> list[bytes]:
        if self.file is None and not self._open():
            return []
        lines = list(self._read_lines())
        if self._rotated():
            # The writer moved on to a fresh file: finish the old one, then start the new one.
            lines.extend(self._read_lines())
            self.close()
            if self._open():
                lines.extend(self._read_lines())
        return lines

    def _rotated(self) -> bool:
        try:
            stat = self.path.stat()
        except FileNotFoundError:
            return False
        return stat.st_ino != self.inode or stat.st_size < self.file.tell()

    def _read_lines(self) -> list[bytes]:
        out: list[bytes] = []
        while True:
            data = self.file.read(CHUNK)
            if not data:
                break
            data = self.partial + data
            *complete, self.partial = data.split(b"\n")
            out.extend(line + b"\n" for line in complete)
        return out

    def close(self) -> None:
        if self.file is not None:
            with contextlib.suppress(OSError):
                self.file.close()
            self.file = None
