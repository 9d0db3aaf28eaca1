"""The agent's client of the servers' cluster port (aiohttp over mutual TLS: the session's
connector presents the node's certificate). Errors become `ServerError`s here, only here.

Every message is a class of `moorage.model.messages` (or a stored model), sent as its JSON and
parsed back with the same class the server uses.
"""

from __future__ import annotations

import json
import time
from typing import Any, TypeVar

import aiohttp
from pydantic import BaseModel, ValidationError

from moorage.metrics.model import Batch
from moorage.model import Node, Task, TaskDefinition
from moorage.model.catalog import Registration
from moorage.model.messages import CheckReport, HeartbeatAnswer, TaskReport, TaskSecrets
from moorage.model.volume import GrantBody, Volume

M = TypeVar("M", bound=BaseModel)


class ServerError(Exception):
    def __init__(self, status: int, message: str) -> None:
        super().__init__(f"server answered {status}: {message}" if status else message)
        self.status = status
        self.detail = message  # the server's own message


class ServerClient:
    """Talks to one of the cluster's servers: on a connection failure (or a 503 from a server
    that cannot answer) the call moves on to the next address, and stays there."""

    def __init__(self, session: aiohttp.ClientSession, base_urls: str | list[str]) -> None:
        self.session = session
        urls = [base_urls] if isinstance(base_urls, str) else base_urls
        self.bases = [url.rstrip("/") for url in urls]
        if not self.bases:
            raise ValueError("at least one server address is needed")
        self._current = 0
        self.last_contact: float | None = None  # monotonic time of the last answer of a server
        self._taskdefs: dict[tuple[str, int], TaskDefinition] = {}

    @property
    def base(self) -> str:
        return self.bases[self._current]

    async def _call(
        self,
        method: str,
        path: str,
        timeout: float = 10,
        headers: dict[str, str] | None = None,
        **kwargs: Any,
    ) -> tuple[Any, dict[str, str]]:
        failure: ServerError | None = None
        for _ in self.bases:
            base = self.base
            try:
                return await self._once(base, method, path, timeout, headers, **kwargs)
            except ServerError as exc:
                if exc.status not in (0, 503):
                    raise
                failure = exc
                if self.base == base:  # a concurrent call may have moved on already
                    self._current = (self._current + 1) % len(self.bases)
        assert failure is not None
        raise failure

    async def _once(
        self,
        base: str,
        method: str,
        path: str,
        timeout: float,
        headers: dict[str, str] | None,
        **kwargs: Any,
    ) -> tuple[Any, dict[str, str]]:
        try:
            async with self.session.request(
                method,
                base + path,
                headers=headers,
                timeout=aiohttp.ClientTimeout(total=timeout, sock_connect=min(10.0, timeout)),
                **kwargs,
            ) as response:
                text = await response.text()
                self.last_contact = time.monotonic()
                try:
                    body = json.loads(text) if text else None
                except ValueError:
                    if response.status < 400:
                        raise
                    body = text
                if response.status >= 400:
                    message = body.get("message", "") if isinstance(body, dict) else str(body)
                    raise ServerError(response.status, message)
                return body, dict(response.headers)
        except (aiohttp.ClientError, TimeoutError, ValueError) as exc:
            raise ServerError(0, f"cannot reach the server at {base}: {exc!r}") from None

    async def _send(
        self, method: str, path: str, message: BaseModel, timeout: float = 10
    ) -> tuple[Any, dict[str, str]]:
        return await self._call(
            method,
            path,
            timeout=timeout,
            headers={"Content-Type": "application/json"},
            data=message.model_dump_json(),
        )

    async def register(self, node: Node) -> Node:
        body, _ = await self._send("PUT", f"/v1/nodes/{node.name}", node)
        return _parse(Node, body)

    async def task_secrets(self, task_id: str) -> dict[str, dict[str, str]]:
        """The secret env values of a task's containers (only a task on this node: the
        server knows the node by its certificate)."""
        body, _ = await self._call("GET", f"/v1/tasks/{task_id}/secrets")
        return _parse(TaskSecrets, body).root

    async def heartbeat(self, name: str) -> HeartbeatAnswer:
        """Heartbeat; the server answers how often it wants them, and the node's TTL."""
        body, _ = await self._call("POST", f"/v1/nodes/{name}/heartbeat")
        return _parse(HeartbeatAnswer, body)

    async def node_tasks(self, name: str, index: int, wait: float) -> tuple[list[Task], int]:
        params = {"index": str(index), "wait": f"{wait:g}s"}
        body, headers = await self._call(
            "GET", f"/v1/nodes/{name}/tasks", timeout=wait * 1.2 + 10, params=params
        )
        return [_parse(Task, t) for t in body], int(headers.get("X-Moorage-Index", "0"))

    async def node_registrations(
        self, name: str, index: int, wait: float
    ) -> tuple[list[Registration], int]:
        params = {"index": str(index), "wait": f"{wait:g}s"}
        body, headers = await self._call(
            "GET", f"/v1/nodes/{name}/registrations", timeout=wait * 1.2 + 10, params=params
        )
        found = [_parse(Registration, r) for r in body]
        return found, int(headers.get("X-Moorage-Index", "0"))

    async def registration_check(self, registration: str, check: str, report: CheckReport) -> None:
        await self._send("PUT", f"/v1/registrations/{registration}/checks/{check}", report)

    async def user_events(
        self, node: str, index: int, wait: float
    ) -> tuple[list[dict[str, Any]], int]:
        """The user events aimed at `node` (Consul's format; the server applies their node,
        service and tag filters), blocking until the list moves past `index`."""
        params = {"node": node, "index": str(index), "wait": f"{int(wait * 1000)}ms"}
        body, headers = await self._call(
            "GET", "/v1/event/list", timeout=wait * 1.2 + 10, params=params
        )
        events = [e for e in body if isinstance(e, dict)] if isinstance(body, list) else []
        return events, int(headers.get("X-Consul-Index", "0"))

    async def taskdef(self, family: str, revision: int) -> TaskDefinition:
        cached = self._taskdefs.get((family, revision))
        if cached is None:
            body, _ = await self._call("GET", f"/v1/taskdefs/{family}/{revision}")
            cached = self._taskdefs[(family, revision)] = _parse(TaskDefinition, body)
        return cached

    async def report(self, task_id: str, report: TaskReport) -> None:
        await self._send("PUT", f"/v1/tasks/{task_id}/status", report)

    async def volume_grant(self, action: str, name: str, body: GrantBody, timeout: float) -> Volume:
        """`claim`, `renew` or `release` a volume (docs/volumes.md); 409 when refused."""
        answer, _ = await self._send("POST", f"/v1/volumes/{name}/{action}", body, timeout)
        return _parse(Volume, answer)

    async def metrics_ingest(self, batch: Batch, timeout: float = 10) -> None:
        """Send a batch of metric points (`POST /v1/metrics/ingest`)."""
        await self._send("POST", "/v1/metrics/ingest", batch, timeout)


def _parse(model: type[M], body: Any) -> M:
    """A server's answer as `model`; ServerError when it is not one."""
    try:
        return model.model_validate(body)
    except ValidationError as exc:
        raise ServerError(0, f"unexpected answer ({model.__name__}): {exc}") from None
