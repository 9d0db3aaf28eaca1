"""A route table that also describes itself: the OpenAPI document is generated from it.

Handlers declare their body and response types; `openapi()` turns those pydantic types into
JSON Schema components, so the published document cannot drift from the code.
"""

from __future__ import annotations

from collections.abc import Awaitable, Callable
from dataclasses import dataclass, field
from typing import Any, TypeVar

from aiohttp import web
from pydantic import TypeAdapter

Handler = Callable[[web.Request], Awaitable[web.StreamResponse]]
F = TypeVar("F", bound=Callable[..., Awaitable[web.StreamResponse]])


@dataclass(frozen=True)
class Route:
    method: str
    path: str
    handler: Callable[..., Awaitable[web.StreamResponse]]
    summary: str
    body: Any = None
    response: Any = None
    query: tuple[str, ...] = ()
    blocking: bool = False
    content_type: str = "application/json"
    tags: tuple[str, ...] = ()


@dataclass
class RouteTable:
    routes: list[Route] = field(default_factory=list)

    def add(self, method: str, path: str, summary: str, **meta: Any) -> Callable[[F], F]:
        def register(handler: F) -> F:
            self.routes.append(Route(method, path, handler, summary, **meta))
            return handler

        return register

    def install(self, app: web.Application, bound: dict[str, Handler]) -> None:
        """Add every route to app; `bound` maps handler names to bound methods."""
        for route in self.routes:
            app.router.add_route(route.method, route.path, bound[route.handler.__name__])

    def openapi(self, title: str, version: str) -> dict[str, Any]:
        components: dict[str, Any] = {}
        paths: dict[str, dict[str, Any]] = {}
        for route in self.routes:
            operation: dict[str, Any] = {
                "summary": route.summary,
                "operationId": route.handler.__name__,
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
            "components": {"schemas": components},
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
