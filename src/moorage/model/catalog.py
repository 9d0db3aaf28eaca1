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


class RegisteredCheck(BaseModel):
    """A check of an externally registered service, run by the agent of its node (TTL checks
    are set through the API and turn critical when not refreshed within `ttl`)."""

    model_config = ConfigDict(extra="ignore")

    id: str
    name: str
    kind: str  # http, tcp, command, ttl
    target: str = ""  # the URL (http) or host:port (tcp)
    args: list[str] = Field(default_factory=list)  # command
    interval: float = 10.0
    timeout: float = 2.0
    ttl: float = 0.0
    status: Health = Health.CRITICAL
    output: str = ""
    notes: str = ""
    updated_at: float = 0.0


class Registration(BaseModel):
    """A service registered from outside (Consul's /v1/agent/service/register)."""

    model_config = ConfigDict(extra="ignore")

    id: str
    name: str
    node: str
    address: str = ""
    port: int = 0
    tags: list[str] = Field(default_factory=list)
    meta: dict[str, str] = Field(default_factory=dict)
    checks: list[RegisteredCheck] = Field(default_factory=list)
    created_at: float = 0.0
