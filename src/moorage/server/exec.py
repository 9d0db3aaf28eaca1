"""`moorage exec`: the server relays a WebSocket between the CLI and the task's agent.

CLI ──ws /v1/exec/<task id | service>?cmd=…──▶ server ──ws /v1/tasks/<id>/exec──▶ agent
"""

from __future__ import annotations

import asyncio
import contextlib
import ssl

import aiohttp
from aiohttp import WSMsgType, web

from moorage.model import FieldError, SpecError, Unavailable
from moorage.model.acl import Level
from moorage.ops import Tasks

from .routes import RouteTable, acl, task_service

routes = RouteTable()
CONNECT_TIMEOUT = 10.0


class ExecProxy:
    def __init__(self, tasks: Tasks, session: aiohttp.ClientSession, tls: ssl.SSLContext) -> None:
        self.tasks = tasks
        self.session = session
        self.tls = tls  # the agent answers only a server's certificate

    @routes.get(
        "/v1/exec/{target}",
        "Run a command in a task (a task id, or a service: its first running task); WebSocket",
        auth=acl("exec", task_service("target"), Level.WRITE),
        query=("cmd", "container", "tty"),
        tags=("tasks",),
    )
    async def exec_relay(self, request: web.Request) -> web.StreamResponse:
        command = request.query.getall("cmd", [])
        if not command:
            raise SpecError(
                [FieldError("cmd", "the command to run is missing")], code="invalid_query"
            )
        task = self.tasks.running(request.match_info["target"])
        url = f"wss://{self.tasks.agent_of(task)}/v1/tasks/{task.id}/exec"
        params = [("cmd", c) for c in command]
        for name in ("container", "tty"):
            if request.query.get(name):
                params.append((name, request.query[name]))
        try:
            async with asyncio.timeout(CONNECT_TIMEOUT):  # a frozen agent cannot hold the call
                upstream = await self.session.ws_connect(
                    url, params=params, heartbeat=30, ssl=self.tls
                )
        except (aiohttp.ClientError, TimeoutError) as exc:
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
