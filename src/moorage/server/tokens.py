"""ACL tokens and policies over HTTP, Consul's verbs (`moorage.ops.acl`):

PUT|POST /v1/acl/bootstrap      the first management token (once)
PUT  /v1/acl/policy             {"Name", "Description", "Rules": ["kv:app/=write", ...]}
GET  /v1/acl/policies · DELETE /v1/acl/policy/{name}
PUT  /v1/acl/token              {"Description", "Policies": ["name", ...]}: SecretID shown once
GET  /v1/acl/tokens · GET /v1/acl/token/self · DELETE /v1/acl/token/{accessor}
"""

from __future__ import annotations

from typing import Any

from aiohttp import web

from moorage.model.acl import Policy, Token
from moorage.ops import Acl

from .acl import request_token
from .http import read_json
from .routes import OPEN, RouteTable, acl

routes = RouteTable()


def token_json(token: Token, secret: str | None = None) -> dict[str, Any]:
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


def policy_json(policy: Policy) -> dict[str, Any]:
    return {
        "Name": policy.name,
        "Description": policy.description,
        "Rules": [str(rule) for rule in policy.rules],
    }


class TokensApi:
    def __init__(self, acl: Acl) -> None:
        self.acl = acl

    @routes.post("/v1/acl/bootstrap", "Create the first management token", auth=OPEN, tags=("acl",))
    async def acl_bootstrap(self, request: web.Request) -> web.Response:
        token, secret = await self.acl.bootstrap()
        return web.json_response(token_json(token, secret))

    @routes.put(
        "/v1/acl/bootstrap",
        "Create the first management token (Consul's verb)",
        auth=OPEN,
        tags=("acl",),
    )
    async def acl_bootstrap_put(self, request: web.Request) -> web.Response:
        return await self.acl_bootstrap(request)

    @routes.get(
        "/v1/acl/token/self",
        "The token the request carries (no ACL rule needed)",
        auth=OPEN,
        tags=("acl",),
    )
    async def acl_token_self(self, request: web.Request) -> web.Response:
        return web.json_response(token_json(self.acl.token_self(request_token(request))))

    @routes.put("/v1/acl/policy", "Create or replace a policy", auth=acl("acl"), tags=("acl",))
    async def acl_policy_put(self, request: web.Request) -> web.Response:
        policy = await self.acl.set_policy(await read_json(request))
        return web.json_response(policy_json(policy))

    @routes.get("/v1/acl/policies", "List policies", auth=acl("acl"), tags=("acl",))
    async def acl_policies(self, request: web.Request) -> web.Response:
        return web.json_response([policy_json(p) for p in self.acl.policies()])

    @routes.delete("/v1/acl/policy/{name}", "Delete a policy", auth=acl("acl"), tags=("acl",))
    async def acl_policy_delete(self, request: web.Request) -> web.Response:
        await self.acl.delete_policy(request.match_info["name"])
        return web.json_response(True)

    @routes.put(
        "/v1/acl/token",
        "Create a token (its SecretID is shown once)",
        auth=acl("acl"),
        tags=("acl",),
    )
    async def acl_token_put(self, request: web.Request) -> web.Response:
        token, secret = await self.acl.create_token(await read_json(request))
        return web.json_response(token_json(token, secret))

    @routes.get(
        "/v1/acl/tokens", "List tokens (never their secrets)", auth=acl("acl"), tags=("acl",)
    )
    async def acl_tokens(self, request: web.Request) -> web.Response:
        return web.json_response([token_json(t) for t in self.acl.tokens()])

    @routes.delete("/v1/acl/token/{accessor}", "Delete a token", auth=acl("acl"), tags=("acl",))
    async def acl_token_delete(self, request: web.Request) -> web.Response:
        await self.acl.delete_token(request.match_info["accessor"])
        return web.json_response(True)
