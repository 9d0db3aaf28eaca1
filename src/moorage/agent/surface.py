"""What the agent's own HTTP side reads of the agent: a narrow view, so that agent/http.py and
agent/snapshots.py never import the agent (and the agent imports them)."""

from __future__ import annotations

from collections.abc import Mapping
from pathlib import Path
from typing import Any, Protocol

from aiohttp import web

from moorage.volumes import Layout

from .runner import TaskRunner


class LocalAgent(Protocol):
    @property
    def name(self) -> str:
        """The node's name."""
        ...

    @property
    def runners(self) -> Mapping[str, TaskRunner]:
        """The tasks this agent runs, by id."""
        ...

    @property
    def volume_layout(self) -> Layout:
        """Where volumes, their images and snapshots live on this node."""
        ...

    @property
    def docker(self) -> Any | None:
        """The Docker Engine client (aiodocker) when this node runs Docker, else None."""
        ...

    def task_dir(self, task_id: str) -> Path:
        """A task's directory: its logs, its workdirs, its scope: task volumes."""
        ...

    async def exec_env(self, runner: TaskRunner, container: str) -> dict[str, str]:
        """The environment an exec into the container gets."""
        ...


AGENT_KEY: web.AppKey[LocalAgent] = web.AppKey("agent", LocalAgent)  # the app's agent
