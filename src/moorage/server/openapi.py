"""The OpenAPI 3.1 document of the users' API, generated from the route tables: paths, who may
call each route, path and query parameters with the patterns the server enforces, bodies and
answers from the pydantic types the routes declare. What the document accepts is what the
server accepts, bar what JSON Schema cannot say (one field depending on another): fuzzing the
document (`schemathesis`, tests/integration/test_fuzz_api.py) reaches the logic, not the
validation.
"""

from __future__ import annotations

from collections.abc import Iterable
from typing import Any

from pydantic import TypeAdapter

from moorage.metrics.model import AGGREGATIONS
from moorage.metrics.params import LABEL, METRIC
from moorage.model.duration import DURATION_PATTERN

from .routes import NAME_PARAM, Route

WORD: dict[str, Any] = {"type": "string", "pattern": NAME_PARAM.pattern}
FLAG: dict[str, Any] = {"type": "string", "enum": ["", "true", "false", "1", "0"]}
# Blocking queries: Consul's Go durations and moorage's own agree on these units.
WAIT: dict[str, Any] = {"type": "string", "pattern": r"^([0-9]{1,4}(ms|s|m|h)){1,3}$"}
TIME: dict[str, Any] = {
    "type": "string",
    "pattern": r"^(now|-" + DURATION_PATTERN[1:-1] + r"|[0-9]{1,12}(\.[0-9]{1,6})?)$",
}
UINT64: dict[str, Any] = {"type": "integer", "minimum": 0, "maximum": 2**64 - 1}

# Path parameters (server/routes.py checks them before any handler runs).
PATH: dict[str, dict[str, Any]] = {
    "revision": {"type": "integer", "minimum": 1, "maximum": 999_999_999},
    "key": {"type": "string", "pattern": r"^[^\x00]{1,1024}$"},
}

# Query parameters by name; a route may say otherwise for its own (`Route.query` names them).
QUERY: dict[str, dict[str, Any]] = {
    "index": {"type": "integer", "minimum": 0, "maximum": 2**63 - 1},
    "wait": WAIT,
    "service": WORD,
    "node": WORD,
    "container": WORD,
    "after": {"type": "integer", "minimum": 0, "maximum": 2**63 - 1},
    "metric": {"type": "string", "pattern": METRIC.pattern, "maxLength": 200},
    "from": TIME,
    "to": TIME,
    "step": {"type": "string", "pattern": DURATION_PATTERN},
    "agg": {"type": "string", "enum": list(AGGREGATIONS)},
    "by": {"type": "string", "pattern": LABEL.pattern[:-1] + r"(," + LABEL.pattern[1:-1] + r")*$"},
    "follow": FLAG,
    "tty": FLAG,
    "stream": {"type": "string", "enum": ["stdout", "stderr", "both"]},
    "tail": {"type": "integer", "minimum": 0, "maximum": 1_000_000},
    "cmd": {"type": "string", "minLength": 1, "maxLength": 4096},
    # Consul's switches and consistency modes (no-ops: one server answers from memory)
    "recurse": FLAG,
    "keys": FLAG,
    "raw": FLAG,
    "stale": FLAG,
    "consistent": FLAG,
    "cached": FLAG,
    "pretty": FLAG,
    "passing": FLAG,
    "dc": {"type": "string", "enum": ["", "dc1"]},
    "separator": {"type": "string", "maxLength": 64},
    "cas": UINT64,
    "flags": UINT64,
    "tag": {"type": "string", "maxLength": 256},
    "node-meta": {"type": "string", "pattern": r"^[^:]{1,128}:.{0,256}$"},
    "name": WORD,
}
# where a parameter is a regular expression (RE2, at most 256 characters): event filters
EVENT_FILTER: dict[str, Any] = {"type": "string", "maxLength": 256}
REGEXP_QUERY = {"/v1/event/fire/{name}": ("node", "service", "tag")}


def openapi(routes: Iterable[Route], title: str, version: str) -> dict[str, Any]:
    components: dict[str, Any] = {}
    paths: dict[str, dict[str, Any]] = {}
    for route in routes:
        if route.directory is not None:
            continue
        operation: dict[str, Any] = {
            "summary": route.summary if route.side == "api" else f"{route.summary} (cluster port)",
            "operationId": route.handler.__name__,
            "x-moorage-auth": route.auth.text,
            "security": SECURITY[route.auth.kind],
        }
        if route.tags:
            operation["tags"] = list(route.tags)
        params = [
            _param(name, "path", PATH.get(name, WORD), True) for name in _path_params(route.path)
        ]
        query = list(route.query)
        if route.blocking:
            query += [name for name in ("index", "wait") if name not in query]
        for name in query:
            schema = QUERY.get(name, {"type": "string", "maxLength": 1024})
            if name in REGEXP_QUERY.get(route.path, ()):
                schema = EVENT_FILTER
            params.append(_param(name, "query", schema, name in route.required))
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
    "nodeCertificate": {"type": "mutualTLS"},
}
SECURITY: dict[str, list[dict[str, list[str]]]] = {
    "open": [],
    "join": [{"joinToken": []}],
    "node": [{"nodeCertificate": []}],
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
    raw = TypeAdapter(kind).json_schema(ref_template="#/components/schemas/{model}")
    schema: dict[str, Any] = _constraints(raw)
    components.update(schema.pop("$defs", {}))
    title = schema.get("title")
    if schema.get("type") == "object" and isinstance(title, str) and "properties" in schema:
        components[title] = schema
        return {"$ref": f"#/components/schemas/{title}"}
    return schema


# pydantic leaves a field's bounds beside a schema it was given whole (durations: a number or
# a string): as JSON Schema, on the number.
POSITIVE_DURATION = r"^(0{0,3}[1-9][0-9]{0,3}(\.[0-9]{1,3})?(ms|s|m|h|d)){1,3}$"
_BOUNDS = {"gt": "exclusiveMinimum", "ge": "minimum", "lt": "exclusiveMaximum", "le": "maximum"}


def _constraints(node: Any) -> Any:
    if isinstance(node, list):
        return [_constraints(item) for item in node]
    if not isinstance(node, dict):
        return node
    node = {key: _constraints(value) for key, value in node.items()}
    stray = {key: node.pop(key) for key in list(node) if key in _BOUNDS and "anyOf" in node}
    if stray:
        for branch in node["anyOf"]:
            if isinstance(branch, dict) and branch.get("type") == "number":
                branch.update({_BOUNDS[key]: value for key, value in stray.items()})
            duration = isinstance(branch, dict) and branch.get("pattern") == DURATION_PATTERN
            if duration and stray.get("gt") == 0:  # more than nothing: whole units or more
                branch["pattern"] = POSITIVE_DURATION
    return node


def _param(name: str, where: str, schema: dict[str, Any], required: bool) -> dict[str, Any]:
    return {"name": name, "in": where, "required": required, "schema": schema}


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
