"""ACL enforcement and management.

Off unless the server runs with `--acl`. When on, every API request is checked in one
middleware before its handler: the token (`X-Moorage-Token`, `X-Consul-Token`,
`Authorization: Bearer`, or the legacy `?token=`) is looked up by its SHA-256 in the state cache,
its policies' rules are matched against what the route needs (`needs()` below: a resource, a
name and a level). A request without a token gets the rules of the policy named `anonymous`
(none until someone creates it: default deny). The agents'
calls carry the cluster's join token and are checked by the JoinGuard instead. Handlers that
list things (the catalog's service names) filter through `authorizer(request)`.

    PUT|POST /v1/acl/bootstrap      the first management token (once)
    PUT  /v1/acl/policy             {"Name", "Description", "Rules": ["kv:app/=write", ...]}
    GET  /v1/acl/policies · DELETE /v1/acl/policy/{name}
    PUT  /v1/acl/token              {"Description", "Policies": ["name", ...]}: SecretID shown once
    GET  /v1/acl/tokens · GET /v1/acl/token/self · DELETE /v1/acl/token/{accessor}
"""

from __future__ import annotations

import secrets
import uuid
from collections.abc import Awaitable, Callable, Mapping
from typing import Any

from aiohttp import web

from moorage.model import Conflict, FieldError, Forbidden, NotFound, SpecError
from moorage.model.acl import Level, Policy, Rule, Token, secret_digest
from moorage.state import StateCache, StateWriter
from moorage.state import keys as k
from moorage.state.writer import new_event
from moorage.store import Compare, Delete, Put

from .api import table
from .authz import ALLOW_ALL, Authorizer, Need
from .errors import error_response, read_json
from .join import JoinGuard

Handler = Callable[[web.Request], Awaitable[web.StreamResponse]]

ANONYMOUS = "anonymous"  # the policy requests without a token get (none: they get nothing)
# Routes anyone may call: what a load balancer, a scraper's discovery or a client library asks
# before it sends a token.
OPEN = {
    "/v1/status",
    "/v1/status/leader",
    "/v1/status/peers",
    "/v1/agent/self",
    "/v1/catalog/datacenters",
    "/v1/openapi.json",
    "/v1/acl/bootstrap",
    "/v1/acl/token/self",  # answers only about the token the request carries
}
# Routes of the agents: the join token guards them (JoinGuard), not ACL tokens.
AGENT = {
    ("PUT", "/v1/nodes/{name}"),
    ("POST", "/v1/nodes/{name}/heartbeat"),
    ("GET", "/v1/nodes/{name}/tasks"),
    ("PUT", "/v1/tasks/{id}/status"),
    ("GET", "/v1/tasks/{id}/secrets"),
    ("GET", "/v1/nodes/{name}/registrations"),
    ("PUT", "/v1/registrations/{id}/checks/{check}"),
    ("POST", "/v1/volumes/{name}/claim"),
    ("POST", "/v1/volumes/{name}/renew"),
    ("POST", "/v1/volumes/{name}/release"),
    ("POST", "/v1/metrics/ingest"),
}


def metrics_needs(params: Mapping[str, str]) -> list[Need]:
    """Metrics describe nodes and the services' tasks on them, so reading them is reading
    those: a task series (`task_*`) needs read on its service (the `service` matcher, else
    all services); a node or agent series needs read on its node (the `node` matcher, else
    all nodes); anything else (no metric named: every series) needs both on all."""
    metric = params.get("metric", "")
    service = Need("service", params.get("service", ""), Level.READ)
    node = Need("node", params.get("node", ""), Level.READ)
    if metric.startswith("task_"):
        return [service]
    if metric.startswith(("node_", "agent_")):
        return [node]
    return [Need("service", "", Level.READ), Need("node", "", Level.READ)]


def request_token(request: web.Request) -> str:
    for header in ("X-Moorage-Token", "X-Consul-Token"):
        if request.headers.get(header):
            return request.headers[header]
    bearer = request.headers.get("Authorization", "")
    if bearer.startswith("Bearer "):
        return bearer[len("Bearer ") :]
    return request.query.get("token", "")


