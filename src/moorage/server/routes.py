"""Every route declared once: method, path, handler, who may call it, and its published shape.

    routes = RouteTable()                                one table per server module

    class ServicesApi:
        @routes.get("/v1/services", "List services", auth=acl("service"), response=...)
        async def list_services(self, request): ...

    routes.bind(ServicesApi(...))  →  [Route, ...]        handlers bound to their object

Who may call a route (`auth=`, required; server/auth.py enforces it, in one middleware):

    OPEN                        anyone: status, discovery of the API, the dashboard's files
    AGENT                       agents only: the cluster's join token
    acl(resource, name, level)  an ACL token granting `level` (default: read for GET, write
                                otherwise) on `resource` `name` (default "": all of them; or
                                `path("param")`, `task_service("param")`); `agents=True` lets
                                the join token pass too
    acl_body(resource, level)   the names are in the body: the token must grant `level` on some
                                name before the body is read; the operation checks each one
    acl_filtered(resource)      a listing filtered item by item: any known token (the anonymous
                                one too) is answered with what it may read
    acl_needs(fn, text)         needs computed from the request (metrics queries)

With ACLs off (`--acl` not given) the `acl*` routes are open; AGENT routes never are. The
OpenAPI document (`openapi()`) is generated from the tables and the pydantic types the routes
declare, so the published document cannot drift from the code.
"""

from __future__ import annotations

import types
from collections.abc import Awaitable, Callable, Iterable
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import Any, Literal, TypeVar

from aiohttp import web
from pydantic import TypeAdapter

from moorage.model.acl import Level, Need
from moorage.state import StateCache

F = TypeVar("F", bound=Callable[..., Awaitable[web.StreamResponse]])
NameOf = Callable[[web.Request, StateCache], str]
NeedsOf = Callable[[web.Request, StateCache], list[Need]]


# ---- who may call ------------------------------------------------------------------------
@dataclass(frozen=True)
class Auth:
    kind: Literal["open", "agent", "acl"]
    text: str  # how the docs and the OpenAPI document describe it


@dataclass(frozen=True)
class AclAuth(Auth):
    needs: NeedsOf = field(default=lambda request, cache: [])
    mode: Literal["checked", "body", "filtered"] = "checked"
    resource: str = ""
    level: Level | None = None  # body mode: the level some name must be granted
    agents: bool = False  # the cluster's join token passes too


OPEN = Auth("open", "anyone")
AGENT = Auth("agent", "agents (the cluster's join token)")


def path(param: str) -> NameOf:
    """The name is the path parameter `param`."""
    return lambda request, cache: request.match_info.get(param, "")


def task_service(param: str) -> NameOf:
    """The name is the service of the task the path parameter names (else the parameter)."""

    def name(request: web.Request, cache: StateCache) -> str:
        target = request.match_info.get(param, "")
        task = cache.tasks.get(target)
        return task.service if task is not None else target

    return name


def _by_method(request: web.Request) -> Level:
    return Level.READ if request.method in ("GET", "HEAD") else Level.WRITE


def acl(
    resource: str, name: NameOf | None = None, level: Level | None = None, *, agents: bool = False
) -> AclAuth:
    def needs(request: web.Request, cache: StateCache) -> list[Need]:
        found = name(request, cache) if name is not None else ""
        return [Need(resource, found, level or _by_method(request))]

    where = f"{resource}:<name>" if name is not None else resource
    what = f"ACL {where} {level.value if level else 'read (GET) / write'}"
    return AclAuth("acl", what + (", or agents" if agents else ""), needs, agents=agents)


def acl_body(resource: str, level: Level) -> AclAuth:
    text = f"ACL {resource}:<each name in the body> {level.value}"
    return AclAuth("acl", text, mode="body", resource=resource, level=level)


def acl_filtered(resource: str) -> AclAuth:
    text = f"ACL token (any); the answer lists the {resource}s it may read"
    return AclAuth("acl", text, mode="filtered", resource=resource)


def acl_needs(needs: NeedsOf, text: str) -> AclAuth:
    return AclAuth("acl", f"ACL {text}", needs)


# ---- routes ------------------------------------------------------------------------------
@dataclass(frozen=True)
class Route:
    method: str
    path: str
    handler: Callable[..., Awaitable[web.StreamResponse]]
    summary: str
    auth: Auth
    body: Any = None
    response: Any = None
    query: tuple[str, ...] = ()
    blocking: bool = False
    content_type: str = "application/json"
    tags: tuple[str, ...] = ()
    directory: Path | None = None  # static files served under `path`

    @property
    def name(self) -> str:
        return getattr(self.handler, "__qualname__", self.path)


