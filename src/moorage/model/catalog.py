"""The service catalog: instances of discoverable services, as DNS and the Consul API see them.

An instance is a running task of a service with a `discovery` block (or a service registered
from outside through the Consul-compatible API). Its status is the worst of its checks, Consul's
way: `passing`, `warning` (still answered by DNS) or `critical` (left out).
"""

from __future__ import annotations

from pydantic import BaseModel, ConfigDict, Field

from .task import Health


class InstanceCheck(BaseModel):
    model_config = ConfigDict(extra="ignore", frozen=True)

    id: str
    name: str
    status: Health
    output: str = ""
    kind: str = ""  # http, tcp, command, ttl, node


class Instance(BaseModel):
    """One address:port of a discoverable service."""

    model_config = ConfigDict(extra="ignore", frozen=True)

    id: str  # the task id (or the registration's id)
    name: str  # the discovery name (DNS label)
    service: str  # the moorage service it belongs to ("" for an external registration)
    node: str
    address: str
    port: int = 0
    tags: tuple[str, ...] = ()
    meta: dict[str, str] = Field(default_factory=dict)
    checks: tuple[InstanceCheck, ...] = ()
    create_index: int = 1
    modify_index: int = 1

    @property
    def status(self) -> Health:
        """The worst of the checks; an instance without checks is passing."""
        if not self.checks:
            return Health.PASSING
        return max((c.status for c in self.checks), key=lambda h: h.rank)
