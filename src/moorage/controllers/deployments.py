"""One step of a deployment, decided by the reconciler: pure, level-triggered, resumable.

    rolling      start new tasks while old + new ≤ count x max_percent; stop old tasks while the
                 healthy ones (old healthy + new healthy for min_healthy_time) stay ≥
                 count x min_healthy_percent (ECS semantics: max rounded down, min rounded up)
    blue_green   start the whole new set; once all of it is healthy, stop the whole old set

    circuit breaker: max(3, min(200, ceil(0.5 x count))) failed new tasks (exits, failed starts,
                     checks failing after their retries), or no progress within progress_deadline
    on failure:      auto_rollback (the default) starts a deployment back to the last stable
                     revision — whose tasks still serve, so it completes at once; without it the
                     deployment is failed and both sets are left as they are

Everything the step decides is written into the deployment record (counts, failures, progress
time), so a server restarted half-way resumes from the store.
"""

from __future__ import annotations

import math
import random

from moorage.model import Deployment, DeploymentStatus, Desired, Service, Task, TaskStatus

from .plan import EventSpec, Plan, create_task, stop_task


def step(
    plan: Plan,
    service: Service,
    deployment: Deployment,
    tasks: list[Task],
    now: float,
    rng: random.Random,
) -> None:
    if deployment.status != DeploymentStatus.RUNNING:
        return  # failed without rollback: both sets are left as they are
    d = deployment
    count = service.count
    live = [t for t in tasks if t.live]
    new = [t for t in live if t.revision == d.to_revision]
    old = [t for t in live if t.revision != d.to_revision]

    failures = _failures(plan, d, tasks)
    healthy_new = [t for t in new if _settled(t, d, now)]
    healthy_old = [t for t in old if t.healthy]
    progress_at = d.progress_at if len(healthy_new) <= d.healthy else now

    if len(failures) >= d.failure_threshold:
        reason = f"{len(failures)} new tasks failed (limit {d.failure_threshold})"
        _fail(plan, service, d, reason, failures, now, rng)
        return
    if now - progress_at > d.progress_deadline and len(healthy_new) < count:
        reason = f"no progress within the progress deadline ({d.progress_deadline:g}s)"
        _fail(plan, service, d, reason, failures, now, rng)
        return

    # Extra new tasks (the count went down mid-deployment): unhealthy and newest go first.
    for task in sorted(new, key=lambda t: (t.healthy, -t.created_at))[: max(len(new) - count, 0)]:
        stop_task(plan, task, f"scaled down to {count}")
        new.remove(task)
        if task in healthy_new:
            healthy_new.remove(task)

    # Stop-first (a single-writer volume): no surge, and no minimum to keep while replacing.
    policy = (
        d.model_copy(update={"strategy": "rolling", "min_healthy_percent": 0, "max_percent": 100})
        if d.stop_first
        else d
    )
    stopped_old = _stop_old(plan, policy, count, old, healthy_old, healthy_new)
    # Old tasks told to stop still serve until their agent reports them stopped: the deployment
    # is done once they are gone, so the two sets never outlive it.
    draining = sum(
        1
        for t in map(plan.current, tasks)
        if t.revision != d.to_revision
        and t.desired == Desired.STOP
        and t.node is not None
        and not t.status.terminal
    )
    old_left = len(old) - len(stopped_old)
    if d.stop_first:
        old_left += draining  # a replacement is created once the old task is gone
    healthy_old_left = len(healthy_old) - sum(1 for t in stopped_old if t.healthy)
    started = _start_new(
        plan,
        service,
        policy,
        count,
        len(new),
        old_left,
        healthy_old_left,
        len(healthy_new),
        now,
        rng,
    )
    placed = len(new) + started
    old_left = len(old) - len(stopped_old) + draining
    done = len(healthy_new) == count and len(new) == count and old_left == 0
    update: dict[str, object] = {
        "count": count,
        "healthy": len(healthy_new),
        "placed": placed,
        "old_remaining": old_left,
        "failures": failures,
        "progress_at": progress_at,
    }
    if done:
        update |= {
            "status": DeploymentStatus.SUCCESSFUL,
            "message": f"revision {d.to_revision} serving: {count}/{count} healthy",
            "finished_at": now,
        }
    changed = d.model_copy(update=update)
    if changed == d:
        return
    plan.write_deployment(changed.model_copy(update={"updated_at": now}), d)
    if done:
        plan.write_service(service.model_copy(update={"stable_revision": d.to_revision}), service)
        plan.events.append(
            EventSpec("deployment.successful", f"{d.id}: {changed.message}", service.name)
        )
    elif (changed.healthy, changed.old_remaining, len(changed.failures)) != (
        d.healthy,
        d.old_remaining,
        len(d.failures),
    ):
        plan.events.append(
            EventSpec("deployment.progress", f"{d.id}: {changed.describe()}", service.name)
        )


def _settled(task: Task, d: Deployment, now: float) -> bool:
    """Healthy, and for at least min_healthy_time (Nomad's rule): counts toward progress."""
    return (
        task.healthy
        and task.healthy_since is not None
        and now - task.healthy_since >= d.min_healthy_time
    )


