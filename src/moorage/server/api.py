"""The moorage HTTP API (`/v1/...`): services, task definitions, tasks, nodes, events."""

from __future__ import annotations

import asyncio
import json
from collections import Counter
from collections.abc import Callable
from typing import Any

from aiohttp import web
from pydantic import BaseModel, TypeAdapter

from moorage import __version__
from moorage.controllers.liveness import heartbeat_interval, heartbeat_ttl
from moorage.controllers.rebalance import Rebalance, plan_rebalance
from moorage.controllers.reconcile import Snapshot
from moorage.model import (
    CheckState,
    Conflict,
    Deployment,
    Event,
    FieldError,
    Node,
    NodeStatus,
    NotFound,
    Service,
    ServiceSpec,
    SpecError,
    Task,
    TaskDefinition,
    VolumeSpec,
    parse_specs,
)
from moorage.model import node as node_rules
from moorage.model.acl import Level
from moorage.model.spec import not_yet_honoured, validate_body, volume_problems
from moorage.model.volume import Volume
from moorage.state import StateCache, StateWriter, Topic
from moorage.state import keys as k
from moorage.state.writer import MAX_ATTEMPTS, new_event
from moorage.store import Compare, Op, Put

from .authz import authorizer
from .blocking import INDEX_HEADER, block
from .errors import read_json
from .join import JoinGuard
from .reports import apply_report
from .routes import RouteTable
from .views import (
    DeployResult,
    DrainBody,
    ImagesBody,
    RebalanceMove,
    RebalanceResult,
    RollbackBody,
    ScaleBody,
    ServiceSummary,
    StatusInfo,
    TaskReport,
    TtlUpdate,
    summarize,
)

table = RouteTable()

SPOT_NOTICE = 120.0  # seconds a cloud gives between its spot interruption notice and the end


class ServiceDetail(BaseModel):
    service: Service
    summary: ServiceSummary
    taskdef: TaskDefinition | None


def dump(value: Any) -> Any:
    if isinstance(value, BaseModel):
        return value.model_dump(mode="json")
    if isinstance(value, list):
        return [dump(v) for v in value]
    return value


def respond(value: Any, index: int | None = None) -> web.Response:
    headers = {INDEX_HEADER: str(index)} if index is not None else None
    return web.json_response(dump(value), headers=headers)


