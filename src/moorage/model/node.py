"""Nodes: machines running an agent, with resources and attributes for placement.

A node's state has two independent halves, as in Nomad:

- **liveness** (`status`): `ready` while it heartbeats, `down` once it missed them beyond its
  TTL. Only heartbeats and registrations (ready) and the liveness loop (down) change it.
- **scheduling** (`eligibility`, `drain_deadline`): a drain makes the node `ineligible` (no new
  placements) and sets the deadline by which its tasks are moved away; only `moorage node
  eligible` undoes both. Liveness never touches them, so a drained node that goes down and
  comes back is still drained.

The transitions are the pure functions below; the API applies them by CAS.
"""

from __future__ import annotations

from enum import StrEnum
from typing import Any

from pydantic import BaseModel, ConfigDict, Field, model_validator


class NodeStatus(StrEnum):
    """Liveness, decided by heartbeats alone."""

    READY = "ready"
    DOWN = "down"


class Eligibility(StrEnum):
    """Whether the scheduler may place new tasks on the node."""

    ELIGIBLE = "eligible"
    INELIGIBLE = "ineligible"


class Node(BaseModel):
    model_config = ConfigDict(extra="ignore")

    name: str = Field(pattern=r"^[a-z0-9]([a-z0-9.-]{0,61}[a-z0-9])?$")
    address: str = "127.0.0.1"
    agent_addr: str = ""
    cpu: int = Field(gt=0)  # CPU units, 1024 per core
    memory: int = Field(gt=0)  # MiB
    attrs: dict[str, str] = Field(default_factory=dict)
    drivers: list[str] = Field(default_factory=lambda: ["process"])
    # What the operator let this node's tasks use: directories (`--host-volume NAME=PATH`) and
    # privileged containers (`--allow-privileged`); the scheduler places only what fits.
    host_volumes: dict[str, str] = Field(default_factory=dict)
    privileged: bool = False
    port_range: tuple[int, int] = (20000, 32000)
    status: NodeStatus = NodeStatus.READY
    eligibility: Eligibility = Eligibility.ELIGIBLE
    registered_at: float = 0.0
    heartbeat_at: float = 0.0
    cgroups: str = "none"  # "v1", "v2" or "none": whether memory limits are enforced there
    # Set by a drain, cleared only by `node eligible`: when the tasks still there are stopped.
    drain_deadline: float | None = None

    @model_validator(mode="before")
    @classmethod
    def _legacy_draining(cls, data: Any) -> Any:
        """Records written before liveness and eligibility were apart said `draining` in
        `status`, or `ready` with a deadline (a drain a heartbeat had cancelled halfway)."""
        if not isinstance(data, dict) or "eligibility" in data:
            return data
        if data.get("status") == "draining":
            data = {**data, "status": NodeStatus.READY.value}
        if data.get("drain_deadline") is not None:
            data = {**data, "eligibility": Eligibility.INELIGIBLE.value}
        return data

    @property
    def draining(self) -> bool:
        """Its tasks are being moved away (until `node eligible`, whatever its liveness)."""
        return self.drain_deadline is not None

    @property
    def schedulable(self) -> bool:
        """New tasks may be placed here: alive and eligible."""
        return self.status == NodeStatus.READY and self.eligibility == Eligibility.ELIGIBLE

    @property
    def state(self) -> str:
        """One word for messages: down, draining, ineligible or ready (liveness first)."""
        if self.status == NodeStatus.DOWN:
            return "down"
        if self.draining:
            return "draining"
        if self.eligibility == Eligibility.INELIGIBLE:
            return "ineligible"
        return "ready"


def registered(current: Node | None, incoming: Node, now: float) -> Node:
    """What an agent's (re-)registration stores: the facts it reports, alive; the scheduling
    state is the servers' (a new node is eligible, a known one keeps its drain)."""
    decided = current or Node(name=incoming.name, cpu=1, memory=1, registered_at=now)
    return incoming.model_copy(
        update={
            "status": NodeStatus.READY,
            "registered_at": decided.registered_at,
            "heartbeat_at": now,
            "eligibility": decided.eligibility,
            "drain_deadline": decided.drain_deadline,
        }
    )


def back(current: Node, now: float) -> Node:
    """A heartbeat from a node marked down: alive again, still drained if it was."""
    return current.model_copy(update={"status": NodeStatus.READY, "heartbeat_at": now})


def gone_down(current: Node) -> Node:
    """Missed heartbeats beyond the TTL: down, its scheduling state untouched."""
    return current.model_copy(update={"status": NodeStatus.DOWN})


def drained(current: Node, deadline: float) -> Node:
    """`node drain`: no new placements, and the tasks leave by `deadline`."""
    return current.model_copy(
        update={"eligibility": Eligibility.INELIGIBLE, "drain_deadline": deadline}
    )


def made_eligible(current: Node) -> Node:
    """`node eligible`: takes tasks again once alive; the drain, if any, ends."""
    return current.model_copy(update={"eligibility": Eligibility.ELIGIBLE, "drain_deadline": None})
