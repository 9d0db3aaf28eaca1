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


class UserEvent(BaseModel):
    """An event fired by a user (`moorage event fire`), Consul's way: a name and a small payload
    that agents can react to with a handler command (seed 002's event-based configuration)."""

    model_config = ConfigDict(extra="ignore")

    id: str
    name: str
    payload: bytes = b""
    node_filter: str = ""  # a regular expression on node names ("" = every node)
    service_filter: str = ""  # only nodes running a task of this service
    tag_filter: str = ""
    ltime: int = 0  # the store revision it was written at (filled on read): a Lamport time
    time: float = 0.0
