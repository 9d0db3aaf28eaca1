"""Every write to moorage state goes through here: compare-and-swap on the store revision.

Writers never trust the cache for the value they replace: a CAS loop reads the key from the
store, applies a pure function, and commits only if the key's mod_revision did not move. After
a commit the writer waits until the cache has applied it, so callers read their own writes.
"""

from __future__ import annotations

import secrets
import time
from collections.abc import Callable, Sequence
from typing import TypeVar

from pydantic import BaseModel

from moorage.model import (
    Conflict,
    Deployment,
    DeploymentPolicy,
    DeploymentStatus,
    Event,
    NotFound,
    Service,
    ServiceSpec,
    Task,
    TaskDefinition,
)
from moorage.store import Compare, Delete, Op, Put, Store

from . import keys
from .cache import StateCache

M = TypeVar("M", bound=BaseModel)

MAX_ATTEMPTS = 50


def _unobserved(seconds: float) -> None:
    pass


def new_deployment(
    service: str,
    family: str,
    from_revision: int | None,
    to_revision: int,
    count: int,
    policy: DeploymentPolicy,
    now: float,
    rollback_of: str | None = None,
    stop_first: str = "",
) -> Deployment:
    strategy = policy.strategy
    if stop_first and strategy == "blue_green":
        strategy = "rolling"  # two sets at once would need two writers
        stop_first += " (blue/green runs as a stop-first rolling deployment)"
    return Deployment(
        id=f"{service}-{to_revision}-{secrets.token_hex(3)}",
        service=service,
        family=family,
        from_revision=from_revision,
        to_revision=to_revision,
        strategy=strategy,
        count=count,
        min_healthy_percent=policy.min_healthy_percent,
        max_percent=policy.max_percent,
        min_healthy_time=policy.min_healthy_time,
        progress_deadline=policy.progress_deadline,
        auto_rollback=policy.auto_rollback,
        rollback_of=rollback_of,
        stop_first=stop_first,
        created_at=now,
        progress_at=now,
        updated_at=now,
    )


def stop_first_reason(*taskdefs: TaskDefinition | None) -> str:
    """Why a deployment between these revisions must stop each old task before starting its
    replacement: a single-writer volume one of them holds ("" when none does)."""
    names = sorted({n for t in taskdefs if t is not None for n in t.single_writer_volumes()})
    if not names:
        return ""
    which = ", ".join(names)
    return (
        f"single-writer volume {which}: each old task stops and releases it before its "
        "replacement starts (no surge)"
    )


def new_event(
    type_: str,
    message: str,
    *,
    now: float,
    service: str | None = None,
    task: str | None = None,
    node: str | None = None,
) -> Put:
    """A Put op that records one cluster event (commit it in the same txn as its cause)."""
    event_id = f"{int(now * 1e9):020d}-{secrets.token_hex(3)}"
    event = Event(
        id=event_id, time=now, type=type_, message=message, service=service, task=task, node=node
    )
    return Put(keys.event_key(event_id), keys.encode(event))


