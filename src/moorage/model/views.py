"""Request and response bodies of the HTTP API that are not stored objects themselves.

The server's operations return them and its handlers encode them; the OpenAPI document is
generated from them, so the API's published shapes are these classes.
"""

from __future__ import annotations

from pydantic import BaseModel, ConfigDict, Field

from .duration import Duration
from .service import Service
from .task import Health, Task, TaskStatus
from .taskdef import TaskDefinition


class Body(BaseModel):
    model_config = ConfigDict(extra="forbid")


class ServiceSummary(BaseModel):
    name: str
    revision: int
    status: str
    desired: int
    running: int
    healthy: int
    pending: int
    restarts: int
    deployment: str  # the latest deployment: "running 2/3", "successful", "rolled_back"...
    message: str = ""


class DeployResult(BaseModel):
    service: str
    revision: int
    created: bool  # False when the spec matched the latest revision (nothing new registered)
    count: int
    deployment: str | None = None  # the deployment this started (None: nothing to roll out)
    stop_first: str = ""  # why its old tasks stop before new ones start (single-writer volume)


class RebalanceMove(BaseModel):
    model_config = ConfigDict(validate_by_name=True, serialize_by_alias=True)

    task: str
    from_node: str = Field(alias="from", description="the node the task leaves")


class RebalanceResult(BaseModel):
    service: str
    moves: list[RebalanceMove]
    current: dict[str, int] = Field(description="tasks per node now")
    target: dict[str, int] = Field(description="tasks per node once the moves are done")
    message: str = ""


class ScaleBody(Body):
    count: int = Field(ge=0, le=10000)


class ImagesBody(Body):
    images: dict[str, str] = Field(min_length=1, description="container name -> image")


class DrainBody(Body):
    deadline: Duration = Field(default=3600.0, description="stop what is left after this long")
    spot_notice: bool = Field(
        default=False, description="a spot interruption notice: a 2-minute deadline"
    )


class RollbackBody(Body):
    to: int | None = Field(default=None, ge=1, description="revision; default: the last stable one")


class TtlUpdate(Body):
    status: Health
    output: str = Field(default="", max_length=4096)


class ServiceDetail(BaseModel):
    service: Service
    summary: ServiceSummary
    taskdef: TaskDefinition | None


class StatusInfo(BaseModel):
    version: str
    leader: str
    revision: int
    store: str
    nodes: int
    services: int
    tasks: int


def summarize(
    name: str, status: str, revision: int, count: int, tasks: list[Task]
) -> ServiceSummary:
    live = [t for t in tasks if t.live]
    running = [t for t in live if t.status == TaskStatus.RUNNING]
    healthy = [t for t in running if t.healthy]
    pending = [t for t in live if t.status == TaskStatus.PENDING]
    replacing = any(t.revision != revision for t in live)
    return ServiceSummary(
        name=name,
        revision=revision,
        status=status,
        desired=count if status == "active" else 0,
        running=len(running),
        healthy=len(healthy),
        pending=len(pending),
        restarts=sum(t.restarts for t in tasks),
        deployment="replacing" if replacing else "stable",
        message=pending[0].message if pending else "",
    )
