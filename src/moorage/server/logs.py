"""Logs of tasks, fetched from the agents that run them and merged, each line prefixed by task id.

CLI ──GET /v1/services/web/logs?follow=true──▶ server ──GET /v1/tasks/<id>/logs──▶ agent(s)
"""

from __future__ import annotations

import asyncio
import contextlib
import ssl

import aiohttp
from aiohttp import web

from moorage.model import FieldError, SpecError, Task, Unavailable
from moorage.ops import Tasks

from .routes import RouteTable, acl, path, task_service

routes = RouteTable()

STREAMS = ("stdout", "stderr", "both")


class LogsProxy:
    def __init__(self, tasks: Tasks, session: aiohttp.ClientSession, tls: ssl.SSLContext) -> None:
        self.tasks = tasks
        self.session = session
        self.tls = tls  # the agent answers only a server's certificate

    @routes.get(
        "/v1/services/{name}/logs",
        "Logs of every task of a service, each line prefixed by task id",
        auth=acl("service", path("name")),
        query=("follow", "stream", "tail", "container"),
        content_type="text/plain",
        tags=("services",),
    )
    async def service_logs(self, request: web.Request) -> web.StreamResponse:
        return await self._stream(request, self.tasks.placed_of_service(request.match_info["name"]))

    @routes.get(
        "/v1/tasks/{id}/logs",
        "Logs of one task",
        auth=acl("service", task_service("id")),
        query=("follow", "stream", "tail", "container"),
        content_type="text/plain",
        tags=("tasks",),
    )
    async def task_logs(self, request: web.Request) -> web.StreamResponse:
        return await self._stream(request, [self.tasks.placed(request.match_info["id"])])

    async def _stream(self, request: web.Request, tasks: list[Task]) -> web.StreamResponse:
        params = _params(request)
        response = web.StreamResponse(headers={"Content-Type": "text/plain; charset=utf-8"})
        await response.prepare(request)
        lock = asyncio.Lock()
        async with asyncio.TaskGroup() as group:
            for task in tasks:
                group.create_task(self._pump(task, params, response, lock, len(tasks) > 1))
        with contextlib.suppress(ConnectionError):
            await response.write_eof()
        return response

    async def _pump(
        self,
        task: Task,
        params: dict[str, str],
        response: web.StreamResponse,
        lock: asyncio.Lock,
        prefix: bool,
    ) -> None:
        try:
            url = f"https://{self.tasks.agent_of(task)}/v1/tasks/{task.id}/logs"
        except Unavailable:
            return
        label = f"{task.id} | ".encode() if prefix else b""
        try:
            async with self.session.get(
                url,
                params=params,
                ssl=self.tls,
                timeout=aiohttp.ClientTimeout(total=None, sock_connect=5),
            ) as upstream:
                if upstream.status != 200:
                    text = (await upstream.text())[:200]
                    async with lock:
                        await response.write(
                            label + f"[logs unavailable: {upstream.status} {text}]\n".encode()
                        )
                    return
                async for line in upstream.content:
                    async with lock:
                        await response.write(label + line)
        except (aiohttp.ClientError, TimeoutError) as exc:
            async with lock:
                await response.write(label + f"[logs unavailable: {exc}]\n".encode())


def _params(request: web.Request) -> dict[str, str]:
    query = request.query
    stream = query.get("stream", "both")
    errors = []
    if stream not in STREAMS:
        errors.append(FieldError("stream", f"must be one of {', '.join(STREAMS)}, got {stream!r}"))
    tail = query.get("tail", "")
    if tail and not tail.isdigit():
        errors.append(FieldError("tail", f"must be a non-negative integer, got {tail!r}"))
    if errors:
        raise SpecError(errors, code="invalid_query")
    params = {
        "stream": stream,
        "follow": "true" if query.get("follow") in ("1", "true") else "false",
    }
    if tail:
        params["tail"] = tail
    if query.get("container"):
        params["container"] = query["container"]
    return params
