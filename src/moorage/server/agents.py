"""Calls from the server to one node's agent, carrying the cluster's join token.

    server ── AgentRelay.call(node, method, path) ──▶ http://<node's agent_addr><path>

Used where the server needs a node to act on volume data it never reads itself: snapshots,
restores, archives (ops/snapshots.py) and removing a volume's files (ops/volumes.py).
An agent's error answer becomes the moorage error of its status; a call that fails is
AgentUnreachable (never sent) or AgentLost (sent, no answer): moorage.ops.agents.
"""

from __future__ import annotations

import contextlib
from typing import Any

import aiohttp

from moorage.model import Conflict, FieldError, NotFound, SpecError, Unavailable
from moorage.ops.agents import AgentLost, AgentUnreachable
from moorage.state import StateCache


class AgentRelay:
    """`moorage.ops.agents.AgentCalls` over HTTP, with the cluster's join token."""

    def __init__(self, cache: StateCache, session: aiohttp.ClientSession, join_token: str) -> None:
        self.cache = cache
        self.session = session
        self.auth = {"Authorization": f"Bearer {join_token}"}

    def url(self, node: str) -> str:
        """The base URL of the node's agent; AgentUnreachable if it never said where it is."""
        found = self.cache.nodes.get(node)
        if found is None or not found.agent_addr:
            raise AgentUnreachable(f"the agent of node {node} is unknown")
        return f"http://{found.agent_addr}"

    async def call(
        self,
        node: str,
        method: str,
        path: str,
        body: Any = None,
        params: dict[str, str] | None = None,
    ) -> Any:
        """One JSON call to a node's agent; its errors as moorage errors."""
        url = self.url(node) + path
        timeout = aiohttp.ClientTimeout(total=None, sock_connect=5)
        try:
            async with self.session.request(
                method, url, json=body, params=params, headers=self.auth, timeout=timeout
            ) as response:
                answer = await response.json(content_type=None)
                if response.status >= 400:
                    raise agent_error(node, response.status, answer)
                return answer
        except (aiohttp.ClientConnectorError, aiohttp.ConnectionTimeoutError) as exc:
            raise AgentUnreachable(f"cannot reach the agent of node {node}: {exc}") from None
        except (aiohttp.ClientError, TimeoutError, ValueError) as exc:
            raise AgentLost(f"lost the call to the agent of node {node}: {exc}") from None


async def json_of(response: aiohttp.ClientResponse) -> Any:
    with contextlib.suppress(ValueError, aiohttp.ClientError):
        return await response.json(content_type=None)
    return {}


def agent_error(node: str, status: int, answer: Any) -> Exception:
    """An agent's error answer as the moorage error the caller gets."""
    message = answer.get("message", "") if isinstance(answer, dict) else ""
    message = f"node {node}: {message or status}"
    if status == 404:
        return NotFound(message)
    if status == 409:
        return Conflict(message)
    if status == 400:
        errors = answer.get("errors", []) if isinstance(answer, dict) else []
        fields = [FieldError(e.get("field", ""), e.get("message", "")) for e in errors]
        return SpecError(fields or [FieldError("", message)])
    return Unavailable(message)
