"""A controller's plan: the writes and events one decision produces (applied by apply.py)."""

from __future__ import annotations

import random
from dataclasses import dataclass, field

from moorage.model import Deployment, Desired, Node, Service, Task, TaskStatus


@dataclass(frozen=True)
class EventSpec:
    type: str
    message: str
    service: str | None = None
    task: str | None = None
    node: str | None = None


@dataclass
class Plan:
    """Task writes (new value, the task as read, or None when creating) and events to record;
    deployment, service and node writes; and `guards`: store keys that must not have moved
    since the snapshot the plan was decided on (the plan is void if one did)."""

    writes: dict[str, tuple[Task, Task | None]] = field(default_factory=dict)
    events: list[EventSpec] = field(default_factory=list)
    deployments: dict[str, tuple[Deployment, Deployment | None]] = field(default_factory=dict)
    services: dict[str, tuple[Service, Service]] = field(default_factory=dict)
    nodes: dict[str, tuple[Node, Node]] = field(default_factory=dict)
    guards: list[str] = field(default_factory=list)

    def write(self, new: Task, old: Task | None) -> None:
        base = self.writes[new.id][1] if new.id in self.writes else old
        self.writes[new.id] = (new, base)

    def drop(self, task_id: str) -> None:
        """Forget a task this plan creates (it is never written)."""
        _new, old = self.writes.pop(task_id)
        assert old is None, "only a task this plan creates can be dropped"

    def current(self, task: Task) -> Task:
        """The task as this plan will leave it (plans build on their own earlier decisions)."""
        pending = self.writes.get(task.id)
        return pending[0] if pending else task

    def write_deployment(self, new: Deployment, old: Deployment | None) -> None:
        base = self.deployments[new.id][1] if new.id in self.deployments else old
        self.deployments[new.id] = (new, base)

    def write_service(self, new: Service, old: Service) -> None:
        base = self.services[new.name][1] if new.name in self.services else old
        self.services[new.name] = (new, base)

    def write_node(self, new: Node, old: Node) -> None:
        base = self.nodes[new.name][1] if new.name in self.nodes else old
        self.nodes[new.name] = (new, base)

    def event(
        self,
        type_: str,
        message: str,
        service: str | None = None,
        task: str | None = None,
        node: str | None = None,
    ) -> None:
        self.events.append(EventSpec(type_, message, service, task, node))

    @property
    def empty(self) -> bool:
        return not (self.writes or self.events or self.deployments or self.services or self.nodes)


def create_task(
    plan: Plan,
    service: Service,
    revision: int,
    now: float,
    rng: random.Random,
    not_before: float = 0.0,
    deployment: str | None = None,
) -> Task:
    new = Task(
        id=f"{service.name}-{rng.getrandbits(48):012x}",
        service=service.name,
        family=service.family,
        revision=revision,
        created_at=now,
        updated_at=now,
        generation=0,
        not_before=not_before,
        deployment=deployment,
    )
    plan.write(new, None)
    return new


def stop_task(plan: Plan, task: Task, reason: str) -> None:
    update: dict[str, object] = {"desired": Desired.STOP, "message": reason}
    if task.node is None or task.status.terminal:
        update["status"] = TaskStatus.STOPPED  # nothing runs it: stopping is immediate
    plan.write(task.model_copy(update=update), task)
