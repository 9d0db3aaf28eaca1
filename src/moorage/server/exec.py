"""`moorage exec`: the server relays a WebSocket between the CLI and the task's agent.

CLI ──ws /v1/exec/<task id | service>?cmd=…──▶ server ──ws /v1/tasks/<id>/exec──▶ agent
"""

from __future__ import annotations

import asyncio
import contextlib

import aiohttp
from aiohttp import WSMsgType, web

from moorage.model import FieldError, NotFound, SpecError, Task, TaskStatus, Unavailable
from moorage.state import StateCache

from .api import table


class ExecProxy:
    def __init__(self, cache: StateCache, session: aiohttp.ClientSession, join_token: str) -> None:
        self.cache = cache
        self.session = session
        self.auth = {"Authorization": f"Bearer {join_token}"}  # agents answer only the cluster

    def _target(self, target: str) -> Task:
        task = self.cache.tasks.get(target)
        if task is None:
            if target not in self.cache.services:
                raise NotFound(f"no task or service named {target!r}")
            running = [
                t for t in self.cache.tasks_of_service(target) if t.status == TaskStatus.RUNNING
            ]
            if not running:
                raise Unavailable(f"{target} has no running task")
            task = running[0]
        if task.status != TaskStatus.RUNNING or not task.node:
            raise Unavailable(f"task {task.id} is not running ({task.status})")
        return task

    @table.add(
        "GET",
        "/v1/exec/{target}",
        "Run a command in a task (a task id, or a service: its first running task); WebSocket",
        query=("cmd", "container", "tty"),
        tags=("tasks",),
    )
    async def exec_relay(self, request: web.Request) -> web.StreamResponse:
        command = request.query.getall("cmd", [])
        if not command:
            raise SpecError(
                [FieldError("cmd", "the command to run is missing")], code="invalid_query"
            )
        task = self._target(request.match_info["target"])
        node = self.cache.nodes.get(task.node or "")
        if node is None or not node.agent_addr:
            raise Unavailable(f"the agent of node {task.node} is unknown")
        url = f"http://{node.agent_addr}/v1/tasks/{task.id}/exec"
        params = [("cmd", c) for c in command]
        for name in ("container", "tty"):
            if request.query.get(name):
                params.append((name, request.query[name]))
        try:
            upstream = await self.session.ws_connect(
                url, params=params, heartbeat=30, headers=self.auth
            )
        except aiohttp.ClientError as exc:
            raise Unavailable(f"cannot reach the agent of node {task.node}: {exc}") from None
        client = web.WebSocketResponse(heartbeat=30)
        await client.prepare(request)
        await client.send_json({"type": "task", "id": task.id, "node": task.node})

        async def pipe(
            source: web.WebSocketResponse | aiohttp.ClientWebSocketResponse,
            sink: web.WebSocketResponse | aiohttp.ClientWebSocketResponse,
        ) -> None:
            async for message in source:
                if message.type == WSMsgType.BINARY:
                    await sink.send_bytes(message.data)
                elif message.type == WSMsgType.TEXT:
                    await sink.send_str(message.data)
                else:
                    break

        async with upstream:
            tasks = [
                asyncio.create_task(pipe(upstream, client)),
                asyncio.create_task(pipe(client, upstream)),
            ]
            await asyncio.wait(tasks, return_when=asyncio.FIRST_COMPLETED)
            for pending in tasks:
                pending.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await asyncio.gather(*tasks, return_exceptions=True)
        await client.close()
        return client
