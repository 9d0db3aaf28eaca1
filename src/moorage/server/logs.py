"""Logs of tasks, fetched from the agents that run them and merged, each line prefixed by task id.

CLI ──GET /v1/services/web/logs?follow=true──▶ server ──GET /v1/tasks/<id>/logs──▶ agent(s)
"""

from __future__ import annotations

import asyncio
import contextlib

import aiohttp
from aiohttp import web

from moorage.model import FieldError, NotFound, SpecError, Task, Unavailable
from moorage.state import StateCache

from .api import table

STREAMS = ("stdout", "stderr", "both")


class LogsProxy:
    def __init__(self, cache: StateCache, session: aiohttp.ClientSession, join_token: str) -> None:
        self.cache = cache
        self.session = session
        self.auth = {"Authorization": f"Bearer {join_token}"}  # agents answer only the cluster

    @table.add(
        "GET",
        "/v1/services/{name}/logs",
        "Logs of every task of a service, each line prefixed by task id",
        query=("follow", "stream", "tail", "container"),
        content_type="text/plain",
        tags=("services",),
    )
    async def service_logs(self, request: web.Request) -> web.StreamResponse:
        name = request.match_info["name"]
        if name not in self.cache.services:
            raise NotFound(f"no service named {name!r}")
        tasks = [t for t in self.cache.tasks_of_service(name) if t.node and t.live]
        return await self._stream(request, tasks)

    @table.add(
        "GET",
        "/v1/tasks/{id}/logs",
        "Logs of one task",
        query=("follow", "stream", "tail", "container"),
        content_type="text/plain",
        tags=("tasks",),
    )
    async def task_logs(self, request: web.Request) -> web.StreamResponse:
        task = self.cache.tasks.get(request.match_info["id"])
        if task is None:
            raise NotFound(f"no task {request.match_info['id']!r}")
        if task.node is None:
            raise Unavailable(f"task {task.id} is not placed yet: {task.message or 'pending'}")
        return await self._stream(request, [task])

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
        node = self.cache.nodes.get(task.node or "")
        if node is None or not node.agent_addr:
            return
        url = f"http://{node.agent_addr}/v1/tasks/{task.id}/logs"
        label = f"{task.id} | ".encode() if prefix else b""
        try:
            async with self.session.get(
                url,
                params=params,
                headers=self.auth,
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
