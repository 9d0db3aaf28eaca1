"""What one request's ACL token may do (allow-all while ACLs are off)."""

from __future__ import annotations

from dataclasses import dataclass

from aiohttp import web

from moorage.model import Forbidden
from moorage.model.acl import Level, Rule, decide


@dataclass(frozen=True)
class Need:
    resource: str
    name: str
    level: Level

    def __str__(self) -> str:
        where = f"{self.resource}:{self.name}" if self.name else self.resource
        return f"{where} {self.level.value}"


class Authorizer:
    """What one request's token may do."""

    def __init__(self, rules: list[Rule] | None, management: bool = False) -> None:
        self.rules = rules or []
        self.management = management

    def allows(self, resource: str, name: str, level: Level) -> bool:
        return self.management or decide(self.rules, resource, name, level)

    def allows_tree(self, resource: str, prefix: str, level: Level) -> bool:
        """`level` on `prefix` and on everything under it: no rule for a longer prefix below it
        grants less (Consul's KeyWritePrefix, which a recursive delete needs)."""
        if self.management:
            return True
        if not decide(self.rules, resource, prefix, level):
            return False
        return all(
            decide(self.rules, resource, rule.prefix, level)
            for rule in self.rules
            if rule.resource == resource and rule.prefix.startswith(prefix)
        )

    def require(self, resource: str, name: str, level: Level) -> None:
        if not self.allows(resource, name, level):
            raise Forbidden(f"permission denied: the token lacks {Need(resource, name, level)}")


ALLOW_ALL = Authorizer(None, management=True)


def authorizer(request: web.Request) -> Authorizer:
    """The request's authorizer (allow-all when ACLs are off)."""
    found = request.get("moorage.authz")
    return found if isinstance(found, Authorizer) else ALLOW_ALL
