"""The one place that decides who may call a route: each route's declaration, enforced.

    request ─▶ the route's `auth` (server/routes.py) ─┬─ OPEN   ─▶ handler
                                                       ├─ AGENT  ─▶ join token? (401) ─▶ handler
                                                       └─ acl…   ─▶ ACLs off: handler
                                                                   the join token, where the
                                                                   route lets agents in: handler
                                                                   AclGuard.admit (403) ─▶ handler

`Gate.install` adds the routes to the app and refuses, at startup, a method and path declared
twice; `Gate.verify` refuses an app with a route nobody declared (one added to the router by
hand). A request no route matches goes on to aiohttp's 404 / 405.
"""

from __future__ import annotations

from collections.abc import Awaitable, Callable, Iterable

from aiohttp import web
from aiohttp.web_urldispatcher import AbstractRoute

from .acl import AclGuard, request_token
from .join import JoinGuard
from .routes import AclAuth, Route

Handler = Callable[[web.Request], Awaitable[web.StreamResponse]]


class RouteError(Exception):
    """A route table that cannot be served: a duplicate, or a route without a declaration."""


class Gate:
    def __init__(self, join: JoinGuard, acl: AclGuard) -> None:
        self.join = join
        self.acl = acl
        self.declared: dict[AbstractRoute, Route] = {}

    def install(self, app: web.Application, routes: Iterable[Route]) -> None:
        seen: dict[tuple[str, str], Route] = {}
        for route in routes:
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
        if route is not None:
            self.admit(request, route)
        return await handler(request)

    def admit(self, request: web.Request, route: Route) -> None:
        auth = route.auth
        if auth.kind == "open":
            return
        if auth.kind == "agent":
            self.join.check(request)
            return
        assert isinstance(auth, AclAuth)
        if not self.acl.enabled:
            return
        if auth.agents and self.join.matches(request_token(request)):
            return  # an agent reads its task definitions and its events
        self.acl.admit(request, auth)