class RouteTable:
    """The routes of one server module; `bind(obj)` hands them out bound to their object."""

    def __init__(self) -> None:
        self.routes: list[Route] = []

    def route(
        self, method: str, path: str, summary: str, *, auth: Auth, **meta: Any
    ) -> Callable[[F], F]:
        def register(handler: F) -> F:
            self.routes.append(Route(method, path, handler, summary, auth, **meta))
            return handler

        return register

    def get(self, path: str, summary: str, *, auth: Auth, **meta: Any) -> Callable[[F], F]:
        return self.route("GET", path, summary, auth=auth, **meta)

    def post(self, path: str, summary: str, *, auth: Auth, **meta: Any) -> Callable[[F], F]:
        return self.route("POST", path, summary, auth=auth, **meta)

    def put(self, path: str, summary: str, *, auth: Auth, **meta: Any) -> Callable[[F], F]:
        return self.route("PUT", path, summary, auth=auth, **meta)

    def delete(self, path: str, summary: str, *, auth: Auth, **meta: Any) -> Callable[[F], F]:
        return self.route("DELETE", path, summary, auth=auth, **meta)

    def static(self, path: str, directory: Path, summary: str, *, auth: Auth) -> None:
        self.routes.append(Route("GET", path, _no_handler, summary, auth, directory=directory))

    def bind(self, obj: object) -> list[Route]:
        """The routes with their handlers bound to `obj` (an instance of the API class)."""
        return [replace(r, handler=types.MethodType(r.handler, obj)) for r in self.routes]


async def _no_handler(request: web.Request) -> web.StreamResponse:
    raise web.HTTPNotFound()


# ---- OpenAPI -----------------------------------------------------------------------------
def openapi(routes: Iterable[Route], title: str, version: str) -> dict[str, Any]:
    components: dict[str, Any] = {}
    paths: dict[str, dict[str, Any]] = {}
    for route in routes:
        if route.directory is not None:
            continue
        operation: dict[str, Any] = {
            "summary": route.summary,
            "operationId": route.handler.__name__,
            "x-moorage-auth": route.auth.text,
            "security": SECURITY[route.auth.kind],
        }
        if route.tags:
            operation["tags"] = list(route.tags)
        params = [_param(name, "path") for name in _path_params(route.path)]
        params += [_param(name, "query") for name in route.query]
        if route.blocking:
            params += [_param("index", "query", "integer"), _param("wait", "query")]
        if params:
            operation["parameters"] = params
        if route.body is not None:
            operation["requestBody"] = {
                "required": True,
                "content": {"application/json": {"schema": _schema(route.body, components)}},
            }
        operation["responses"] = _responses(route, components)
        paths.setdefault(_openapi_path(route.path), {})[route.method.lower()] = operation
    components["Error"] = ERROR_SCHEMA
    return {
        "openapi": "3.1.0",
        "info": {"title": title, "version": version},
        "paths": paths,
        "components": {"schemas": components, "securitySchemes": SECURITY_SCHEMES},
    }


SECURITY_SCHEMES: dict[str, Any] = {
    "aclToken": {"type": "apiKey", "in": "header", "name": "X-Moorage-Token"},
    "joinToken": {"type": "http", "scheme": "bearer"},
}
SECURITY: dict[str, list[dict[str, list[str]]]] = {
    "open": [],
    "agent": [{"joinToken": []}],
    "acl": [{"aclToken": []}, {}],  # {}: with ACLs off, no token is needed
}
ERROR_SCHEMA: dict[str, Any] = {
    "type": "object",
    "required": ["code", "message", "errors"],
    "properties": {
        "code": {"type": "string"},
        "message": {"type": "string"},
        "errors": {
            "type": "array",
            "items": {
                "type": "object",
                "properties": {"field": {"type": "string"}, "message": {"type": "string"}},
            },
        },
    },
}


def _responses(route: Route, components: dict[str, Any]) -> dict[str, Any]:
    ok: dict[str, Any] = {"description": "OK"}
    if route.response is not None:
        ok["content"] = {route.content_type: {"schema": _schema(route.response, components)}}
    elif route.content_type != "application/json":
        ok["content"] = {route.content_type: {"schema": {"type": "string"}}}
    if route.blocking:
        ok["headers"] = {"X-Moorage-Index": {"schema": {"type": "integer"}}}
    error = {
        "description": "error",
        "content": {"application/json": {"schema": {"$ref": "#/components/schemas/Error"}}},
    }
    return {"200": ok, "4XX": error, "5XX": error}


def _schema(kind: Any, components: dict[str, Any]) -> dict[str, Any]:
    schema = TypeAdapter(kind).json_schema(ref_template="#/components/schemas/{model}")
    components.update(schema.pop("$defs", {}))
    title = schema.get("title")
    if schema.get("type") == "object" and isinstance(title, str) and "properties" in schema:
        components[title] = schema
        return {"$ref": f"#/components/schemas/{title}"}
    return schema


def _param(name: str, where: str, kind: str = "string") -> dict[str, Any]:
    return {"name": name, "in": where, "required": where == "path", "schema": {"type": kind}}


def _path_params(path: str) -> list[str]:
    return [
        part[1:-1].split(":", 1)[0]
        for part in path.split("/")
        if part.startswith("{") and part.endswith("}")
    ]


def _openapi_path(path: str) -> str:
    """An aiohttp path as OpenAPI writes it: `{key:.*}` (a regex) becomes `{key}`."""
    return "/".join(
        "{" + part[1:-1].split(":", 1)[0] + "}" if part.startswith("{") and ":" in part else part
        for part in path.split("/")
    )
