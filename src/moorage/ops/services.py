"""Services: deploy, scale, update images, roll back, rebalance, stop; and what they look like.

deploy(specs, authz)    every spec checked (the caller's service write, secrets that exist,
                        volumes) before the first write; then its volumes provisioned and a
                        revision (and a deployment) registered, spec by spec
scale(name, count)      count changed (at most 1 with a single-writer volume)
update_images(name, {container: image})   a new revision that changes only images
rollback(name, to)      an earlier revision deployed again (default: the last stable one)
rebalance(name)         tasks flagged to move to where the scheduler would place them now
stop(name)              every task stopped, the service kept
"""

from __future__ import annotations

import asyncio
from collections import Counter
from collections.abc import Callable

from moorage.controllers.apply import PlanApplier
from moorage.controllers.plan import Plan
from moorage.controllers.rebalance import Rebalance, plan_rebalance
from moorage.model import (
    Conflict,
    Deployment,
    FieldError,
    Forbidden,
    NotFound,
    Service,
    ServiceSpec,
    SpecError,
    TaskDefinition,
    validate_body,
)
from moorage.model.acl import Authorizer, Level
from moorage.model.spec import volume_problems
from moorage.model.views import (
    DeployResult,
    RebalanceMove,
    RebalanceResult,
    ServiceDetail,
    ServiceSummary,
    summarize,
)
from moorage.state import MAX_ATTEMPTS, StateCache, StateWriter, kinds, new_event
from moorage.store import Op

from .deploy import Deployer
from .volumes import Volumes

ServiceChange = tuple[Service | None, list[Op]]


