"""The one place that decides who may call a route: each route's declaration, enforced.

    request ─▶ its path parameters match their patterns? (400)
            ─▶ the route's `auth` (server/routes.py) ─┬─ OPEN  ─▶ handler
                                                      ├─ JOIN  ─▶ the join token? (401)
                                                      ├─ NODE  ─▶ a node certificate that still
                                                      │           speaks for its node, and (with
                                                      │           a name) the node named? (403)
                                                      └─ acl…  ─▶ ACLs off: handler; else
                                                                  AclGuard.admit (403)

Identity comes from credentials only: the join token, a certificate verified by the TLS layer
(mutual TLS on the cluster port), an ACL token; never from a field the caller fills in.
`Gate.install` adds the routes of one side (the users' port or the cluster port) to an app and
refuses, at startup, a method and path declared twice; `Gate.verify` refuses an app with a
route nobody declared. A request no route matches goes on to aiohttp's 404 / 405.
"""

from __future__ import annotations

from collections.abc import Awaitable, Callable, Iterable

from aiohttp import web
from aiohttp.web_urldispatcher import AbstractRoute

from moorage.model import FieldError, Forbidden, SpecError
from moorage.pki import Identity, identity_of
from moorage.state import StateCache

from .acl import AclGuard
from .join import JoinGuard
from .routes import AclAuth, Route, Side, param_problem

Handler = Callable[[web.Request], Awaitable[web.StreamResponse]]
NODE_KEY = web.RequestKey("node", str)  # the node a cluster-port request speaks for


class RouteError(Exception):
    """A route table that cannot be served: a duplicate, or a route without a declaration."""


def peer_identity(request: web.Request) -> Identity | None:
    """Whom the TLS peer's certificate names (verified by the TLS layer against the CA)."""
    transport = request.transport
    return identity_of(transport.get_extra_info("peercert")) if transport is not None else None


def node_of(request: web.Request) -> str:
    """The node a request on the cluster port speaks for (set by the Gate)."""
    return request[NODE_KEY]


class Gate:
    def __init__(
        self,
        join: JoinGuard,
        acl: AclGuard,
        cache: StateCache | None = None,
        speaks_for: Callable[[str, str], bool] | None = None,
    ) -> None:
        self.join = join
        self.acl = acl
        self.cache = cache
        self.speaks_for = speaks_for  # (node, certificate serial) → still its certificate?
        self.declared: dict[AbstractRoute, Route] = {}

    def install(self, app: web.Application, routes: Iterable[Route], side: Side = "api") -> None:
        seen: dict[tuple[str, str], Route] = {}
        for route in routes:
            if route.side != side:
                continue
            key = (route.method, route.path)
            if key in seen:
                raise RouteError(
                    f"{route.method} {route.path} is declared twice: by {seen[key].name} and "
                    f"by {route.name}"
                )
            seen[key] = route
            if route.directory is not None:
                resource = app.router.add_static(route.path, route.directory, append_version=False)
                self.declared.update((added, route) for added in resource)
            else:
                self.declared[app.router.add_route(route.method, route.path, route.handler)] = route

    def verify(self, app: web.Application) -> None:
        for added in app.router.routes():
            if added not in self.declared:
                info = added.resource.canonical if added.resource is not None else "?"
                raise RouteError(f"{added.method} {info} declares no auth (server/routes.py)")

    @web.middleware
    async def middleware(self, request: web.Request, handler: Handler) -> web.StreamResponse:
        route = self.declared.get(request.match_info.route)
        if route is not None and route.directory is None:  # files: aiohttp keeps them inside
            problems = [
                FieldError(name, problem)
                for name, value in request.match_info.items()
                if (problem := param_problem(name, value)) is not None
            ]
            if problems:
                raise SpecError(problems, code="invalid_path")
            self.admit(request, route)
        return await handler(request)

    def admit(self, request: web.Request, route: Route) -> None:
        auth = route.auth
        if auth.kind == "open":
            return
        if auth.kind == "join":
            self.join.check(request)
            return
        if auth.kind == "node":
            request[NODE_KEY] = self._node(request, route)
            return
        assert isinstance(auth, AclAuth)
        if self.acl.enabled:
            self.acl.admit(request, auth)

    def _node(self, request: web.Request, route: Route) -> str:
        """The node whose certificate the caller presented; Forbidden otherwise."""
        identity = peer_identity(request)
        if identity is None or identity.role != "node":
            raise Forbidden("this call needs a node certificate (the cluster port, mutual TLS)")
        if self.speaks_for is None or not self.speaks_for(identity.name, identity.serial):
            raise Forbidden(f"the certificate of node {identity.name} was revoked or replaced")
        wanted = route.auth.node_name
        if wanted is not None and self.cache is not None:
            named = wanted(request, self.cache)
            if named != identity.name:
                raise Forbidden(f"node {identity.name} may not act for node {named}")
        return identity.name
