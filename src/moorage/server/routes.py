"""Every route declared once: method, path, handler, who may call it, and its published shape.

    routes = RouteTable()                                one table per server module

    class ServicesApi:
        @routes.get("/v1/services", "List services", auth=acl("service"), response=...)
        async def list_services(self, request): ...

    routes.bind(ServicesApi(...))  →  [Route, ...]        handlers bound to their object

Who may call a route (`auth=`, required; server/auth.py enforces it, in one middleware):

    OPEN                        anyone: status, the CA certificate, the dashboard's files
    JOIN                        the cluster's join token: a new node asking for its certificate
    NODE, node(path("name"))    a node, by its certificate (mutual TLS on the cluster port);
                                with a name: only the node the path names
    acl(resource, name, level)  an ACL token granting `level` (default: read for GET, write
                                otherwise) on `resource` `name` (default "": all of them; or
                                `path("param")`, `task_service("param")`)
    acl_body(resource, level)   the names are in the body: the token must grant `level` on some
                                name before the body is read; the operation checks each one
    acl_filtered(resource)      a listing filtered item by item: any known token (the anonymous
                                one too) is answered with what it may read
    acl_needs(fn, text)         needs computed from the request (metrics queries)

A route is served on one side: "api" (the users' port, `--http-addr`) or "cluster" (the
nodes' port, `--cluster-addr`, always mutual TLS). JOIN and NODE routes are the cluster's;
with ACLs off (`--acl` not given) the `acl*` routes are open, the cluster's never are. Path
parameters are checked against their pattern (`PARAMS`) before any handler runs. The OpenAPI
document (`server/openapi.py`) is generated from the tables, these patterns and the pydantic
types the routes declare, so the published document cannot drift from the code.
"""

from __future__ import annotations

import re
import types
from collections.abc import Awaitable, Callable
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import Any, Literal, TypeVar

from aiohttp import web

from moorage.model.acl import Level, Need
from moorage.state import StateCache

F = TypeVar("F", bound=Callable[..., Awaitable[web.StreamResponse]])
Side = Literal["api", "cluster"]
NameOf = Callable[[web.Request, StateCache], str]
NeedsOf = Callable[[web.Request, StateCache], list[Need]]


# ---- who may call ------------------------------------------------------------------------
@dataclass(frozen=True)
class Auth:
    kind: Literal["open", "join", "node", "acl"]
    text: str  # how the docs and the OpenAPI document describe it
    node_name: NameOf | None = None  # node: the name the caller's certificate must carry


@dataclass(frozen=True)
class AclAuth(Auth):
    needs: NeedsOf = field(default=lambda request, cache: [])
    mode: Literal["checked", "body", "filtered"] = "checked"
    resource: str = ""
    level: Level | None = None  # body mode: the level some name must be granted


# Every path parameter is checked before any handler runs (400 naming it otherwise): names and
# ids are short words (no `/`, no leading `.`), revisions are numbers, KV keys are bounded.
NAME_PARAM = re.compile(r"^[A-Za-z0-9_][A-Za-z0-9_.:@-]{0,127}$")
PARAMS: dict[str, re.Pattern[str]] = {
    "revision": re.compile(r"^[0-9]{1,9}$"),
    "key": re.compile(r"^[^\x00]{0,1024}$"),
}


def param_problem(name: str, value: str) -> str | None:
    """Why a path parameter's value is refused (None: it is fine)."""
    pattern = PARAMS.get(name, NAME_PARAM)
    if pattern.fullmatch(value) is None:
        if name == "key":
            return "must be at most 1024 characters, without NUL"
        if name == "revision":
            return "must be a positive integer"
        return "must be 1-128 letters, digits, '_', '.', ':', '@' or '-', not starting with '.'"
    return None


OPEN = Auth("open", "anyone")
JOIN = Auth("join", "a new node: the cluster's join token")
NODE = Auth("node", "a node: its certificate (mutual TLS)")


def node(name: NameOf) -> Auth:
    """A node, and only the one `name` designates (its certificate names it)."""
    return Auth("node", "the node named in the path: its certificate (mutual TLS)", name)


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


def acl(resource: str, name: NameOf | None = None, level: Level | None = None) -> AclAuth:
    def needs(request: web.Request, cache: StateCache) -> list[Need]:
        found = name(request, cache) if name is not None else ""
        return [Need(resource, found, level or _by_method(request))]

    where = f"{resource}:<name>" if name is not None else resource
    what = f"ACL {where} {level.value if level else 'read (GET) / write'}"
    return AclAuth("acl", what, needs=needs)


def acl_body(resource: str, level: Level) -> AclAuth:
    text = f"ACL {resource}:<each name in the body> {level.value}"
    return AclAuth("acl", text, mode="body", resource=resource, level=level)


def acl_filtered(resource: str) -> AclAuth:
    text = f"ACL token (any); the answer lists the {resource}s it may read"
    return AclAuth("acl", text, mode="filtered", resource=resource)


def acl_needs(needs: NeedsOf, text: str) -> AclAuth:
    return AclAuth("acl", f"ACL {text}", needs=needs)


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
    query: tuple[str, ...] = ()  # the query parameters it reads (schemas: server/openapi.py)
    required: tuple[str, ...] = ()  # ... of which these must be given
    blocking: bool = False
    content_type: str = "application/json"
    tags: tuple[str, ...] = ()
    directory: Path | None = None  # static files served under `path`
    side: Side = "api"

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
        """Declare a route; the nodes' routes (JOIN, NODE) are served on the cluster port (an
        open route may say `side="cluster"` to be served there)."""
        side: Side = meta.pop("side", None) or (
            "cluster" if auth.kind in ("join", "node") else "api"
        )

        def register(handler: F) -> F:
            self.routes.append(Route(method, path, handler, summary, auth, side=side, **meta))
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
