"""How an agent's report changes a task, and which events it produces: a pure function."""

from __future__ import annotations

from moorage.model import Task, TaskStatus
from moorage.state.writer import new_event
from moorage.store import Put

from .views import TaskReport


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
