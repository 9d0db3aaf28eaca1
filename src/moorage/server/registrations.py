"""Services registered from outside over HTTP: Consul's agent API (`moorage.ops.registrations`).

    PUT /v1/agent/service/register[?node=N]     Consul's body (ID, Name, Tags, Address, Port,
                                                Meta, Check / Checks)
    PUT /v1/agent/service/deregister/<id>
    PUT /v1/agent/check/pass|warn|fail/<check id>[?note=]   TTL checks
    PUT /v1/agent/check/update/<check id>       {"Status", "Output"}
    GET /v1/agent/services                      what is registered, by id

Agents watch `GET /v1/nodes/<node>/registrations` and report through
`PUT /v1/registrations/<id>/checks/<check id>` (both agents' routes).
"""

from __future__ import annotations

from aiohttp import web

from moorage.model import FieldError, Health, SpecError, validate_body
from moorage.model.acl import Level
from moorage.model.catalog import Registration
from moorage.model.messages import CheckReport
from moorage.ops import Registrations
from moorage.state import StateCache, Topic

from .acl import authorizer
from .auth import node_of
from .blocking import block
from .consul import check_params, consul_json
from .http import read_json, respond
from .routes import NODE, RouteTable, acl_body, acl_filtered, node, path

routes = RouteTable()


class RegistrationsApi:
    def __init__(self, registrations: Registrations, cache: StateCache) -> None:
        self.registrations = registrations
        self.cache = cache

    def _done(self) -> web.Response:
        return consul_json(None, self.cache.index(Topic.REGISTRATIONS))

    @routes.put(
        "/v1/agent/service/register",
        "Consul: register a service from outside",
        auth=acl_body("service", Level.WRITE),
        tags=("consul",),
    )
    async def consul_service_register(self, request: web.Request) -> web.Response:
        check_params(request, {"node", "replace-existing-checks"})
        node = self.registrations.node_for(request.query.get("node"), request.remote or "")
        replace = request.query.get("replace-existing-checks", "false").lower()
        body = await read_json(request)
        await self.registrations.register(body, node, replace, authorizer(request))
        return self._done()

    @routes.put(
        "/v1/agent/service/deregister/{id}",
        "Consul: remove a registered service",
        auth=acl_body("service", Level.WRITE),
        tags=("consul",),
    )
    async def consul_service_deregister(self, request: web.Request) -> web.Response:
        check_params(request)
        await self.registrations.deregister(request.match_info["id"], authorizer(request))
        return self._done()

    @routes.get(
        "/v1/agent/services",
        "Consul: registered services",
        auth=acl_filtered("service"),
        tags=("consul",),
    )
    async def consul_agent_services(self, request: web.Request) -> web.Response:
        check_params(request)
        out = {
            r.id: {
                "ID": r.id,
                "Service": r.name,
                "Tags": r.tags,
                "Meta": r.meta,
                "Port": r.port,
                "Address": r.address,
                "Weights": {"Passing": 1, "Warning": 1},
                "EnableTagOverride": False,
                "Datacenter": "dc1",
            }
            for r in self.registrations.listed(authorizer(request))
        }
        return consul_json(out, self.cache.index(Topic.REGISTRATIONS))

    async def _set(self, request: web.Request, status: Health, output: str) -> web.Response:
        check = request.match_info["check"]
        await self.registrations.set_ttl(check, status, output, authorizer(request))
        return self._done()

    @routes.put(
        "/v1/agent/check/pass/{check}",
        "Consul: a TTL check passes",
        auth=acl_body("service", Level.WRITE),
        tags=("consul",),
    )
    async def consul_check_pass(self, request: web.Request) -> web.Response:
        check_params(request, {"note"})
        return await self._set(request, Health.PASSING, request.query.get("note", ""))

    @routes.put(
        "/v1/agent/check/warn/{check}",
        "Consul: a TTL check warns",
        auth=acl_body("service", Level.WRITE),
        tags=("consul",),
    )
    async def consul_check_warn(self, request: web.Request) -> web.Response:
        check_params(request, {"note"})
        return await self._set(request, Health.WARNING, request.query.get("note", ""))

    @routes.put(
        "/v1/agent/check/fail/{check}",
        "Consul: a TTL check fails",
        auth=acl_body("service", Level.WRITE),
        tags=("consul",),
    )
    async def consul_check_fail(self, request: web.Request) -> web.Response:
        check_params(request, {"note"})
        return await self._set(request, Health.CRITICAL, request.query.get("note", ""))

    @routes.put(
        "/v1/agent/check/update/{check}",
        "Consul: set a TTL check",
        auth=acl_body("service", Level.WRITE),
        tags=("consul",),
    )
    async def consul_check_update(self, request: web.Request) -> web.Response:
        check_params(request)
        body = await read_json(request)
        status = body.get("Status") if isinstance(body, dict) else None
        if status not in {h.value for h in Health}:
            raise SpecError([FieldError("Status", "must be passing, warning or critical")])
        output = str(body.get("Output", "")) if isinstance(body, dict) else ""
        return await self._set(request, Health(status), output)

    # ---- the agents' side ----------------------------------------------------------------
    @routes.get(
        "/v1/nodes/{name}/registrations",
        "Agent: the registered services whose checks this node runs",
        auth=node(path("name")),
        response=list[Registration],
        blocking=True,
        tags=("agents",),
    )
    async def node_registrations(self, request: web.Request) -> web.Response:
        name = request.match_info["name"]
        index = await block(request, self.cache, Topic.node_registrations(name))
        return respond(self.registrations.of_node(name), index)

    @routes.put(
        "/v1/registrations/{id}/checks/{check}",
        "Agent: a registered service's check result",
        auth=NODE,
        body=CheckReport,
        tags=("agents",),
    )
    async def registration_check(self, request: web.Request) -> web.Response:
        report = validate_body(CheckReport, await read_json(request))
        info = request.match_info
        await self.registrations.record(info["id"], info["check"], report, node_of(request))
        return respond(True)
