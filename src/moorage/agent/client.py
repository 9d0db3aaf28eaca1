"""The agent's client of the server API (aiohttp). Errors become `ServerError`s here, only here."""

from __future__ import annotations

from typing import Any

import aiohttp

from moorage.model import Node, Task, TaskDefinition


class ServerError(Exception):
    def __init__(self, status: int, message: str) -> None:
        super().__init__(f"server answered {status}: {message}" if status else message)
        self.status = status


class ServerClient:
    def __init__(
        self, session: aiohttp.ClientSession, base_url: str, token: str | None = None
    ) -> None:
        self.session = session
        self.base = base_url.rstrip("/")
        self.headers = {"Authorization": f"Bearer {token}"} if token else {}
        self._taskdefs: dict[tuple[str, int], TaskDefinition] = {}

    async def _call(
        self,
        method: str,
        path: str,
        timeout: float = 10,
        headers: dict[str, str] | None = None,
        **kwargs: Any,
    ) -> tuple[Any, dict[str, str]]:
        try:
            async with self.session.request(
                method,
                self.base + path,
                headers={**self.headers, **(headers or {})},
                timeout=aiohttp.ClientTimeout(total=timeout),
                **kwargs,
            ) as response:
                body = await response.json(content_type=None)
                if response.status >= 400:
                    message = body.get("message", "") if isinstance(body, dict) else str(body)
                    raise ServerError(response.status, message)
                return body, dict(response.headers)
        except (aiohttp.ClientError, TimeoutError, ValueError) as exc:
            raise ServerError(0, f"cannot reach the server at {self.base}: {exc!r}") from None

    async def register(self, node: Node) -> Node:
        body, _ = await self._call(
            "PUT", f"/v1/nodes/{node.name}", json=node.model_dump(mode="json")
        )
        return Node.model_validate(body)

    async def task_secrets(self, task_id: str, node: str) -> dict[str, dict[str, str]]:
        """The secret env values of a task's containers (the server checks the node)."""
        body, _ = await self._call(
            "GET", f"/v1/tasks/{task_id}/secrets", headers={"X-Moorage-Node": node}
        )
        return {str(c): {str(k): str(v) for k, v in env.items()} for c, env in body.items()}

    async def heartbeat(self, name: str) -> float | None:
        """Heartbeat; the server answers how often it wants them."""
        body, _ = await self._call("POST", f"/v1/nodes/{name}/heartbeat")
        interval = body.get("interval") if isinstance(body, dict) else None
        return float(interval) if isinstance(interval, int | float) else None

    async def node_tasks(self, name: str, index: int, wait: float) -> tuple[list[Task], int]:
        params = {"index": str(index), "wait": f"{wait:g}s"}
        body, headers = await self._call(
            "GET", f"/v1/nodes/{name}/tasks", timeout=wait * 1.2 + 10, params=params
        )
        return [Task.model_validate(t) for t in body], int(headers.get("X-Moorage-Index", "0"))

    async def taskdef(self, family: str, revision: int) -> TaskDefinition:
        cached = self._taskdefs.get((family, revision))
        if cached is None:
            body, _ = await self._call("GET", f"/v1/taskdefs/{family}/{revision}")
            cached = self._taskdefs[(family, revision)] = TaskDefinition.model_validate(body)
        return cached

    async def report(self, task_id: str, report: dict[str, Any]) -> None:
        await self._call("PUT", f"/v1/tasks/{task_id}/status", json=report)
