"""ACL evaluation: the caller's token, what its policies grant, and whether that is enough.

Off unless the server runs with `--acl`. The token is read from `X-Moorage-Token`,
`X-Consul-Token`, `Authorization: Bearer`, or the legacy `?token=`, and looked up by its SHA-256
(`moorage.ops.acl.Acl.resolve`). A request without a token gets the rules of the policy named
`anonymous` (none until someone creates it: default deny). What a route needs is declared with
the route (server/routes.py); server/auth.py asks `AclGuard.admit` before the handler runs, and
handlers that list things, or take names from the body, check through `authorizer(request)`.
"""

from __future__ import annotations

from aiohttp import web

from moorage.model import Forbidden
from moorage.model.acl import ALLOW_ALL, Authorizer, Level
from moorage.ops import Acl
from moorage.state import StateCache

from .routes import AclAuth

AUTHZ = web.RequestKey("authz", Authorizer)  # where the caller's Authorizer is kept


def request_token(request: web.Request) -> str:
    for header in ("X-Moorage-Token", "X-Consul-Token"):
        if request.headers.get(header):
            return request.headers[header]
    bearer = request.headers.get("Authorization", "")
    if bearer.startswith("Bearer "):
        return bearer[len("Bearer ") :]
    return request.query.get("token", "")


def authorizer(request: web.Request) -> Authorizer:
    """The request's authorizer (allow-all when ACLs are off)."""
    found = request.get(AUTHZ)
    return found if isinstance(found, Authorizer) else ALLOW_ALL


class AclGuard:
    def __init__(self, cache: StateCache, acl: Acl) -> None:
        self.cache = cache
        self.acl = acl

    @property
    def enabled(self) -> bool:
        return self.acl.enabled

    def admit(self, request: web.Request, auth: AclAuth) -> None:
        """Raise Forbidden unless the request's token grants what `auth` declares; keep the
        token's authorizer on the request for the handler."""
        token = request_token(request)
        authz = self.acl.resolve(token)
        if authz is None:
            raise Forbidden("ACL not found: the token is not known")
        who = "anonymous token" if not token else "token"
        for need in auth.needs(request, self.cache):
            if not authz.allows(need.resource, need.name, need.level):
                raise Forbidden(f"permission denied: the {who} lacks {need}")
        if auth.mode == "body":
            level = auth.level or Level.WRITE
            if not authz.allows_any(auth.resource, level):
                raise Forbidden(
                    f"permission denied: the {who} lacks {auth.resource} {level.value}: it may "
                    f"{level.value} no {auth.resource} at all"
                )
        request[AUTHZ] = authz
