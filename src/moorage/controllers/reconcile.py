"""The reconciler's decision: desired state (services) vs actual state (tasks, nodes) → a plan.

Pure: a snapshot and the time go in, a list of task writes and events comes out. Nothing is
read from a clock or a store here, so it is property-tested and benchmarked on its own.

    for each service ──▶ dead tasks retired ──▶ exits restarted in place (or failed, then replaced)
                    ├──▶ a running deployment: one step (deployments.py: rolling or blue/green,
                    │    health-gated, circuit breaker, rollback)
                    └──▶ otherwise count enforced (old revisions stopped, extras stopped, missing created;
                         tasks on draining nodes or flagged `migrate` replaced first, then stopped)
    all pending tasks ──▶ scheduler.place() ──▶ assigned (node, host ports) | pending (reason)
                         (never on a node a migrating task of the service leaves)
"""

from __future__ import annotations

import math
import random
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import replace

from moorage.model import (
    Constraint,
    Deployment,
    DeploymentStatus,
    Desired,
    Node,
    NodeStatus,
    Service,
    Task,
    TaskDefinition,
    TaskStatus,
)
from moorage.model.cluster import ClusterSnapshot
from moorage.scheduler import Alloc, Ask, ClusterState, NodeInfo, place

from .deployments import step
from .plan import EventSpec, Plan, create_task, stop_task


def reconcile(snapshot: ClusterSnapshot, now: float, seed: int) -> Plan:
    """Decide every write that brings actual state closer to desired state."""
    plan = Plan()
    rng = random.Random(seed)
    by_service: dict[str, list[Task]] = {}
    for task in snapshot.tasks.values():
        by_service.setdefault(task.service, []).append(task)
    for name, tasks in sorted(by_service.items()):
        service = snapshot.services.get(name)
        for task in tasks:
            _lose_on_down_node(plan, snapshot, task)
            _retire_dead(plan, plan.current(task))
            if service is not None:
                _restart_policy(plan, service, plan.current(task), now)
        _converge(plan, snapshot, service, [plan.current(t) for t in tasks], now, rng)
    for name, service in sorted(snapshot.services.items()):
        if name not in by_service:
            _converge(plan, snapshot, service, [], now, rng)
    _place_pending(plan, snapshot, now, seed)
    return plan


def _lose_on_down_node(plan: Plan, snapshot: ClusterSnapshot, task: Task) -> None:
    """A task on a node that is down (or gone) is lost; it is replaced elsewhere, and its node
    stops it if it comes back (desired stop)."""
    if task.node is None or task.status.terminal:
        return
    node = snapshot.nodes.get(task.node)
    if node is not None and node.status != NodeStatus.DOWN:
        return
    why = f"node {task.node} is down" if node is not None else f"node {task.node} is gone"
    lost = task.model_copy(
        update={"status": TaskStatus.LOST, "desired": Desired.STOP, "message": why}
    )
    plan.write(lost, task)
    plan.events.append(
        EventSpec("task.lost", f"task {task.id} lost: {why}", task.service, task.id, task.node)
    )


def _retire_dead(plan: Plan, task: Task) -> None:
    """A task stopped or lost while still wanted can never run again: it is replaced."""
    if task.desired == Desired.RUN and task.status in (TaskStatus.STOPPED, TaskStatus.LOST):
        plan.write(task.model_copy(update={"desired": Desired.STOP}), task)


def _restart_policy(plan: Plan, service: Service, task: Task, now: float) -> None:
    """Restart an exited task in place; after `attempts` in `interval`, fail it (→ replaced)."""
    if task.desired != Desired.RUN or task.status not in (TaskStatus.EXITED, TaskStatus.FAILED):
        return
    if task.run_generation < task.generation or task.revision != service.revision:
        return  # a restart is already asked for, or the task is about to be replaced
    policy = service.restart
    window_start, used = task.restart_window_start, task.restarts_in_window
    if now - window_start > policy.interval:
        window_start, used = now, 0
    what = f"exit code {task.exit_code}" if task.exit_code is not None else task.message
    if used >= policy.attempts:
        failed = task.model_copy(
            update={
                "desired": Desired.STOP,
                "status": TaskStatus.FAILED,
                "message": f"restart attempts exhausted ({used} within {policy.interval:g}s)",
            }
        )
        plan.write(failed, task)
        plan.events.append(
            EventSpec(
                "task.failed",
                f"task {task.id} failed ({what}); restart attempts exhausted, replacing it",
                service.name,
                task.id,
                task.node,
            )
        )
        return
    delay = policy.delay_for(used + 1)
    restarted = task.model_copy(
        update={
            "generation": task.generation + 1,
            "restarts": task.restarts + 1,
            "restart_window_start": window_start,
            "restarts_in_window": used + 1,
            "not_before": now + delay,
        }
    )
    plan.write(restarted, task)
    plan.events.append(
        EventSpec(
            "task.restarted",
            f"restarting task {task.id} ({what}), attempt {used + 1}/{policy.attempts}"
            + (f" in {delay:g}s" if delay else ""),
            service.name,
            task.id,
            task.node,
        )
    )


