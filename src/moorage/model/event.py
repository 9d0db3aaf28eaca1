"""Cluster events: what happened, to what, and why, in one line each."""

from __future__ import annotations

from pydantic import BaseModel, ConfigDict


class Event(BaseModel):
    model_config = ConfigDict(extra="ignore")

    id: str
    time: float
    type: str  # dotted: task.started, task.restarted, task.unplaced, service.deployed, node.registered
    message: str
    service: str | None = None
    task: str | None = None
    node: str | None = None
    revision: int = 0  # the store revision at which it was written (filled on read)
