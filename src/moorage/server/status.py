"""The server's own status, and the API described as OpenAPI."""

from __future__ import annotations

from collections.abc import Callable, Iterable

from aiohttp import web

from moorage import __version__
from moorage.model.views import StatusInfo
from moorage.state import StateCache

from .http import respond
from .openapi import openapi
from .routes import OPEN, Route, RouteTable

routes = RouteTable()


class StatusApi:
    def __init__(
        self,
        cache: StateCache,
        store_name: str,
        table: Callable[[], Iterable[Route]],
        ca_pem: bytes,
    ) -> None:
        self.cache = cache
        self.store_name = store_name
        self.table = table  # every route of this server (for the OpenAPI document)
        self.ca_pem = ca_pem

    @routes.get(
        "/v1/ca",
        "The cluster CA's certificate (PEM): check its fingerprint before trusting it",
        auth=OPEN,
        content_type="application/x-pem-file",
        tags=("status",),
    )
    @routes.get(
        "/v1/ca",
        "The cluster CA's certificate (PEM), for a node's first contact",
        auth=OPEN,
        side="cluster",
        content_type="application/x-pem-file",
        tags=("agents",),
    )
    async def ca(self, request: web.Request) -> web.Response:
        return web.Response(body=self.ca_pem, content_type="application/x-pem-file")

    @routes.get("/v1/status", "Server status", auth=OPEN, response=StatusInfo, tags=("status",))
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

    @routes.get(
        "/v1/openapi.json", "This API, described as OpenAPI 3.1", auth=OPEN, tags=("status",)
    )
    async def openapi(self, request: web.Request) -> web.Response:
        users = [route for route in self.table() if route.side == "api"]
        return web.json_response(openapi(users, "moorage", __version__))
