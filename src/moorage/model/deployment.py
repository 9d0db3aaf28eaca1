"""Deployments: the move of a service from one revision to the next, health-gated.

    running ──▶ successful                        every new task healthy for min_healthy_time, old gone
        │
        └──▶ failed ──(auto_rollback)──▶ a rollback deployment back to the last stable revision
                                          (status of the failed one: rolled_back)
        └──▶ superseded                   a newer deployment of the same service took over

The reconciler moves deployments forward; it keeps everything it decides in this record, so a
restarted server resumes a deployment where it was.
"""

from __future__ import annotations

import math
from enum import StrEnum
from typing import Literal

from pydantic import BaseModel, ConfigDict, Field


class DeploymentStatus(StrEnum):
    RUNNING = "running"
    SUCCESSFUL = "successful"
    FAILED = "failed"
    ROLLED_BACK = "rolled_back"
    SUPERSEDED = "superseded"

    @property
    def done(self) -> bool:
        return self != DeploymentStatus.RUNNING


class Deployment(BaseModel):
    model_config = ConfigDict(extra="ignore")

    id: str
    service: str
    family: str
    from_revision: int | None  # what served before (None for a first deploy)
    to_revision: int
    strategy: Literal["rolling", "blue_green"] = "rolling"
    count: int
    min_healthy_percent: int = 100
    max_percent: int = 200
    min_healthy_time: float = 10.0
    progress_deadline: float = 600.0
    auto_rollback: bool = True
    rollback_of: str | None = None  # set on the deployment that rolls back a failed one
    # Why old tasks stop before new ones start (a single-writer volume); "" when they need not.
    stop_first: str = ""
    status: DeploymentStatus = DeploymentStatus.RUNNING
    message: str = ""
    healthy: int = 0  # new tasks healthy for at least min_healthy_time
    placed: int = 0  # new tasks created
    old_remaining: int = 0
    failures: list[str] = Field(default_factory=list)  # "<task id>:<generation>" that failed
    created_at: float = 0.0
    progress_at: float = 0.0  # last time `healthy` went up (the progress deadline counts from it)
    updated_at: float = 0.0
    finished_at: float | None = None

    @property
    def failure_threshold(self) -> int:
        """ECS's circuit breaker: max(3, min(200, ceil(0.5 * count))) failed tasks."""
        return max(3, min(200, math.ceil(0.5 * self.count)))

    def describe(self) -> str:
        base = f"revision {self.to_revision}: {self.healthy}/{self.count} healthy"
        if self.old_remaining:
            base += f", {self.old_remaining} old remaining"
        if self.failures:
            base += f", {len(self.failures)} failed (limit {self.failure_threshold})"
        return base