def _failures(plan: Plan, d: Deployment, tasks: list[Task]) -> list[str]:
    """Every failed run of a new task, once: exits, failed starts, checks failing for good.

    A new task whose checks fail is restarted in place (a fresh run may pass); the failed run
    is counted.
    """
    failures = list(d.failures)
    seen = set(failures)
    for task in tasks:
        if task.deployment != d.id:
            continue
        task = plan.current(task)
        keys = []
        if task.status == TaskStatus.FAILED:
            keys.append(f"{task.id}:failed")
        elif task.status in (TaskStatus.EXITED, TaskStatus.LOST):
            keys.append(f"{task.id}:{task.run_generation}")
        elif task.status == TaskStatus.RUNNING and any(c.failing for c in task.checks):
            keys.append(f"{task.id}:{task.run_generation}:unhealthy")
            if task.generation == task.run_generation and task.desired == Desired.RUN:
                plan.write(
                    task.model_copy(
                        update={
                            "generation": task.generation + 1,
                            "restarts": task.restarts + 1,
                            "message": "restarted: its health check kept failing",
                        }
                    ),
                    task,
                )
        for key in keys:
            if key not in seen:
                seen.add(key)
                failures.append(key)
    return failures


def _stop_old(
    plan: Plan,
    d: Deployment,
    count: int,
    old: list[Task],
    healthy_old: list[Task],
    healthy_new: list[Task],
) -> list[Task]:
    """Stop old tasks without letting the healthy ones drop below the minimum."""
    if d.strategy == "blue_green":
        victims = list(old) if len(healthy_new) >= count else []
    else:
        min_healthy = math.ceil(count * d.min_healthy_percent / 100)
        spare = len(healthy_old) + len(healthy_new) - min_healthy
        unhealthy = [t for t in old if not t.healthy]  # serve nothing: free to go
        victims = unhealthy + sorted(healthy_old, key=lambda t: t.created_at)[: max(spare, 0)]
    for task in victims:
        stop_task(plan, task, f"replaced by revision {d.to_revision} ({d.id})")
    return victims


def _start_new(
    plan: Plan,
    service: Service,
    d: Deployment,
    count: int,
    have: int,
    old_left: int,
    healthy_old: int,
    healthy_new: int,
    now: float,
    rng: random.Random,
) -> int:
    """Create new tasks within the surge allowance; return how many."""
    wanted = count - have
    if wanted <= 0:
        return 0
    if d.strategy == "blue_green":
        room = wanted
    else:
        max_total = max(count * d.max_percent // 100, count)
        room = min(wanted, max_total - old_left - have)
        min_healthy = math.ceil(count * d.min_healthy_percent / 100)
        stuck = room <= 0 and healthy_old + healthy_new <= min_healthy and have == healthy_new
        stuck = stuck and not d.stop_first  # stop-first never surges
        if stuck:
            room = 1  # max_percent leaves no room and nothing may stop: surge by one task
    for _ in range(max(room, 0)):
        create_task(plan, service, d.to_revision, now, rng, deployment=d.id)
    return max(room, 0)


def _fail(
    plan: Plan,
    service: Service,
    d: Deployment,
    reason: str,
    failures: list[str],
    now: float,
    rng: random.Random,
) -> None:
    target = service.stable_revision
    if target is None or target == d.to_revision:
        target = d.from_revision
    rollback = d.auto_rollback and d.rollback_of is None and target is not None
    status = DeploymentStatus.ROLLED_BACK if rollback else DeploymentStatus.FAILED
    message = reason + (f"; rolling back to revision {target}" if rollback else "")
    failed = d.model_copy(
        update={
            "status": status,
            "message": message,
            "failures": failures,
            "finished_at": now,
            "updated_at": now,
        }
    )
    plan.write_deployment(failed, d)
    plan.events.append(EventSpec("deployment.failed", f"{d.id}: {message}", service.name))
    if not rollback or target is None:
        return
    back = Deployment(
        id=f"{service.name}-{target}-{rng.getrandbits(24):06x}",
        service=service.name,
        family=service.family,
        from_revision=d.to_revision,
        to_revision=target,
        strategy="rolling",
        count=service.count,
        min_healthy_percent=d.min_healthy_percent,
        max_percent=d.max_percent,
        min_healthy_time=0.0,  # the old tasks have proven themselves already
        progress_deadline=d.progress_deadline,
        auto_rollback=False,
        rollback_of=d.id,
        stop_first=d.stop_first,
        created_at=now,
        progress_at=now,
        updated_at=now,
    )
    plan.write_deployment(back, None)
    plan.write_service(
        service.model_copy(
            update={"revision": target, "deployment_id": back.id, "updated_at": now}
        ),
        service,
    )
    plan.events.append(
        EventSpec(
            "deployment.rollback",
            f"{back.id}: rolling {service.name} back to revision {target}",
            service.name,
        )
    )