def _stop_order(task: Task) -> tuple[int, float]:
    """Scale-down victims: unplaced first, then not yet running, then the newest."""
    rank = {TaskStatus.PENDING: 0, TaskStatus.ASSIGNED: 1, TaskStatus.STARTING: 2}
    return rank.get(task.status, 3), -task.created_at


def deployment_in_progress(snapshot: ClusterSnapshot, service: Service) -> Deployment | None:
    """The deployment that steps this service instead of plain count enforcement, if any
    (running, or failed without a rollback: then both sets are left as they are)."""
    if service.status != "active" or service.deployment_id is None:
        return None
    deployment = snapshot.deployments.get(service.deployment_id)
    if (
        deployment is not None
        and deployment.to_revision == service.revision
        and deployment.status in (DeploymentStatus.RUNNING, DeploymentStatus.FAILED)
    ):
        return deployment
    return None


def _converge(
    plan: Plan,
    snapshot: ClusterSnapshot,
    service: Service | None,
    tasks: list[Task],
    now: float,
    rng: random.Random,
) -> None:
    deployment = deployment_in_progress(snapshot, service) if service is not None else None
    if service is not None and deployment is not None:
        tasks = _cancel_migrations(plan, service, tasks, f"deployment {deployment.id} took over")
        step(plan, service, deployment, tasks, now, rng)
        return
    draining = {n.name: n for n in snapshot.nodes.values() if n.draining}
    taskdef = snapshot.taskdefs.get((service.family, service.revision)) if service else None
    # Single-writer volumes that can move (shared): a drain or a move stops the holder first.
    # A task on a local volume cannot leave its node: it stays until the drain's deadline.
    exclusive = (
        sorted(
            v.volume_name(k)
            for k, v in taskdef.claimed_volumes().items()
            if v.access == "single-writer" and v.driver == "shared"
        )
        if taskdef is not None
        else []
    )
    _enforce_count(plan, service, tasks, now, rng, draining, exclusive)


def _cancel_migrations(plan: Plan, service: Service, tasks: list[Task], why: str) -> list[Task]:
    """A deployment supersedes a rebalance: the tasks it flagged stay where they are."""
    flagged = [t for t in tasks if t.migrate and t.live]
    if not flagged:
        return tasks
    for task in flagged:
        plan.write(task.model_copy(update={"migrate": False}), task)
    text = f"rebalance of {service.name} cancelled ({len(flagged)} task(s) stay): {why}"
    plan.events.append(EventSpec("service.rebalance", text, service.name))
    return [plan.current(t) for t in tasks]


def _enforce_count(
    plan: Plan,
    service: Service | None,
    tasks: list[Task],
    now: float,
    rng: random.Random,
    draining: Mapping[str, Node] | None = None,
    exclusive: Sequence[str] = (),
) -> None:
    live = [t for t in tasks if t.live]
    if service is None or service.status == "stopped":
        for task in live:
            stop_task(plan, task, "service stopped")
        return
    current = [t for t in live if t.revision == service.revision]
    for task in live:
        if task.revision != service.revision:
            stop_task(plan, task, f"replaced by revision {service.revision}")
    # Tasks on draining nodes, and tasks a rebalance flagged to migrate, are replaced first, and
    # stopped once the replacements keep the service at min_healthy_percent (or when the drain's
    # deadline passes; a migration has none).
    draining = draining or {}
    leaving = [t for t in current if _leaving(t, draining)]
    staying = [t for t in current if not _leaving(t, draining)]
    extra = len(staying) - service.count
    for task in sorted(staying, key=_stop_order)[: max(extra, 0)]:
        stop_task(plan, task, f"scaled down to {service.count}")
    # A drain has a deadline, so it replaces at once; a migration has none, so replacements of
    # it that keep failing back off like any other.
    drained = any(t.node in draining for t in leaving)
    delay = _replacement_delay(service, tasks, now) if extra < 0 and not drained else 0.0
    not_before = now + delay if delay > 0 else 0.0
    for _ in range(max(-extra, 0)):
        create_task(plan, service, service.revision, now, rng, not_before=not_before)
    if leaving:
        _drain(plan, service, leaving, staying, now, draining, exclusive)


