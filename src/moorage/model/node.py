"""Nodes: machines running an agent, with resources and attributes for placement."""

from __future__ import annotations

from enum import StrEnum

from pydantic import BaseModel, ConfigDict, Field


class NodeStatus(StrEnum):
    READY = "ready"
    DOWN = "down"
    DRAINING = "draining"


class Node(BaseModel):
    model_config = ConfigDict(extra="ignore")

    name: str = Field(pattern=r"^[a-z0-9]([a-z0-9.-]{0,61}[a-z0-9])?$")
    address: str = "127.0.0.1"
    agent_addr: str = ""
    cpu: int = Field(gt=0)  # CPU units, 1024 per core
    memory: int = Field(gt=0)  # MiB
    attrs: dict[str, str] = Field(default_factory=dict)
    drivers: list[str] = Field(default_factory=lambda: ["process"])
    port_range: tuple[int, int] = (20000, 32000)
    status: NodeStatus = NodeStatus.READY
    registered_at: float = 0.0
    heartbeat_at: float = 0.0
    cgroups: str = "none"  # "v1", "v2" or "none": whether memory limits are enforced there
    drain_deadline: float | None = None  # while draining: when the last tasks are stopped anyway
