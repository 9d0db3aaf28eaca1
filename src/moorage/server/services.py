"""Services, their deployments and task definitions over HTTP (`moorage.ops.services`)."""

from __future__ import annotations

from aiohttp import web

from moorage.model import Deployment, ServiceSpec, TaskDefinition, parse_specs, validate_body
from moorage.model.acl import Level
from moorage.model.spec import specs_from_json
from moorage.model.views import (
    DeployResult,
    ImagesBody,
    RebalanceResult,
    RollbackBody,
    ScaleBody,
    ServiceDetail,
    ServiceSummary,
)
from moorage.ops import Services
from moorage.state import StateCache, Topic

from .acl import authorizer
from .auth import NODE_KEY
from .blocking import block
from .http import read_json, read_optional_json, read_text, respond
from .routes import NODE, RouteTable, acl, acl_body, path

routes = RouteTable()


async def read_specs(request: web.Request) -> list[ServiceSpec]:
    """moorage YAML text, or JSON spec objects."""
    if "yaml" in (request.content_type or "") or "text" in (request.content_type or ""):
        return parse_specs(await read_text(request))
    return specs_from_json(await read_json(request))


class ServicesApi:
    def __init__(self, services: Services, cache: StateCache) -> None:
        self.services = services
        self.cache = cache

    # ---- services ----------------------------------------------------------------------
    @routes.get(
        "/v1/services",
        "List services with task counts",
        auth=acl("service"),
        response=list[ServiceSummary],
        blocking=True,
        tags=("services",),
    )
    async def list_services(self, request: web.Request) -> web.Response:
        index = await block(request, self.cache, Topic.SERVICES)
        return respond(self.services.summaries(), index)

    @routes.get(
        "/v1/services/{name}",
        "One service, its summary and task definition",
        auth=acl("service", path("name")),
        response=ServiceDetail,
        blocking=True,
        tags=("services",),
    )
    async def get_service(self, request: web.Request) -> web.Response:
        name = request.match_info["name"]
        index = await block(request, self.cache, Topic.service(name))
        return respond(self.services.detail(name), index)

    @routes.post(
        "/v1/services",
        "Deploy specs (moorage YAML text, or JSON spec objects)",
        auth=acl_body("service", Level.WRITE),
        body=list[ServiceSpec],
        response=list[DeployResult],
        tags=("services",),
    )
    async def deploy(self, request: web.Request) -> web.Response:
        specs = await read_specs(request)
        return respond(await self.services.deploy(specs, authorizer(request)))

    @routes.post(
        "/v1/validate",
        "Validate specs and return them normalized",
        auth=acl_body("service", Level.READ),
        body=list[ServiceSpec],
        response=list[ServiceSpec],
        tags=("services",),
    )
    async def validate(self, request: web.Request) -> web.Response:
        return respond(await read_specs(request))

    @routes.post(
        "/v1/services/{name}/scale",
        "Set a service's task count",
        auth=acl("service", path("name")),
        body=ScaleBody,
        response=ServiceSummary,
        tags=("services",),
    )
    async def scale(self, request: web.Request) -> web.Response:
        body = validate_body(ScaleBody, await read_json(request))
        return respond(await self.services.scale(request.match_info["name"], body.count))

    @routes.post(
        "/v1/services/{name}/images",
        "Roll out a new revision that changes only container images",
        auth=acl("service", path("name")),
        body=ImagesBody,
        response=DeployResult,
        tags=("deployments",),
    )
    async def update_images(self, request: web.Request) -> web.Response:
        body = validate_body(ImagesBody, await read_json(request))
        return respond(await self.services.update_images(request.match_info["name"], body.images))

    @routes.post(
        "/v1/services/{name}/rollback",
        "Deploy an earlier revision again (default: the last stable one)",
        auth=acl("service", path("name")),
        body=RollbackBody,
        response=Deployment,
        tags=("deployments",),
    )
    async def rollback(self, request: web.Request) -> web.Response:
        body = validate_body(RollbackBody, await read_optional_json(request))
        return respond(await self.services.rollback(request.match_info["name"], body.to))

    @routes.post(
        "/v1/services/{name}/rebalance",
        "Move tasks to where the scheduler would place them now (nothing moves by itself)",
        auth=acl("service", path("name")),
        response=RebalanceResult,
        tags=("services",),
    )
    async def rebalance(self, request: web.Request) -> web.Response:
        return respond(await self.services.rebalance(request.match_info["name"]))

    @routes.post(
        "/v1/services/{name}/stop",
        "Stop every task of a service (the service is kept, stopped)",
        auth=acl("service", path("name")),
        response=ServiceSummary,
        tags=("services",),
    )
    async def stop(self, request: web.Request) -> web.Response:
        return respond(await self.services.stop(request.match_info["name"]))

    # ---- deployments -------------------------------------------------------------------
    @routes.get(
        "/v1/deployments",
        "Deployments, newest first (filter by service)",
        auth=acl("service"),
        response=list[Deployment],
        query=("service",),
        blocking=True,
        tags=("deployments",),
    )
    async def list_deployments(self, request: web.Request) -> web.Response:
        service = request.query.get("service")
        topic = Topic.service_deployments(service) if service else Topic.ANY
        index = await block(request, self.cache, topic)
        return respond(self.services.deployments(service), index)

    @routes.get(
        "/v1/deployments/{id}",
        "One deployment (block on it to follow its progress)",
        auth=acl("service"),
        response=Deployment,
        blocking=True,
        tags=("deployments",),
    )
    async def get_deployment(self, request: web.Request) -> web.Response:
        deployment_id = request.match_info["id"]
        self.services.deployment(deployment_id)  # 404 before waiting
        index = await block(request, self.cache, Topic.deployment(deployment_id))
        return respond(self.services.deployment(deployment_id), index)

    # ---- task definitions --------------------------------------------------------------
    @routes.get(
        "/v1/taskdefs/{family}",
        "Every revision of a task definition family",
        auth=acl("service", path("family"), Level.READ),
        response=list[TaskDefinition],
        tags=("taskdefs",),
    )
    async def list_taskdefs(self, request: web.Request) -> web.Response:
        family = request.match_info["family"]
        revisions = self.services.taskdefs(family)
        return respond(revisions, self.cache.index(Topic.taskdefs(family)))

    @routes.get(
        "/v1/taskdefs/{family}/{revision}",
        "One task definition revision",
        auth=acl("service", path("family"), Level.READ),
        response=TaskDefinition,
        tags=("taskdefs",),
    )
    @routes.get(
        "/v1/taskdefs/{family}/{revision}",
        "One task definition revision (a node: of its own tasks only)",
        auth=NODE,
        response=TaskDefinition,
        tags=("agents",),
    )
    async def get_taskdef(self, request: web.Request) -> web.Response:
        info = request.match_info
        caller = request.get(NODE_KEY)  # set on the cluster port only
        return respond(self.services.taskdef(info["family"], info["revision"], caller))