class AclGuard:
    def __init__(self, cache: StateCache, enabled: bool, join: JoinGuard | None = None) -> None:
        self.cache = cache
        self.enabled = enabled
        self.join = join

    def resolve(self, token: str) -> Authorizer | None:
        """The token's authorizer, or None for an unknown token."""
        if not token:  # anonymous: the rules of the policy named "anonymous", if any
            anonymous = self.cache.acl_policies.get(ANONYMOUS)
            return Authorizer(list(anonymous.rules) if anonymous is not None else [])
        found = self.cache.acl_by_digest.get(secret_digest(token))
        if found is None:
            return None
        if found.management:
            return ALLOW_ALL
        rules = [
            rule
            for name in found.policies
            if (policy := self.cache.acl_policies.get(name)) is not None
            for rule in policy.rules
        ]
        return Authorizer(rules)

    def needs(self, request: web.Request) -> list[Need] | None:
        """What the route needs; None when it is open (or the agents' own)."""
        route = request.match_info.route.resource
        pattern = route.canonical if route is not None else request.path
        method, info = request.method, request.match_info
        read = Level.READ if method in ("GET", "HEAD") else Level.WRITE
        if pattern == "/metrics":  # every node's and service's series (docs/metrics.md)
            return [Need("node", "", Level.READ), Need("service", "", Level.READ)]
        # Outside /v1/: the dashboard's static files (/ui/, server/ui.py) carry no data; the
        # page's own API calls send the user's token.
        if pattern in OPEN or (method, pattern) in AGENT or not pattern.startswith("/v1/"):
            return None
        if pattern.startswith("/v1/kv/"):
            return [Need("kv", request.path[len("/v1/kv/") :], read)]
        if pattern.startswith("/v1/acl/"):
            return [Need("acl", "", read)]
        if pattern.startswith(("/v1/catalog/service/", "/v1/health/")):
            return [Need("service", info.get("name", ""), Level.READ)]
        if pattern in ("/v1/catalog/services",):
            return []  # filtered by the handler
        if pattern.startswith(("/v1/catalog/nodes", "/v1/nodes")):
            return [Need("node", info.get("name", ""), read)]
        if pattern.startswith(("/v1/volumes", "/v1/snapshots")):
            # No resource of their own yet: volumes and their snapshots belong to the services
            # (all of them).
            return [Need("service", "", read)]
        if pattern.startswith(("/v1/alerts", "/v1/silences")):
            # Alerts watch every service and node: read (or write) on all services, as the
            # cluster-wide lists. Notifier routing keys are never shown in clear.
            return [Need("service", "", read)]
        if pattern in ("/v1/metrics/query", "/v1/metrics/series"):
            return metrics_needs(request.query)
        if pattern.startswith("/v1/secrets"):
            return [Need("secret", info.get("name", ""), read)]
        if pattern.startswith("/v1/exec/"):
            return [Need("exec", self._service_of(info["target"]), Level.WRITE)]
        if pattern.startswith(("/v1/event", "/v1/events")):
            return [Need("event", info.get("name", ""), read)]
        if pattern.startswith("/v1/services/{name}"):
            return [Need("service", info["name"], read)]
        if pattern.startswith("/v1/tasks/{id}"):
            return [Need("service", self._service_of(info["id"]), read)]
        if pattern.startswith("/v1/taskdefs"):
            return [Need("service", info.get("family", ""), Level.READ)]
        if pattern.startswith(("/v1/agent/service", "/v1/agent/check/")):
            return []  # the handlers check the service they touch, and filter lists
        if pattern in ("/v1/services", "/v1/validate"):
            # Deploying names its service in the body: the handler checks it; listing needs
            # read on every service.
            return [Need("service", "", Level.READ)] if method == "GET" else []
        # Lists of tasks and deployments, and anything new: read (or write) on all services.
        return [Need("service", "", read)]

    def _service_of(self, target: str) -> str:
        task = self.cache.tasks.get(target)
        return task.service if task is not None else target

    @web.middleware
    async def middleware(self, request: web.Request, handler: Handler) -> web.StreamResponse:
        if not self.enabled:
            return await handler(request)
        needs = self.needs(request)
        token = request_token(request)
        agent = self.join is not None and bool(token) and self.join.matches(token)
        if agent and request.path.startswith(("/v1/taskdefs/", "/v1/event/list")):
            return await handler(request)  # an agent reads its task definitions and events
        if needs is None:
            return await handler(request)
        authz = self.resolve(token)
        if authz is None:
            return error_response(Forbidden("ACL not found: the token is not known"))
        for need in needs:
            if not authz.allows(need.resource, need.name, need.level):
                return error_response(
                    Forbidden(
                        f"permission denied: the {'anonymous token' if not token else 'token'}"
                        f" lacks {need}"
                    )
                )
        request["moorage.authz"] = authz
        return await handler(request)


def _token_json(token: Token, secret: str | None = None) -> dict[str, Any]:
    out: dict[str, Any] = {
        "AccessorID": token.accessor_id,
        "Description": token.description,
        "Policies": [{"Name": name} for name in token.policies],
        "Management": token.management,
        "CreateTime": token.created_at,
    }
    if secret is not None:
        out["SecretID"] = secret  # shown once; only its SHA-256 is stored
    return out


def _policy_json(policy: Policy) -> dict[str, Any]:
    return {
        "Name": policy.name,
        "Description": policy.description,
        "Rules": [str(rule) for rule in policy.rules],
    }