class StateWriter:
    def __init__(
        self, store: Store, cache: StateCache, clock: Callable[[], float] = time.time
    ) -> None:
        self.store = store
        self.cache = cache
        self.clock = clock
        self.observe_commit: Callable[[float], None] = _unobserved  # store txn seconds (/metrics)

    async def commit(self, compares: Sequence[Compare], ops: Sequence[Op]) -> int | None:
        """Run one CAS transaction; return its revision (cache caught up) or None if it lost."""
        started = time.perf_counter()
        result = await self.store.txn(compares, ops)
        self.observe_commit(time.perf_counter() - started)
        if not result.succeeded:
            return None
        await self.cache.wait_revision(result.revision)
        return result.revision

    async def update(
        self,
        key: str,
        model: type[M],
        change: Callable[[M | None], tuple[M | None, Sequence[Op]]],
    ) -> M | None:
        """CAS loop: `change(current)` returns (new value or None to delete, extra ops)."""
        for _ in range(MAX_ATTEMPTS):
            kv = await self.store.get(key)
            current = model.model_validate_json(kv.value) if kv is not None else None
            new, extra = change(current)
            ops: list[Op] = [Put(key, keys.encode(new)) if new is not None else Delete(key)]
            ops.extend(extra)
            mod = kv.mod_revision if kv is not None else 0
            if await self.commit([Compare(key, "mod", "==", mod)], ops) is not None:
                return new
        raise Conflict(f"{key} is changing too fast; gave up after {MAX_ATTEMPTS} attempts")

    async def event(self, type_: str, message: str, **about: str | None) -> None:
        await self.commit([], [new_event(type_, message, now=self.clock(), **about)])

    # ---- task definitions and services -------------------------------------------------
    async def register_taskdef(self, spec: ServiceSpec) -> tuple[TaskDefinition, bool]:
        """The task definition for spec: the latest revision if unchanged, else a new one.

        Two concurrent registrations never share a revision: each creates its key only if
        absent, and the loser retries with the next number.
        """
        family = spec.service
        for _ in range(MAX_ATTEMPTS):
            kvs, _rev = await self.store.range(keys.taskdef_prefix(family))
            latest = TaskDefinition.model_validate_json(kvs[-1].value) if kvs else None
            candidate = TaskDefinition(
                family=family,
                revision=(latest.revision + 1) if latest else 1,
                containers=spec.containers,
                volumes=spec.volumes,
                # A writer cut off from the servers stops before its volume may move.
                stop_on_disconnect=spec.stop_on_disconnect
                or any(
                    v.scope == "shared" and v.access == "single-writer"
                    for v in spec.volumes.values()
                ),
                created_at=self.clock(),
            )
            if latest is not None and latest.content_hash() == candidate.content_hash():
                return latest, False
            key = keys.taskdef_key(family, candidate.revision)
            put = Put(key, keys.encode(candidate))
            if await self.commit([Compare.absent(key)], [put]) is not None:
                return candidate, True
        raise Conflict(f"task definition {family} is changing too fast")

    async def deploy(
        self, spec: ServiceSpec
    ) -> tuple[Service, TaskDefinition, bool, Deployment | None]:
        """Register the task definition and point the service at it (CAS on the service).

        A new revision (or a stopped service started again) starts a deployment, in the same
        transaction as the service; a running deployment of the service is superseded.
        """
        taskdef, created = await self.register_taskdef(spec)
        now = self.clock()
        started: list[Deployment] = []

        def change(current: Service | None) -> tuple[Service, list[Op]]:
            started.clear()
            ops: list[Op] = []
            moving = current is None or current.status == "stopped"
            moving = moving or (current is not None and current.revision != taskdef.revision)
            deployment_id = current.deployment_id if current else None
            if moving:
                serving = current is not None and current.status == "active"
                before = (
                    self.cache.taskdefs.get((current.family, current.revision))
                    if serving and current is not None
                    else None
                )
                deployment = new_deployment(
                    spec.service,
                    taskdef.family,
                    current.revision if serving and current is not None else None,
                    taskdef.revision,
                    spec.count,
                    spec.deployment,
                    now,
                    stop_first=stop_first_reason(taskdef, before),
                )
                started.append(deployment)
                deployment_id = deployment.id
                ops += self._supersede(current, now)
                ops.append(Put(keys.deployment_key(deployment.id), keys.encode(deployment)))
            service = Service(
                name=spec.service,
                family=taskdef.family,
                revision=taskdef.revision,
                count=spec.count,
                placement=spec.placement,
                deployment=spec.deployment,
                discovery=spec.discovery,
                restart=spec.restart,
                status="active",
                deployment_id=deployment_id,
                stable_revision=current.stable_revision if current else None,
                created_at=current.created_at if current else now,
                updated_at=now,
            )
            verb = "deployed" if current is None or created else "updated"
            message = f"{spec.service} {verb}: revision {taskdef.revision}, count {spec.count}"
            if started:
                message += f" ({spec.deployment.strategy} deployment {started[0].id})"
            ops.append(new_event("service.deployed", message, now=now, service=spec.service))
            return service, ops

        service = await self.update(keys.service_key(spec.service), Service, change)
        assert service is not None
        return service, taskdef, created, (started[0] if started else None)

    async def rollback(self, name: str, to: int | None) -> Deployment:
        """Deploy an earlier revision of a service again (default: the last stable one)."""
        now = self.clock()
        started: list[Deployment] = []

        def change(current: Service | None) -> tuple[Service, list[Op]]:
            started.clear()
            if current is None:
                raise NotFound(f"no service named {name!r}")
            target = to if to is not None else current.stable_revision
            if target is None or target == current.revision:
                earlier = [r for (f, r) in self.cache.taskdefs if f == current.family]
                earlier = [r for r in earlier if r < current.revision]
                target = to if to is not None else (max(earlier) if earlier else None)
            if target is None:
                raise Conflict(f"{name} has no earlier revision to roll back to")
            if (current.family, target) not in self.cache.taskdefs:
                raise NotFound(f"no task definition {current.family}:{target}")
            if target == current.revision:
                raise Conflict(f"{name} already runs revision {target}")
            deployment = new_deployment(
                name,
                current.family,
                current.revision if current.status == "active" else None,
                target,
                current.count,
                current.deployment,
                now,
                stop_first=stop_first_reason(
                    self.cache.taskdefs.get((current.family, target)),
                    self.cache.taskdefs.get((current.family, current.revision)),
                ),
            )
            started.append(deployment)
            ops: list[Op] = [*self._supersede(current, now)]
            ops.append(Put(keys.deployment_key(deployment.id), keys.encode(deployment)))
            text = f"{name} rolling back from revision {current.revision} to {target}"
            ops.append(new_event("deployment.rollback", text, now=now, service=name))
            service = current.model_copy(
                update={
                    "revision": target,
                    "status": "active",
                    "deployment_id": deployment.id,
                    "updated_at": now,
                }
            )
            return service, ops

        await self.update(keys.service_key(name), Service, change)
        return started[0]

    def _supersede(self, current: Service | None, now: float) -> list[Op]:
        """Mark the service's running deployment superseded (a newer one takes over)."""
        if current is None or current.deployment_id is None:
            return []
        running = self.cache.deployments.get(current.deployment_id)
        if running is None or running.status.done:
            return []
        done = running.model_copy(
            update={
                "status": DeploymentStatus.SUPERSEDED,
                "message": "superseded by a newer deployment",
                "finished_at": now,
                "updated_at": now,
            }
        )
        return [Put(keys.deployment_key(done.id), keys.encode(done))]

    async def set_task(self, task: Task, mod_revision: int, extra: Sequence[Op] = ()) -> bool:
        key = keys.task_key(task.id)
        ops: list[Op] = [Put(key, keys.encode(task)), *extra]
        return await self.commit([Compare(key, "mod", "==", mod_revision)], ops) is not None
