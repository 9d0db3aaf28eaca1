"""What agents and servers say to each other: one class per message, used on both sides.

    agent ── PUT  /v1/nodes/<name>                 Node              ──▶ server
          ◀─ POST /v1/nodes/<name>/heartbeat       HeartbeatAnswer   ──
          ── PUT  /v1/tasks/<id>/status            TaskReport        ──▶
          ◀─ GET  /v1/tasks/<id>/secrets           TaskSecrets       ──
          ── POST /v1/volumes/<v>/claim|renew|release  GrantBody (model.volume) ──▶
          ── PUT  /v1/registrations/<id>/checks/<c>    CheckReport   ──▶
          ── POST /v1/metrics/ingest               Batch (moorage.metrics.model) ──▶

The agent builds these objects and sends their JSON; the server parses the body with the same
class (`validate_body`), so a field renamed on one side is renamed on the other.
"""

from __future__ import annotations

from pydantic import BaseModel, ConfigDict, Field, RootModel

from .task import CheckState, ContainerState, Health, TaskStatus


class Message(BaseModel):
    model_config = ConfigDict(extra="forbid")


class TaskReport(Message):
    """What an agent reports about one task it runs."""

    status: TaskStatus
    message: str = ""
    exit_code: int | None = None
    containers: list[ContainerState] = Field(default_factory=list)
    started_at: float | None = None
    finished_at: float | None = None
    run_generation: int = Field(ge=0)
    health: Health | None = None
    checks: list[CheckState] = Field(default_factory=list)


class HeartbeatAnswer(Message):
    """The server's answer to a heartbeat: how often it wants them, and the node's TTL."""

    interval: float = Field(gt=0)
    ttl: float = Field(gt=0)


class CheckReport(Message):
    """An agent's result of one check of a service registered from outside."""

    status: Health
    output: str = ""


class TaskSecrets(RootModel[dict[str, dict[str, str]]]):
    """The secret values of a task's containers: container → {ENV: value}."""