def _leaving(task: Task, draining: Mapping[str, Node]) -> bool:
    return task.node is not None and (task.node in draining or task.migrate)


def _drain(
    plan: Plan,
    service: Service,
    leaving: list[Task],
    staying: list[Task],
    now: float,
    draining: Mapping[str, Node],
    exclusive: Sequence[str] = (),
) -> None:
    """Stop leaving tasks while the service keeps min_healthy_percent; a task holding a
    single-writer volume stops at once: its replacement cannot start before it has."""
    min_healthy = math.ceil(service.count * service.deployment.min_healthy_percent / 100)
    healthy = sum(1 for t in staying if t.healthy) + sum(1 for t in leaving if t.healthy)
    for task in sorted(leaving, key=lambda t: t.healthy):  # unhealthy ones go first, for free
        node = draining.get(task.node or "")
        deadline = node.drain_deadline if node is not None else None
        overdue = deadline is not None and now >= deadline
        if not task.healthy or healthy - 1 >= min_healthy or overdue or exclusive:
            if node is None:
                why = f"moved off {task.node} (rebalance)"
            else:
                why = f"node {task.node} " + (
                    "drain deadline passed" if overdue and task.healthy else "drained"
                )
            if exclusive and task.healthy and not overdue:
                why += f" (stop-first: single-writer volume {', '.join(exclusive)})"
            stop_task(plan, task, why)
            if task.healthy:
                healthy -= 1


def _replacement_delay(service: Service, tasks: list[Task], now: float) -> float:
    """Back off replacing tasks that keep failing: 0 for the first, then 1s, 2s … 60s."""
    window = service.restart.interval
    failed = sum(
        1
        for t in tasks
        if t.status == TaskStatus.FAILED and now - (t.finished_at or t.updated_at) <= window
    )
    return 0.0 if failed <= 1 else float(min(2 ** (failed - 2), service.restart.max_delay))


def _place_pending(plan: Plan, snapshot: ClusterSnapshot, now: float, seed: int) -> None:
    tasks = [plan.current(t) for t in snapshot.tasks.values()]
    tasks += [new for (new, old) in plan.writes.values() if old is None]
    pending = [t for t in tasks if t.desired == Desired.RUN and t.node is None]
    if not pending:
        return
    state = ClusterState.build(node_infos(snapshot.nodes.values()), allocs(tasks))
    groups: dict[str, list[Task]] = {}
    for task in sorted(pending, key=lambda t: (t.created_at, t.id)):
        groups.setdefault(task.service, []).append(task)
    # Replacements of tasks a rebalance migrates never land on a node one of them leaves.
    migrating: dict[str, list[Task]] = {}
    for task in tasks:
        if task.migrate and task.live and task.node is not None:
            migrating.setdefault(task.service, []).append(task)
    asks, members = [], []
    for name, group in groups.items():
        service = snapshot.services.get(name)
        taskdef = snapshot.taskdefs.get((group[0].family, group[0].revision))
        if service is None or taskdef is None:
            continue
        ask = service_ask(service, taskdef, len(group))
        pin, waiting = volume_pin(snapshot, taskdef)
        if waiting:
            _mark_unplaced(plan, service, group, waiting)
            continue
        if pin is not None:
            ask = replace(ask, constraints=(*ask.constraints, pin))
        sources = sorted({t.node for t in migrating.get(name, []) if t.node is not None})
        if sources:
            away = Constraint(attr="node.name", op="not in", values=tuple(sources))
            ask = replace(ask, constraints=(*ask.constraints, away))
        asks.append(ask)
        members.append((service, taskdef, group))
    result = place(state, asks, seed)
    for index, (service, taskdef, group) in enumerate(members):
        placed = result.placements.get(index, [])
        for task, spot in zip(group, placed, strict=False):
            update = {
                "node": spot.node,
                "ports": spot.ports,
                "status": TaskStatus.ASSIGNED,
                "message": "",
                "cpu": taskdef.cpu,
                "memory": taskdef.memory,
                "updated_at": now,
            }
            plan.write(task.model_copy(update=update), task)
        unplaced = result.unplaced.get(index)
        if unplaced is not None:
            left = group[len(placed) :]
            if service.name in migrating:
                left = _cancel_moves(plan, service, left, migrating[service.name], unplaced.reason)
            if left:
                _mark_unplaced(plan, service, left, unplaced.reason)


