"""New revisions and deployments: the write path of `deploy`, `update images` and `rollback`.

    spec ──register_taskdef──▶ TaskDefinition family:N (created only if absent; unchanged
                               content keeps the latest revision)
         ──deploy──▶ Service points at N, a Deployment starts (same transaction), the running
                     one is superseded
    rollback(to) ──▶ Service points at an earlier revision, a Deployment marked as its rollback

The deployment then moves step by step in the reconciler (`moorage.controllers.deployments`).
"""

from __future__ import annotations

import secrets
from collections.abc import Callable

from moorage.model import (
    Conflict,
    Deployment,
    DeploymentPolicy,
    DeploymentStatus,
    NotFound,
    Service,
    ServiceSpec,
    TaskDefinition,
)
from moorage.state import MAX_ATTEMPTS, StateCache, StateWriter, kinds, new_event
from moorage.store import Compare, Op


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


class Deployer:
    def __init__(self, cache: StateCache, writer: StateWriter, clock: Callable[[], float]) -> None:
        self.cache = cache
        self.writer = writer
        self.clock = clock

    async def register_taskdef(self, spec: ServiceSpec) -> tuple[TaskDefinition, bool]:
        """The task definition for spec: the latest revision if unchanged, else a new one.

        Two concurrent registrations never share a revision: each creates its key only if
        absent, and the loser retries with the next number.
        """
        family = spec.service
        for _ in range(MAX_ATTEMPTS):
            kvs, _rev = await self.writer.store.range(f"{kinds.TASKDEF.prefix}{family}/")
            latest = TaskDefinition.model_validate_json(kvs[-1].value) if kvs else None
            candidate = TaskDefinition(
                family=family,
                revision=(latest.revision + 1) if latest else 1,
                containers=spec.containers,
                volumes=spec.volumes,
                configs=spec.configs,
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
            put = kinds.TASKDEF.put(candidate)
            if await self.writer.commit([Compare.absent(put.key)], [put]) is not None:
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
                ops.append(kinds.DEPLOYMENT.put(deployment))
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

        service = await self.writer.update(kinds.SERVICE, spec.service, change)
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
            ops.append(kinds.DEPLOYMENT.put(deployment))
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

        await self.writer.update(kinds.SERVICE, name, change)
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
        return [kinds.DEPLOYMENT.put(done)]
