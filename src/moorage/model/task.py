"""Tasks: one placed instance of a task definition on a node.

Two writers share a task record, always by compare-and-swap on its revision:
the server owns `desired`, `node`, `ports`, `generation`, `not_before`, `restarts` and `migrate`;
the node's agent owns `status`, `exit_code`, `containers`, `pid`s and timestamps.
"""

from __future__ import annotations

from enum import StrEnum

from pydantic import BaseModel, ConfigDict, Field


class Desired(StrEnum):
    RUN = "run"
    STOP = "stop"


class TaskStatus(StrEnum):
    PENDING = "pending"  # not placed yet (message says why)
    ASSIGNED = "assigned"  # placed on a node, the agent has not started it yet
    STARTING = "starting"
    RUNNING = "running"
    EXITED = "exited"  # a process ended (exit code 0 or not) while desired run
    FAILED = "failed"  # could not start, or restart attempts exhausted
    STOPPED = "stopped"  # stopped on purpose (desired stop)
    LOST = "lost"  # its node went away or the agent cannot find it any more

    @property
    def terminal(self) -> bool:
        return self in (TaskStatus.EXITED, TaskStatus.FAILED, TaskStatus.STOPPED, TaskStatus.LOST)

    @property
    def active(self) -> bool:
        return self in (TaskStatus.ASSIGNED, TaskStatus.STARTING, TaskStatus.RUNNING)


class Health(StrEnum):
    """A check's state, as Consul's: warning still serves, critical does not."""

    PASSING = "passing"
    WARNING = "warning"
    CRITICAL = "critical"

    @property
    def rank(self) -> int:
        return {"passing": 0, "warning": 1, "critical": 2}[self.value]


class CheckState(BaseModel):
    """The last result of one container's health check."""

    model_config = ConfigDict(extra="ignore")

    container: str
    kind: str  # http, tcp, command, ttl
    status: Health = Health.CRITICAL  # critical until the first pass, as in Consul
    output: str = ""
    failing: bool = False  # failed `retries` times in a row after the start period
    updated_at: float = 0.0


class ContainerState(BaseModel):
    model_config = ConfigDict(extra="ignore")

    name: str
    status: TaskStatus = TaskStatus.PENDING
    pid: int | None = None
    exit_code: int | None = None
    started_at: float | None = None
    finished_at: float | None = None
    message: str = ""
    memory_enforced: bool | None = None


class Task(BaseModel):
    model_config = ConfigDict(extra="ignore")

    id: str
    service: str
    family: str
    revision: int
    node: str | None = None
    desired: Desired = Desired.RUN
    status: TaskStatus = TaskStatus.PENDING
    message: str = ""
    cpu: int = 0
    memory: int = 0
    ports: dict[str, int] = Field(default_factory=dict)
    generation: int = 0  # bumped by the server to ask the agent for a restart in place
    run_generation: int = -1  # the generation the agent last started
    restarts: int = 0
    restart_window_start: float = 0.0
    restarts_in_window: int = 0
    not_before: float = 0.0
    exit_code: int | None = None
    containers: list[ContainerState] = Field(default_factory=list)
    created_at: float = 0.0
    started_at: float | None = None
    finished_at: float | None = None
    updated_at: float = 0.0
    # Health: None when the task has no checks (then running counts as healthy).
    health: Health | None = None
    checks: list[CheckState] = Field(default_factory=list)
    healthy_since: float | None = None  # set by the server when the task turned healthy
    ttl: dict[str, CheckState] = Field(default_factory=dict)  # TTL check updates, by container
    deployment: str | None = None  # the deployment that created this task
    # Set by `service rebalance`: replace this task on another node, then stop it (as a drain
    # does, keeping the service at min_healthy_percent; no deadline).
    migrate: bool = False

    @property
    def healthy(self) -> bool:
        """Running, and every check passing (or no checks)."""
        return self.status == TaskStatus.RUNNING and self.health in (None, Health.PASSING)

    @property
    def taskdef_ref(self) -> str:
        return f"{self.family}:{self.revision}"

    @property
    def live(self) -> bool:
        """Counts toward the service's count: wanted, and not dead."""
        return self.desired == Desired.RUN and self.status not in (
            TaskStatus.FAILED,
            TaskStatus.STOPPED,
            TaskStatus.LOST,
        )