def volume_pin(snapshot: ClusterSnapshot, taskdef: TaskDefinition) -> tuple[Constraint | None, str]:
    """Where a task on local cluster volumes must go: (the constraint pinning it to their
    node, or why it waits: that node is not ready, or two of its volumes live apart)."""
    nodes = set()
    for key, entry in taskdef.claimed_volumes().items():
        volume = snapshot.volumes.get(entry.volume_name(key))
        if volume is not None and volume.driver == "local" and volume.node is not None:
            nodes.add((volume.name, volume.node))
    if not nodes:
        return None, ""
    names = {node for _name, node in nodes}
    if len(names) > 1:
        where = ", ".join(f"{name} on {node}" for name, node in sorted(nodes))
        return None, f"its local volumes live on different nodes ({where})"
    name, node_name = min(nodes)
    node = snapshot.nodes.get(node_name)
    if node is None or not node.schedulable:
        state = "unknown" if node is None else node.state
        return None, (
            f"volume {name} is local to node {node_name}, which is {state}: "
            "the task waits for that node"
        )
    return Constraint(attr="node.name", op="==", values=(node_name,)), ""


def _cancel_moves(
    plan: Plan, service: Service, unplaced: list[Task], migrating: list[Task], reason: str
) -> list[Task]:
    """No other node takes a migrating task's replacement: that task stays (its flag cleared)
    and the replacement goes. Returns the unplaced tasks that are still wanted."""
    cancelled = min(len(unplaced), len(migrating))
    for task in unplaced[len(unplaced) - cancelled :]:
        if plan.writes[task.id][1] is None:
            plan.drop(task.id)  # created by this plan: never written
        else:
            stop_task(plan, task, "rebalance cancelled")
    for task in sorted(migrating, key=lambda t: (t.created_at, t.id))[:cancelled]:
        plan.write(task.model_copy(update={"migrate": False}), task)
    text = (
        f"rebalance of {service.name}: {cancelled} move(s) cancelled, "
        f"no other node can take the task(s): {reason}"
    )
    plan.events.append(EventSpec("service.rebalance", text, service.name))
    return unplaced[: len(unplaced) - cancelled]


def _mark_unplaced(plan: Plan, service: Service, tasks: list[Task], reason: str) -> None:
    changed = [t for t in tasks if t.message != reason]
    for task in changed:
        plan.write(task.model_copy(update={"message": reason}), task)
    if changed:
        plan.events.append(
            EventSpec(
                "task.unplaced",
                f"{len(tasks)} task(s) of {service.name} cannot be placed: {reason}",
                service.name,
            )
        )


def node_infos(nodes: Iterable[Node]) -> list[NodeInfo]:
    return [
        NodeInfo(
            name=n.name,
            cpu=n.cpu,
            memory=n.memory,
            attrs={**n.attrs, "node.name": n.name},
            port_range=n.port_range,
            eligible=n.schedulable,
            drivers=frozenset(n.drivers),
            host_volumes=tuple(n.host_volumes.values()),
            privileged=n.privileged,
        )
        for n in nodes
    ]


def allocs(tasks: Iterable[Task]) -> list[Alloc]:
    """Resources held on nodes: every placed task that may still be running."""
    return [
        Alloc(t.node, t.service, t.cpu, t.memory, tuple(t.ports.values()))
        for t in tasks
        if t.node is not None and not (t.status.terminal and t.desired == Desired.STOP)
    ]


def service_ask(service: Service, taskdef: TaskDefinition, count: int) -> Ask:
    return Ask(
        service=service.name,
        count=count,
        cpu=taskdef.cpu,
        memory=taskdef.memory,
        ports=tuple(p for c in taskdef.containers for p in c.ports),
        constraints=tuple(service.placement.parsed_constraints()),
        strategy=service.placement.strategy,
        spread_attr=service.placement.spread_attr,
        drivers=frozenset(c.driver for c in taskdef.containers),
        host_paths=tuple(sorted(taskdef.host_paths())),
        privileged=any(c.privileged for c in taskdef.containers),
        prefer=Constraint(attr="lifecycle", op="==", values=("spot",))
        if service.placement.capacity == "spot_preferred"
        else None,
    )