class Services:
    def __init__(
        self,
        cache: StateCache,
        writer: StateWriter,
        clock: Callable[[], float],
        volumes: Volumes,
    ) -> None:
        self.cache = cache
        self.writer = writer
        self.clock = clock
        self.volumes = volumes
        self.deployer = Deployer(cache, writer, clock)
        self.applier = PlanApplier(cache, writer, clock)

    # ---- reads -------------------------------------------------------------------------
    def get(self, name: str) -> Service:
        service = self.cache.services.get(name)
        if service is None:
            raise NotFound(f"no service named {name!r}")
        return service

    def summary(self, service: Service) -> ServiceSummary:
        tasks = self.cache.tasks_of_service(service.name)
        summary = summarize(service.name, service.status, service.revision, service.count, tasks)
        deployment = self.cache.deployments.get(service.deployment_id or "")
        if service.status == "stopped":
            summary = summary.model_copy(update={"deployment": "-"})
        elif deployment is not None:
            state = deployment.status.value
            if deployment.status == "running":
                state += f" {deployment.healthy}/{deployment.count}"
            summary = summary.model_copy(update={"deployment": state})
        return summary

    def summaries(self) -> list[ServiceSummary]:
        services = sorted(self.cache.services.values(), key=lambda s: s.name)
        return [self.summary(s) for s in services]

    def detail(self, name: str) -> ServiceDetail:
        service = self.get(name)
        taskdef = self.cache.taskdefs.get((service.family, service.revision))
        return ServiceDetail(service=service, summary=self.summary(service), taskdef=taskdef)

    def deployments(self, service: str | None = None) -> list[Deployment]:
        """Newest first."""
        if service:
            return self.cache.deployments_of(service)
        found = self.cache.deployments.values()
        return sorted(found, key=lambda d: (d.created_at, d.id), reverse=True)

    def deployment(self, deployment_id: str) -> Deployment:
        found = self.cache.deployments.get(deployment_id)
        if found is None:
            raise NotFound(f"no deployment {deployment_id!r}")
        return found

    def taskdefs(self, family: str) -> list[TaskDefinition]:
        revisions = self.cache.taskdef_revisions(family)
        if not revisions:
            raise NotFound(f"no task definition family {family!r}")
        return revisions

    def taskdef(self, family: str, revision: str, node: str | None = None) -> TaskDefinition:
        """One revision (`node`: a node reads only the revisions of tasks placed on it)."""
        if node is not None and not any(
            (t.family, str(t.revision)) == (family, revision)
            for t in self.cache.tasks_on_node(node)
        ):
            raise Forbidden(f"node {node} runs no task of {family}:{revision}")
        if not revision.isdigit():
            raise SpecError(
                [FieldError("revision", f"must be a positive integer, got {revision!r}")]
            )
        taskdef = self.cache.taskdefs.get((family, int(revision)))
        if taskdef is None:
            raise NotFound(f"no task definition {family}:{revision}")
        return taskdef

    # ---- deploy ------------------------------------------------------------------------
    def check(self, specs: list[ServiceSpec], authz: Authorizer) -> None:
        """Everything that must hold before the first write; SpecError naming every field."""
        for spec in specs:
            authz.require("service", spec.service, Level.WRITE)
            for container in spec.containers:
                for name in container.secrets.values():
                    authz.require("secret", name, Level.READ)  # the task would reveal it
        problems: list[FieldError] = []
        for position, spec in enumerate(specs):
            prefix = f"[{position}]." if len(specs) > 1 else ""
            problems += [
                FieldError(
                    f"{prefix}containers[{index}].secrets.{env}", f"no secret named {name!r}"
                )
                for index, container in enumerate(spec.containers)
                for env, name in container.secrets.items()
                if name not in self.cache.secrets
            ]
        for position, spec in enumerate(specs):
            prefix = f"[{position}]." if len(specs) > 1 else ""
            problems += volume_problems(spec, self.cache.volumes, prefix)
        if problems:
            raise SpecError(problems)

    async def deploy(self, specs: list[ServiceSpec], authz: Authorizer) -> list[DeployResult]:
        self.check(specs, authz)
        results = []
        for spec in specs:  # every spec is valid before the first write
            await self.volumes.provision(spec)
            results.append(await self._deploy(spec))
        return results

    async def _deploy(self, spec: ServiceSpec) -> DeployResult:
        _service, taskdef, created, deployment = await self.deployer.deploy(spec)
        return DeployResult(
            service=spec.service,
            revision=taskdef.revision,
            created=created,
            count=spec.count,
            deployment=deployment.id if deployment else None,
            stop_first=deployment.stop_first if deployment else "",
        )

    async def update_images(self, name: str, images: dict[str, str]) -> DeployResult:
        service = self.get(name)
        taskdef = self.cache.taskdefs.get((service.family, service.revision))
        if taskdef is None:
            raise NotFound(f"no task definition {service.taskdef_ref}")
        names = [c.name for c in taskdef.containers]
        unknown = [c for c in images if c not in names]
        if unknown:
            raise SpecError(
                [
                    FieldError(f"images.{c}", f"{name} has no container {c!r} (it has {names})")
                    for c in unknown
                ]
            )
        containers = [
            c.model_copy(update={"image": images[c.name]}) if c.name in images else c
            for c in taskdef.containers
        ]
        spec = validate_body(
            ServiceSpec,
            {
                "service": name,
                "count": service.count,
                "containers": [c.model_dump(mode="json") for c in containers],
                "volumes": {k: v.model_dump(mode="json") for k, v in taskdef.volumes.items()},
                "placement": service.placement.model_dump(mode="json"),
                "deployment": service.deployment.model_dump(mode="json"),
                "discovery": service.discovery.model_dump(mode="json")
                if service.discovery
                else None,
                "restart": service.restart.model_dump(mode="json"),
            },
        )
        return await self._deploy(spec)

    async def rollback(self, name: str, to: int | None) -> Deployment:
        self.get(name)
        return await self.deployer.rollback(name, to)

    # ---- count -------------------------------------------------------------------------
    async def scale(self, name: str, count: int) -> ServiceSummary:
        service = self.get(name)
        taskdef = self.cache.taskdefs.get((service.family, service.revision))
        exclusive = taskdef.single_writer_volumes() if taskdef is not None else []
        if exclusive and count > 1:
            raise SpecError(
                [
                    FieldError(
                        "count",
                        f"{name} uses the single-writer volume {exclusive[0]!r}: one task "
                        "holds it at a time, so count must be at most 1",
                    )
                ]
            )
        now = self.clock()

        def change(current: Service | None) -> ServiceChange:
            if current is None:
                raise NotFound(f"no service named {name!r}")
            text = f"{name} scaled from {current.count} to {count}"
            event = new_event("service.scaled", text, now=now, service=name)
            scaled = current.model_copy(
                update={"count": count, "status": "active", "updated_at": now}
            )
            return scaled, [event]

        return self.summary(await self._update(name, change))

    async def stop(self, name: str) -> ServiceSummary:
        self.get(name)
        now = self.clock()

        def change(current: Service | None) -> ServiceChange:
            if current is None:
                raise NotFound(f"no service named {name!r}")
            event = new_event("service.stopped", f"{name} stopped", now=now, service=name)
            return current.model_copy(update={"status": "stopped", "updated_at": now}), [event]

        return self.summary(await self._update(name, change))

    async def _update(
        self, name: str, change: Callable[[Service | None], ServiceChange]
    ) -> Service:
        updated = await self.writer.update(kinds.SERVICE, name, change)
        assert updated is not None
        return updated

    # ---- rebalance ---------------------------------------------------------------------
    async def rebalance(self, name: str) -> RebalanceResult:
        """Flag the tasks to move (one transaction, guarded by the service: a deployment or a
        scale in between wins, and the move is decided again)."""
        for _ in range(MAX_ATTEMPTS):
            decision = plan_rebalance(self.cache.snapshot(), name, seed=self.cache.revision)
            result = _rebalance_result(decision)
            if not decision.moves:
                return result
            if await self.applier.apply(self._moves(name, decision)):
                return result
            await asyncio.sleep(0.02)  # lost a CAS: the cache is about to show why
        raise Conflict(f"{name} is changing too fast to rebalance; try again")

    def _moves(self, name: str, decision: Rebalance) -> Plan:
        plan = Plan(guards=[kinds.SERVICE.key(name)])
        for move in decision.moves:
            task = self.cache.tasks[move.task]
            plan.write(task.model_copy(update={"migrate": True}), task)
        sources = Counter(move.node for move in decision.moves)
        text = f"{name}: rebalancing {len(decision.moves)} task(s), " + ", ".join(
            f"{count} from {node}" for node, count in sorted(sources.items())
        )
        plan.event("service.rebalance", text, service=name)
        return plan


def _rebalance_result(decision: Rebalance) -> RebalanceResult:
    moves = [RebalanceMove(task=m.task, from_node=m.node) for m in decision.moves]
    return RebalanceResult(
        service=decision.service,
        moves=moves,
        current=decision.current,
        target=decision.target,
        message=decision.message,
    )
