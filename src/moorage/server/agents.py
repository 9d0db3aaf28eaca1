"""Calls from the server to one node's agent, carrying the cluster's join token.

    server ── AgentRelay.call(node, method, path) ──▶ http://<node's agent_addr><path>

Used where the server needs a node to act on volume data it never reads itself: snapshots,
restores, archives (ops/snapshots.py) and removing a volume's files (ops/volumes.py).
An agent's error answer becomes the moorage error of its status; a call that fails is
AgentUnreachable (never sent) or AgentLost (sent, no answer): moorage.ops.agents.
"""

from __future__ import annotations

import contextlib
import ssl
from typing import Any

import aiohttp

from moorage.model import Conflict, FieldError, NotFound, SpecError, Unavailable
from moorage.ops.agents import AgentLost, AgentUnreachable
from moorage.state import StateCache

CONNECT_TIMEOUT = 5.0
DEFAULT_TIMEOUT = 60.0  # seconds a call may take in all (operations that copy data give more)


class AgentRelay:
    """`moorage.ops.agents.AgentCalls` over HTTPS: the server presents its certificate, the
    agent's is checked against the cluster CA and the address the node advertised."""

    def __init__(
        self, cache: StateCache, session: aiohttp.ClientSession, tls: ssl.SSLContext
    ) -> None:
        self.cache = cache
        self.session = session
        self.tls = tls

    def url(self, node: str, scheme: str = "https") -> str:
        """The base URL of the node's agent; AgentUnreachable if it never said where it is."""
        found = self.cache.nodes.get(node)
        if found is None or not found.agent_addr:
            raise AgentUnreachable(f"the agent of node {node} is unknown")
        return f"{scheme}://{found.agent_addr}"

    async def call(
        self,
        node: str,
        method: str,
        path: str,
        body: Any = None,
        params: dict[str, str] | None = None,
        timeout: float = DEFAULT_TIMEOUT,
    ) -> Any:
        """One JSON call to a node's agent, done within `timeout` seconds (a frozen agent
        cannot hold the caller); its errors as moorage errors."""
        url = self.url(node) + path
        limits = aiohttp.ClientTimeout(total=timeout, sock_connect=CONNECT_TIMEOUT)
        try:
            async with self.session.request(
                method, url, json=body, params=params, ssl=self.tls, timeout=limits
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