class Api:
    """Handlers over the cache (reads) and the writer (CAS writes)."""

    def __init__(
        self, cache: StateCache, writer: StateWriter, clock: Callable[[], float], store_name: str
    ) -> None:
        self.cache = cache
        self.writer = writer
        self.clock = clock
        self.store_name = store_name
        self.heartbeats: dict[str, float] = {}
        self.guard: JoinGuard | None = None  # set by the server: agent calls need the token

    def _agent_only(self, request: web.Request) -> None:
        if self.guard is not None:
            self.guard.check(request)

    # ---- services ------------------------------------------------------------------------
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

    def service(self, name: str) -> Service:
        service = self.cache.services.get(name)
        if service is None:
            raise NotFound(f"no service named {name!r}")
        return service

    @table.add(
        "GET",
        "/v1/services",
        "List services with task counts",
        response=list[ServiceSummary],
        blocking=True,
        tags=("services",),
    )
    async def list_services(self, request: web.Request) -> web.Response:
        index = await block(request, self.cache, Topic.SERVICES)
        services = sorted(self.cache.services.values(), key=lambda s: s.name)
        return respond([self.summary(s) for s in services], index)

    @table.add(
        "GET",
        "/v1/services/{name}",
        "One service, its summary and task definition",
        response=ServiceDetail,
        blocking=True,
        tags=("services",),
    )
    async def get_service(self, request: web.Request) -> web.Response:
        name = request.match_info["name"]
        index = await block(request, self.cache, Topic.service(name))
        service = self.service(name)
        taskdef = self.cache.taskdefs.get((service.family, service.revision))
        return respond(
            ServiceDetail(service=service, summary=self.summary(service), taskdef=taskdef), index
        )

    @table.add(
        "POST",
        "/v1/services",
        "Deploy specs (moorage YAML text, or JSON spec objects)",
        body=list[ServiceSpec],
        response=list[DeployResult],
        tags=("services",),
    )
    async def deploy(self, request: web.Request) -> web.Response:
        specs = await self._read_specs(request)
        for spec in specs:
            authorizer(request).require("service", spec.service, Level.WRITE)
        missing = [
            FieldError(f"{prefix}containers[{index}].secrets.{env}", f"no secret named {name!r}")
            for position, spec in enumerate(specs)
            for prefix in [f"[{position}]." if len(specs) > 1 else ""]
            for index, container in enumerate(spec.containers)
            for env, name in container.secrets.items()
            if name not in self.cache.secrets
        ]
        for position, spec in enumerate(specs):
            prefix = f"[{position}]." if len(specs) > 1 else ""
            missing += not_yet_honoured(spec, prefix)
            missing += volume_problems(spec, self.cache.volumes, prefix)
        if missing:
            raise SpecError(missing)
        results = []
        for spec in specs:  # every spec is valid before the first write
            await self._provision_volumes(spec)
            _service, taskdef, created, deployment = await self.writer.deploy(spec)
            results.append(
                DeployResult(
                    service=spec.service,
                    revision=taskdef.revision,
                    created=created,
                    count=spec.count,
                    deployment=deployment.id if deployment else None,
                    stop_first=deployment.stop_first if deployment else "",
                )
            )
        return respond(results)

    async def _provision_volumes(self, spec: ServiceSpec) -> None:
        """Create the cluster volumes the spec autoprovisions (an existing one is kept)."""
        now = self.clock()
        for key, entry in spec.volumes.items():
            if entry.scope != "shared" or not entry.autoprovision:
                continue
            name = entry.volume_name(key)
            if name in self.cache.volumes:
                continue

            def change(
                current: Volume | None, entry: VolumeSpec = entry, name: str = name
            ) -> tuple[Volume | None, list[Any]]:
                if current is not None:
                    return current, []
                volume = Volume(
                    name=name,
                    driver=entry.driver,
                    size=entry.size_mib,
                    scope="shared",
                    access=entry.access,
                    autoprovision=True,
                    created_at=now,
                )
                size = f", {volume.size} MiB" if volume.size else ""
                text = (
                    f"volume {name} created for service {spec.service} "
                    f"({volume.driver}{size}, {volume.access})"
                )
                return volume, [new_event("volume.created", text, now=now, service=spec.service)]

            await self.writer.update(k.volume_key(name), Volume, change)

    @table.add(
        "POST",
        "/v1/validate",
        "Validate specs and return them normalized",
        body=list[ServiceSpec],
        response=list[ServiceSpec],
        tags=("services",),
    )
    async def validate(self, request: web.Request) -> web.Response:
        return respond(await self._read_specs(request))

    async def _read_specs(self, request: web.Request) -> list[ServiceSpec]:
        if "yaml" in (request.content_type or "") or "text" in (request.content_type or ""):
            return parse_specs(await request.text())
        body = await read_json(request)
        if isinstance(body, dict):
            return [validate_body(ServiceSpec, body)]
        if not isinstance(body, list) or not body:
            raise SpecError([FieldError("", "expected a spec object or a non-empty list of them")])
        specs, errors = [], []
        for position, item in enumerate(body):
            try:
                specs.append(validate_body(ServiceSpec, item, prefix=f"[{position}]"))
            except SpecError as exc:
                errors.extend(exc.errors)
        if errors:
            raise SpecError(errors)
        return specs

    @table.add(
        "POST",
        "/v1/services/{name}/scale",
        "Set a service's task count",
        body=ScaleBody,
        response=ServiceSummary,
        tags=("services",),
    )
    async def scale(self, request: web.Request) -> web.Response:
        name = request.match_info["name"]
        body = validate_body(ScaleBody, await read_json(request))
        service = self.service(name)
        taskdef = self.cache.taskdefs.get((service.family, service.revision))
        exclusive = taskdef.single_writer_volumes() if taskdef is not None else []
        if exclusive and body.count > 1:
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

        def change(current: Service | None) -> tuple[Service | None, list[Any]]:
            if current is None:
                raise NotFound(f"no service named {name!r}")
            text = f"{name} scaled from {current.count} to {body.count}"
            event = new_event("service.scaled", text, now=now, service=name)
            return current.model_copy(
                update={"count": body.count, "status": "active", "updated_at": now}
            ), [event]

        scaled = await self.writer.update(k.service_key(name), Service, change)
        assert scaled is not None
        return respond(self.summary(scaled))

    @table.add(
        "POST",
        "/v1/services/{name}/images",
        "Roll out a new revision that changes only container images",
        body=ImagesBody,
        response=DeployResult,
        tags=("deployments",),
    )
    async def update_images(self, request: web.Request) -> web.Response:
        name = request.match_info["name"]
        body = validate_body(ImagesBody, await read_json(request))
        service = self.service(name)
        taskdef = self.cache.taskdefs.get((service.family, service.revision))
        if taskdef is None:
            raise NotFound(f"no task definition {service.taskdef_ref}")
        names = [c.name for c in taskdef.containers]
        unknown = [c for c in body.images if c not in names]
        if unknown:
            raise SpecError(
                [
                    FieldError(f"images.{c}", f"{name} has no container {c!r} (it has {names})")
                    for c in unknown
                ]
            )
        containers = [
            c.model_copy(update={"image": body.images[c.name]}) if c.name in body.images else c
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
        _service, new, created, deployment = await self.writer.deploy(spec)
        result = DeployResult(
            service=name,
            revision=new.revision,
            created=created,
            count=spec.count,
            deployment=deployment.id if deployment else None,
            stop_first=deployment.stop_first if deployment else "",
        )
        return respond(result)

    @table.add(
        "POST",
        "/v1/services/{name}/rollback",
        "Deploy an earlier revision again (default: the last stable one)",
        body=RollbackBody,
        response=Deployment,
        tags=("deployments",),
    )
    async def rollback(self, request: web.Request) -> web.Response:
        name = request.match_info["name"]
        raw = await request.read()
        body = validate_body(RollbackBody, json.loads(raw) if raw.strip() else {})
        self.service(name)
        return respond(await self.writer.rollback(name, body.to))

    @table.add(
        "POST",
        "/v1/services/{name}/rebalance",
        "Move tasks to where the scheduler would place them now (nothing moves by itself)",
        response=RebalanceResult,
        tags=("services",),
    )
    async def rebalance(self, request: web.Request) -> web.Response:
        name = request.match_info["name"]
        for _ in range(MAX_ATTEMPTS):
            cache = self.cache
            snapshot = Snapshot(
                cache.services,
                cache.taskdefs,
                cache.tasks,
                cache.nodes,
                cache.deployments,
                cache.volumes,
            )
            decision = plan_rebalance(snapshot, name, seed=cache.revision)
            result = _rebalance_result(decision)
            if not decision.moves:
                return respond(result)
            # Built before any await: the mod revisions match the snapshot decided on. The
            # service is compared too, so a deployment or a scale in between wins, and we decide
            # again.
            now = self.clock()
            service_key = k.service_key(name)
            compares = [Compare(service_key, "mod", "==", cache.mod_revisions.get(service_key, 0))]
            ops: list[Op] = []
            for move in decision.moves:
                key = k.task_key(move.task)
                flagged = cache.tasks[move.task].model_copy(
                    update={"migrate": True, "updated_at": now}
                )
                compares.append(Compare(key, "mod", "==", cache.mod_revisions.get(key, 0)))
                ops.append(Put(key, k.encode(flagged)))
            sources = Counter(move.node for move in decision.moves)
            text = f"{name}: rebalancing {len(decision.moves)} task(s), " + ", ".join(
                f"{count} from {node}" for node, count in sorted(sources.items())
            )
            ops.append(new_event("service.rebalance", text, now=now, service=name))
            if await self.writer.commit(compares, ops) is not None:
                return respond(result)
            await asyncio.sleep(0.02)  # lost a CAS: the cache is about to show why
        raise Conflict(f"{name} is changing too fast to rebalance; try again")

    # ---- deployments ---------------------------------------------------------------------
    @table.add(
        "GET",
        "/v1/deployments",
        "Deployments, newest first (filter by service)",
        response=list[Deployment],
        query=("service",),
        blocking=True,
        tags=("deployments",),
    )
    async def list_deployments(self, request: web.Request) -> web.Response:
        service = request.query.get("service")
        if service:
            index = await block(request, self.cache, Topic.service_deployments(service))
            return respond(self.cache.deployments_of(service), index)
        index = await block(request, self.cache, Topic.ANY)
        found = sorted(
            self.cache.deployments.values(), key=lambda d: (d.created_at, d.id), reverse=True
        )
        return respond(found, index)

    @table.add(
        "GET",
        "/v1/deployments/{id}",
        "One deployment (block on it to follow its progress)",
        response=Deployment,
        blocking=True,
        tags=("deployments",),
    )
    async def get_deployment(self, request: web.Request) -> web.Response:
        deployment_id = request.match_info["id"]
        if deployment_id not in self.cache.deployments:
            raise NotFound(f"no deployment {deployment_id!r}")
        index = await block(request, self.cache, Topic.deployment(deployment_id))
        return respond(self.cache.deployments[deployment_id], index)

    @table.add(
        "POST",
        "/v1/services/{name}/stop",
        "Stop every task of a service (the service is kept, stopped)",
        response=ServiceSummary,
        tags=("services",),
    )
    async def stop(self, request: web.Request) -> web.Response:
        name = request.match_info["name"]
        self.service(name)
        now = self.clock()

        def change(current: Service | None) -> tuple[Service | None, list[Any]]:
            if current is None:
                raise NotFound(f"no service named {name!r}")
            event = new_event("service.stopped", f"{name} stopped", now=now, service=name)
            return current.model_copy(update={"status": "stopped", "updated_at": now}), [event]

        service = await self.writer.update(k.service_key(name), Service, change)
        assert service is not None
        return respond(self.summary(service))

    # ---- task definitions ----------------------------------------------------------------
    @table.add(
        "GET",
        "/v1/taskdefs/{family}",
        "Every revision of a task definition family",
        response=list[TaskDefinition],
        tags=("taskdefs",),
    )
    async def list_taskdefs(self, request: web.Request) -> web.Response:
        family = request.match_info["family"]
        revisions = self.cache.taskdef_revisions(family)
        if not revisions:
            raise NotFound(f"no task definition family {family!r}")
        return respond(revisions, self.cache.index(Topic.taskdefs(family)))

    @table.add(
        "GET",
        "/v1/taskdefs/{family}/{revision}",
        "One task definition revision",
        response=TaskDefinition,
        tags=("taskdefs",),
    )
    async def get_taskdef(self, request: web.Request) -> web.Response:
        family, raw = request.match_info["family"], request.match_info["revision"]
        if not raw.isdigit():
            raise SpecError([FieldError("revision", f"must be a positive integer, got {raw!r}")])
        taskdef = self.cache.taskdefs.get((family, int(raw)))
        if taskdef is None:
            raise NotFound(f"no task definition {family}:{raw}")
        return respond(taskdef)

    # ---- tasks ---------------------------------------------------------------------------
    @table.add(
        "GET",
        "/v1/tasks",
        "List tasks (filter by service or node)",
        response=list[Task],
        query=("service", "node"),
        blocking=True,
        tags=("tasks",),
    )
    async def list_tasks(self, request: web.Request) -> web.Response:
        service, node = request.query.get("service"), request.query.get("node")
        if service:
            index = await block(request, self.cache, Topic.service_tasks(service))
            tasks = self.cache.tasks_of_service(service)
        elif node:
            index = await block(request, self.cache, Topic.node_tasks(node))
            tasks = self.cache.tasks_on_node(node)
        else:
            index = await block(request, self.cache, Topic.TASKS)
            tasks = sorted(self.cache.tasks.values(), key=lambda t: (t.service, t.created_at, t.id))
        return respond(tasks, index)

    def task(self, task_id: str) -> Task:
        task = self.cache.tasks.get(task_id)
        if task is None:
            raise NotFound(f"no task {task_id!r}")
        return task

    @table.add("GET", "/v1/tasks/{id}", "One task", response=Task, blocking=True, tags=("tasks",))
    async def get_task(self, request: web.Request) -> web.Response:
        task_id = request.match_info["id"]
        index = await block(request, self.cache, Topic.task(task_id))
        return respond(self.task(task_id), index)

    @table.add(
        "PUT",
        "/v1/tasks/{id}/status",
        "Agent report of a task's state",
        body=TaskReport,
        response=Task,
        tags=("agents",),
    )
    async def report(self, request: web.Request) -> web.Response:
        self._agent_only(request)
        task_id = request.match_info["id"]
        report = validate_body(TaskReport, await read_json(request))
        now = self.clock()

        def change(current: Task | None) -> tuple[Task | None, list[Any]]:
            if current is None:
                raise NotFound(f"no task {task_id!r}")
            return apply_report(current, report, now)

        task = await self.writer.update(k.task_key(task_id), Task, change)
        return respond(task)

    @table.add(
        "PUT",
        "/v1/tasks/{id}/checks/{container}/ttl",
        "Set a TTL check's state (it turns critical when not set again within its ttl)",
        body=TtlUpdate,
        response=Task,
        tags=("tasks",),
    )
    async def update_ttl(self, request: web.Request) -> web.Response:
        task_id, container = request.match_info["id"], request.match_info["container"]
        body = validate_body(TtlUpdate, await read_json(request))
        task = self.cache.tasks.get(task_id)
        if task is None:
            raise NotFound(f"no task {task_id!r}")
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

        def change(current: Task | None) -> tuple[Task | None, list[Any]]:
            if current is None:
                raise NotFound(f"no task {task_id!r}")
            return current.model_copy(update={"ttl": {**current.ttl, container: state}}), []

        return respond(await self.writer.update(k.task_key(task_id), Task, change))

    # ---- nodes ---------------------------------------------------------------------------
    @table.add(
        "GET", "/v1/nodes", "List nodes", response=list[Node], blocking=True, tags=("nodes",)
    )
    async def list_nodes(self, request: web.Request) -> web.Response:
        index = await block(request, self.cache, Topic.NODES)
        nodes = sorted(self.cache.nodes.values(), key=lambda n: n.name)
        return respond([self._with_heartbeat(n) for n in nodes], index)

    def _with_heartbeat(self, node: Node) -> Node:
        seen = self.heartbeats.get(node.name)
        if seen is None or seen <= node.heartbeat_at:
            return node
        return node.model_copy(update={"heartbeat_at": seen})

    @table.add(
        "PUT",
        "/v1/nodes/{name}",
        "Register (or re-register) a node",
        body=Node,
        response=Node,
        tags=("agents",),
    )
    async def register_node(self, request: web.Request) -> web.Response:
        self._agent_only(request)
        name = request.match_info["name"]
        node = validate_body(Node, await read_json(request))
        if node.name != name:
            raise SpecError(
                [FieldError("name", f"must match the URL ({name!r}), got {node.name!r}")]
            )
        now = self.clock()
        self.heartbeats[name] = now  # registering is a sign of life too

        def change(current: Node | None) -> tuple[Node | None, list[Any]]:
            registered = node_rules.registered(current, node, now)
            verb = "registered" if current is None else "re-registered"
            text = f"node {name} {verb}: {node.cpu} cpu units, {node.memory} MiB, {node.address}"
            if registered.draining:
                text += "; still draining (until `moorage node eligible`)"
            return registered, [new_event("node.registered", text, now=now, node=name)]

        return respond(await self.writer.update(k.node_key(name), Node, change))

    @table.add(
        "POST",
        "/v1/nodes/{name}/drain",
        "Move every task off a node, keeping services at min_healthy_percent",
        body=DrainBody,
        response=Node,
        tags=("nodes",),
    )
    async def drain_node(self, request: web.Request) -> web.Response:
        name = request.match_info["name"]
        raw = await request.read()
        body = validate_body(DrainBody, json.loads(raw) if raw.strip() else {})
        # A spot interruption notice gives two minutes before the machine goes.
        deadline = min(body.deadline, SPOT_NOTICE) if body.spot_notice else body.deadline
        now = self.clock()

        def change(current: Node | None) -> tuple[Node | None, list[Any]]:
            if current is None:
                raise NotFound(f"no node {name!r}")
            why = " (spot interruption notice)" if body.spot_notice else ""
            text = f"node {name} draining{why}: tasks move away within {deadline:g}s"
            event = new_event("node.draining", text, now=now, node=name)
            return node_rules.drained(current, now + deadline), [event]

        return respond(await self.writer.update(k.node_key(name), Node, change))

    @table.add(
        "POST",
        "/v1/nodes/{name}/eligible",
        "Let a drained node take tasks again",
        response=Node,
        tags=("nodes",),
    )
    async def node_eligible(self, request: web.Request) -> web.Response:
        name = request.match_info["name"]
        now = self.clock()

        def change(current: Node | None) -> tuple[Node | None, list[Any]]:
            if current is None:
                raise NotFound(f"no node {name!r}")
            event = new_event("node.eligible", f"node {name} takes tasks again", now=now, node=name)
            return node_rules.made_eligible(current), [event]

        return respond(await self.writer.update(k.node_key(name), Node, change))

    @table.add("POST", "/v1/nodes/{name}/heartbeat", "Agent heartbeat", tags=("agents",))
    async def heartbeat(self, request: web.Request) -> web.Response:
        self._agent_only(request)
        name = request.match_info["name"]
        if name not in self.cache.nodes:
            raise NotFound(f"no node {name!r}: register first")
        now = self.clock()
        self.heartbeats[name] = now
        nodes = len(self.cache.nodes)
        answer = {"interval": heartbeat_interval(nodes), "ttl": heartbeat_ttl(nodes)}
        node = self.cache.nodes[name]
        if node.status == NodeStatus.DOWN:
            await self._node_back(name, now)
            return respond(answer)
        # Heartbeats live in memory (like Nomad's TTL timers); the store only gets a coarse mark,
        # so a quiet cluster does not write every few seconds.
        if now - node.heartbeat_at < HEARTBEAT_PERSIST:
            return respond(answer)

        def change(current: Node | None) -> tuple[Node | None, list[Any]]:
            if current is None:
                raise NotFound(f"no node {name!r}: register first")
            return current.model_copy(update={"heartbeat_at": now}), []

        await self.writer.update(k.node_key(name), Node, change)
        return respond(answer)

    async def _node_back(self, name: str, now: float) -> None:
        def change(current: Node | None) -> tuple[Node | None, list[Any]]:
            if current is None:
                raise NotFound(f"no node {name!r}: register first")
            text = f"node {name} is back: its lost tasks are stopped there"
            if current.draining:
                text += "; still draining (until `moorage node eligible`)"
            event = new_event("node.up", text, now=now, node=name)
            return node_rules.back(current, now), [event]

        await self.writer.update(k.node_key(name), Node, change)

    @table.add(
        "GET",
        "/v1/nodes/{name}/tasks",
        "Tasks assigned to a node (agents watch this)",
        response=list[Task],
        blocking=True,
        tags=("agents",),
    )
    async def node_tasks(self, request: web.Request) -> web.Response:
        self._agent_only(request)
        name = request.match_info["name"]
        index = await block(request, self.cache, Topic.node_tasks(name))
        return respond(self.cache.tasks_on_node(name), index)

    # ---- events --------------------------------------------------------------------------
    @table.add(
        "GET",
        "/v1/events",
        "Recent cluster events (newest last)",
        response=list[Event],
        query=("service", "after"),
        blocking=True,
        tags=("events",),
    )
    async def list_events(self, request: web.Request) -> web.Response:
        index = await block(request, self.cache, Topic.EVENTS)
        after = _int_query(request, "after", 0)
        service = request.query.get("service")
        events = [
            e
            for e in self.cache.events
            if e.revision > after and (not service or e.service == service)
        ]
        return respond(events, index)

    @table.add(
        "GET",
        "/v1/events/stream",
        "Cluster events as they happen (server-sent events)",
        query=("service", "after"),
        content_type="text/event-stream",
        tags=("events",),
    )
    async def stream_events(self, request: web.Request) -> web.StreamResponse:
        service = request.query.get("service")
        after = _int_query(request, "after", self.cache.index(Topic.EVENTS))
        queue = self.cache.subscribe_events()
        response = web.StreamResponse(
            headers={"Content-Type": "text/event-stream", "Cache-Control": "no-cache"}
        )
        await response.prepare(request)
        try:
            backlog = [e for e in self.cache.events if e.revision > after]
            seen = max((e.revision for e in backlog), default=after)
            for event in backlog:
                await _send_event(response, event, service)
            while True:
                try:
                    event = await asyncio.wait_for(queue.get(), timeout=15)
                except TimeoutError:
                    await response.write(b": keepalive\n\n")
                    continue
                if event.revision > seen:
                    await _send_event(response, event, service)
        finally:
            self.cache.unsubscribe_events(queue)

    # ---- meta ----------------------------------------------------------------------------
    @table.add("GET", "/v1/status", "Server status", response=StatusInfo, tags=("status",))
    async def status(self, request: web.Request) -> web.Response:
        info = StatusInfo(
            version=__version__,
            leader=request.host,
            revision=self.cache.revision,
            store=self.store_name,
            nodes=len(self.cache.nodes),
            services=len(self.cache.services),
            tasks=len(self.cache.tasks),
        )
        return respond(info)

    @table.add("GET", "/v1/openapi.json", "This API, described as OpenAPI 3.1", tags=("status",))
    async def openapi(self, request: web.Request) -> web.Response:
        return web.json_response(table.openapi("moorage", __version__))


async def _send_event(response: web.StreamResponse, event: Event, service: str | None) -> None:
    if service and event.service != service:
        return
    payload = json.dumps(event.model_dump(mode="json"))
    await response.write(f"id: {event.revision}\nevent: {event.type}\ndata: {payload}\n\n".encode())


def _rebalance_result(decision: Rebalance) -> RebalanceResult:
    moves = [RebalanceMove(task=m.task, from_node=m.node) for m in decision.moves]
    return RebalanceResult(
        service=decision.service,
        moves=moves,
        current=decision.current,
        target=decision.target,
        message=decision.message,
    )


def _int_query(request: web.Request, name: str, default: int) -> int:
    raw = request.query.get(name)
    if raw is None:
        return default
    try:
        return int(raw)
    except ValueError:
        raise SpecError(
            [FieldError(name, f"must be an integer, got {raw!r}")], code="invalid_query"
        ) from None


TASK_LIST = TypeAdapter(list[Task])
# How stale the stored heartbeat mark may get before a heartbeat refreshes it (seconds).
HEARTBEAT_PERSIST = 60.0