class AclApi:
    def __init__(
        self, cache: StateCache, writer: StateWriter, clock: Callable[[], float], enabled: bool
    ) -> None:
        self.cache = cache
        self.writer = writer
        self.clock = clock
        self.enabled = enabled

    def _on(self) -> None:
        if not self.enabled:
            raise Conflict("ACLs are off on this server (start it with --acl)")

    @table.add("POST", "/v1/acl/bootstrap", "Create the first management token", tags=("acl",))
    async def acl_bootstrap(self, request: web.Request) -> web.Response:
        self._on()
        secret = str(uuid.UUID(bytes=secrets.token_bytes(16), version=4))
        now = self.clock()
        token = Token(
            accessor_id=str(uuid.uuid4()),
            secret_sha256=secret_digest(secret),
            description="Bootstrap Token (Global Management)",
            management=True,
            created_at=now,
        )
        marker = k.meta_key("acl-bootstrap")
        ops = [
            Put(marker, token.accessor_id.encode()),
            Put(k.acl_token_key(token.accessor_id), k.encode(token)),
            new_event("acl.bootstrap", "ACL bootstrap: management token created", now=now),
        ]
        if await self.writer.commit([Compare.absent(marker)], ops) is None:
            raise Conflict("ACL bootstrap already done (the management token exists)")
        return web.json_response(_token_json(token, secret))

    @table.add(
        "PUT",
        "/v1/acl/bootstrap",
        "Create the first management token (Consul's verb)",
        tags=("acl",),
    )
    async def acl_bootstrap_put(self, request: web.Request) -> web.Response:
        return await self.acl_bootstrap(request)

    @table.add(
        "GET",
        "/v1/acl/token/self",
        "The token the request carries (no ACL rule needed)",
        tags=("acl",),
    )
    async def acl_token_self(self, request: web.Request) -> web.Response:
        self._on()
        secret = request_token(request)
        found = self.cache.acl_by_digest.get(secret_digest(secret)) if secret else None
        if found is None:
            raise Forbidden("ACL not found: the token is not known")
        return web.json_response(_token_json(found))

    @table.add("PUT", "/v1/acl/policy", "Create or replace a policy", tags=("acl",))
    async def acl_policy_put(self, request: web.Request) -> web.Response:
        self._on()
        body = await read_json(request)
        if not isinstance(body, dict):
            raise SpecError([FieldError("", "must be a JSON object")])
        rules_raw = body.get("Rules", [])
        if not isinstance(rules_raw, list) or not all(isinstance(r, str) for r in rules_raw):
            raise SpecError([FieldError("Rules", "must be a list of RESOURCE[:PREFIX]=LEVEL")])
        rules = [Rule.parse(r, f"Rules[{i}]") for i, r in enumerate(rules_raw)]
        try:
            policy = Policy(
                name=str(body.get("Name", "")),
                description=str(body.get("Description", "")),
                rules=rules,
                created_at=self.clock(),
            )
        except ValueError:
            raise SpecError(
                [FieldError("Name", "must be 1-128 letters, digits, '-' or '_'")]
            ) from None
        await self.writer.commit([], [Put(k.acl_policy_key(policy.name), k.encode(policy))])
        return web.json_response(_policy_json(policy))

    @table.add("GET", "/v1/acl/policies", "List policies", tags=("acl",))
    async def acl_policies(self, request: web.Request) -> web.Response:
        self._on()
        policies = sorted(self.cache.acl_policies.values(), key=lambda p: p.name)
        return web.json_response([_policy_json(p) for p in policies])

    @table.add("DELETE", "/v1/acl/policy/{name}", "Delete a policy", tags=("acl",))
    async def acl_policy_delete(self, request: web.Request) -> web.Response:
        self._on()
        name = request.match_info["name"]
        if name not in self.cache.acl_policies:
            raise NotFound(f"no policy {name!r}")
        await self.writer.commit([], [Delete(k.acl_policy_key(name))])
        return web.json_response(True)

    @table.add("PUT", "/v1/acl/token", "Create a token (its SecretID is shown once)", tags=("acl",))
    async def acl_token_put(self, request: web.Request) -> web.Response:
        self._on()
        body = await read_json(request)
        if not isinstance(body, dict):
            raise SpecError([FieldError("", "must be a JSON object")])
        names: list[str] = []
        for i, item in enumerate(body.get("Policies", [])):
            name = item.get("Name") if isinstance(item, dict) else item
            if not isinstance(name, str) or name not in self.cache.acl_policies:
                raise SpecError([FieldError(f"Policies[{i}]", f"no policy {name!r}")])
            names.append(name)
        secret = str(uuid.UUID(bytes=secrets.token_bytes(16), version=4))
        token = Token(
            accessor_id=str(uuid.uuid4()),
            secret_sha256=secret_digest(secret),
            description=str(body.get("Description", "")),
            policies=names,
            created_at=self.clock(),
        )
        await self.writer.commit([], [Put(k.acl_token_key(token.accessor_id), k.encode(token))])
        return web.json_response(_token_json(token, secret))

    @table.add("GET", "/v1/acl/tokens", "List tokens (never their secrets)", tags=("acl",))
    async def acl_tokens(self, request: web.Request) -> web.Response:
        self._on()
        tokens = sorted(self.cache.acl_tokens.values(), key=lambda t: t.created_at)
        return web.json_response([_token_json(t) for t in tokens])

    @table.add("DELETE", "/v1/acl/token/{accessor}", "Delete a token", tags=("acl",))
    async def acl_token_delete(self, request: web.Request) -> web.Response:
        self._on()
        accessor = request.match_info["accessor"]
        if accessor not in self.cache.acl_tokens:
            raise NotFound(f"no token {accessor!r}")
        await self.writer.commit([], [Delete(k.acl_token_key(accessor))])
        return web.json_response(True)
