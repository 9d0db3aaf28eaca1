"""Tasks: what agents report about them, and the TTL checks users set.

report(id, TaskReport)   ─▶ apply_report: the pure rule for how a report changes a task
                            and which events it records (a stale generation is ignored)
update_ttl(id, container, TtlUpdate) ─▶ the check's state; it turns critical when not set
                                        again within its ttl (the agent watches that)
"""

from __future__ import annotations

from collections.abc import Callable

from moorage.model import (
    CheckState,
    FieldError,
    Forbidden,
    NotFound,
    SpecError,
    Task,
    TaskStatus,
    Unavailable,
)
from moorage.model.messages import TaskReport
from moorage.model.views import TtlUpdate
from moorage.state import StateCache, StateWriter, kinds, new_event
from moorage.store import Op, Put

TaskChange = tuple[Task | None, list[Op]]


class Tasks:
    def __init__(self, cache: StateCache, writer: StateWriter, clock: Callable[[], float]) -> None:
        self.cache = cache
        self.writer = writer
        self.clock = clock

    def get(self, task_id: str) -> Task:
        task = self.cache.tasks.get(task_id)
        if task is None:
            raise NotFound(f"no task {task_id!r}")
        return task

    def find(self, service: str | None = None, node: str | None = None) -> list[Task]:
        if service:
            return self.cache.tasks_of_service(service)
        if node:
            return self.cache.tasks_on_node(node)
        return sorted(self.cache.tasks.values(), key=lambda t: (t.service, t.created_at, t.id))

    def running(self, target: str) -> Task:
        """A running task to exec in: the task named, or the first running one of a service."""
        task = self.cache.tasks.get(target)
        if task is None:
            if target not in self.cache.services:
                raise NotFound(f"no task or service named {target!r}")
            running = [
                t for t in self.cache.tasks_of_service(target) if t.status == TaskStatus.RUNNING
            ]
            if not running:
                raise Unavailable(f"{target} has no running task")
            task = running[0]
        if task.status != TaskStatus.RUNNING or not task.node:
            raise Unavailable(f"task {task.id} is not running ({task.status})")
        return task

    def placed(self, task_id: str) -> Task:
        """A task that has a node (its logs are there)."""
        task = self.get(task_id)
        if task.node is None:
            raise Unavailable(f"task {task.id} is not placed yet: {task.message or 'pending'}")
        return task

    def placed_of_service(self, service: str) -> list[Task]:
        """The live tasks of a service that have a node."""
        if service not in self.cache.services:
            raise NotFound(f"no service named {service!r}")
        return [t for t in self.cache.tasks_of_service(service) if t.node and t.live]

    def agent_of(self, task: Task) -> str:
        """HOST:PORT of the agent that runs the task; Unavailable when unknown."""
        node = self.cache.nodes.get(task.node or "")
        if node is None or not node.agent_addr:
            raise Unavailable(f"the agent of node {task.node} is unknown")
        return node.agent_addr

    async def report(self, task_id: str, report: TaskReport, node: str | None = None) -> Task:
        """An agent's report; `node` is the reporting node (it reports only its own tasks)."""
        now = self.clock()

        def change(current: Task | None) -> TaskChange:
            if current is None:
                raise NotFound(f"no task {task_id!r}")
            if node is not None and current.node != node:
                raise Forbidden(f"task {task_id} is not on node {node}: it may not report it")
            task, events = apply_report(current, report, now)
            return task, list(events)

        return await self._update(task_id, change)

    async def update_ttl(self, task_id: str, container: str, body: TtlUpdate) -> Task:
        task = self.get(task_id)
        taskdef = self.cache.taskdefs.get((task.family, task.revision))
        spec = (
            next((c for c in taskdef.containers if c.name == container), None) if taskdef else None
        )
        if spec is None or spec.health is None or spec.health.ttl is None:
            raise SpecError(
                [FieldError("container", f"{container!r} has no TTL check in task {task_id}")]
            )
        now = self.clock()
        state = CheckState(
            container=container, kind="ttl", status=body.status, output=body.output, updated_at=now
        )

        def change(current: Task | None) -> TaskChange:
            if current is None:
                raise NotFound(f"no task {task_id!r}")
            return current.model_copy(update={"ttl": {**current.ttl, container: state}}), []

        return await self._update(task_id, change)

    async def _update(self, task_id: str, change: Callable[[Task | None], TaskChange]) -> Task:
        task = await self.writer.update(kinds.TASK, task_id, change)
        assert task is not None
        return task


def apply_report(task: Task, report: TaskReport, now: float) -> tuple[Task, list[Put]]:
    """The task after the report, and the events of its transition (none if nothing moved).

    A report about an older generation than the one the task last ran is stale: ignored.
    """
    if report.run_generation < task.run_generation:
        return task, []
    new = task.model_copy(
        update={
            "status": report.status,
            "message": report.message,
            "exit_code": report.exit_code,
            "containers": report.containers,
            "started_at": report.started_at if report.started_at is not None else task.started_at,
            "finished_at": report.finished_at,
            "run_generation": report.run_generation,
            "health": report.health,
            "checks": report.checks,
            "updated_at": now,
        }
    )
    restarted = task.run_generation != new.run_generation
    was_healthy = task.healthy and not restarted
    healthy_since = (task.healthy_since if was_healthy else now) if new.healthy else None
    new = new.model_copy(update={"healthy_since": healthy_since})
    moved = task.status != new.status or restarted
    events = _events(new, now) if moved else []
    if new.status == TaskStatus.STARTING and new.message and new.message != task.message:
        about = {"service": new.service, "task": new.id, "node": new.node}
        events.append(new_event("task.progress", f"task {new.id}: {new.message}", now=now, **about))
    # Health events mark changes of a running task's health: every fall (and a check giving up)
    # and every recovery, not the first results after a start (deployments report those).
    first_results = all(c.output == "waiting for the first check" for c in task.checks)
    gave_up = any(c.failing for c in new.checks) and not any(c.failing for c in task.checks)
    if (
        new.status == TaskStatus.RUNNING
        and not restarted
        and new.checks
        and ((new.health != task.health and not first_results) or gave_up)
    ):
        events.append(_health_event(new, now))
    return new, events


def _health_event(task: Task, now: float) -> Put:
    worst = max(task.checks, key=lambda c: c.status.rank)
    text = f"task {task.id} is {task.health}: {worst.container} {worst.kind} check: {worst.output}"
    about = {"service": task.service, "task": task.id, "node": task.node}
    return new_event("task.health", text[:500], now=now, **about)


def _events(task: Task, now: float) -> list[Put]:
    about = {"service": task.service, "task": task.id, "node": task.node}
    pids = ", ".join(f"{c.name} pid {c.pid}" for c in task.containers if c.pid)
    if task.status == TaskStatus.RUNNING:
        where = f" on {task.node}" + (f" ({pids})" if pids else "")
        return [new_event("task.started", f"task {task.id} running{where}", now=now, **about)]
    if task.status == TaskStatus.EXITED:
        detail = f"exit code {task.exit_code}" if task.exit_code is not None else "exited"
        if task.message:
            detail += f": {task.message}"
        return [new_event("task.exited", f"task {task.id} {detail}", now=now, **about)]
    if task.status == TaskStatus.FAILED:
        text = f"task {task.id} failed to start: {task.message or 'unknown error'}"
        return [new_event("task.failed", text, now=now, **about)]
    if task.status == TaskStatus.STOPPED:
        reason = f" ({task.message})" if task.message else ""
        return [new_event("task.stopped", f"task {task.id} stopped{reason}", now=now, **about)]
    return []
