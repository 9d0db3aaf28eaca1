"""What the operations need of the nodes' agents: one call, made by the server's relay.

    operation ── AgentCalls.call(node, method, path) ──▶ the node's agent (server/agents.py
                                                         carries it over HTTP with the join token)

An agent's error answer becomes the moorage error of its status. A call that fails is one of:

    AgentUnreachable   never sent (no address, connection refused or timed out): the agent
                       did nothing
    AgentLost          sent, but no answer came back: the agent may or may not have acted
"""

from __future__ import annotations

from typing import Any, Protocol

from moorage.model import Unavailable


class AgentUnreachable(Unavailable):
    """The call never reached the agent: nothing was done there."""


class AgentLost(Unavailable):
    """The call was sent and no answer came: whether the agent acted is unknown."""


class AgentCalls(Protocol):
    async def call(
        self,
        node: str,
        method: str,
        path: str,
        body: Any = None,
        params: dict[str, str] | None = None,
        timeout: float = 60.0,
    ) -> Any:
        """One JSON call to a node's agent; its answer, or its error as a moorage error.
        Raises AgentUnreachable or AgentLost as above; returns or fails within `timeout`
        seconds (AgentLost: the agent may have acted)."""
        ...


class NoAgents:
    """For a server that reaches no agent: every call is unreachable."""

    async def call(
        self,
        node: str,
        method: str,
        path: str,
        body: Any = None,
        params: dict[str, str] | None = None,
        timeout: float = 60.0,
    ) -> Any:
        raise AgentUnreachable("this server cannot call agents (no relay configured)")
