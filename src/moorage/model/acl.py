"""ACL: tokens carry policies; a policy is rules on resources, each with a level.

    rule := RESOURCE[:PREFIX]=LEVEL          kv:app/=write   service:web=read   node=read
    RESOURCE: service kv node secret exec event acl       LEVEL: deny read write

The rule whose prefix is the longest match for a name decides (Consul's way); at equal length
`deny` wins. Without a matching rule the answer is deny (ACLs are default-deny when on). A
management token may do everything. Tokens are stored only as their SHA-256.
"""

from __future__ import annotations

import hashlib
from dataclasses import dataclass
from enum import StrEnum

from pydantic import Field

from .errors import FieldError, Forbidden, SpecError
from .taskdef import Strict

RESOURCES = ("service", "kv", "node", "secret", "exec", "event", "acl")


class Level(StrEnum):
    DENY = "deny"
    READ = "read"
    WRITE = "write"

    @property
    def rank(self) -> int:
        return {"deny": 0, "read": 1, "write": 2}[self.value]


class Rule(Strict):
    resource: str
    prefix: str = ""
    level: Level

    @staticmethod
    def parse(text: str, field: str = "rules") -> Rule:
        """`kv:app/=write` → Rule; SpecError naming the field otherwise."""
        head, sep, level = text.strip().rpartition("=")
        resource, _, prefix = head.partition(":")
        problems = []
        if not sep or not head:
            problems.append(f"must be RESOURCE[:PREFIX]=LEVEL, got {text!r}")
        elif resource not in RESOURCES:
            problems.append(f"unknown resource {resource!r} (one of {', '.join(RESOURCES)})")
        elif level not in {lv.value for lv in Level}:
            problems.append(f"unknown level {level!r} (deny, read or write)")
        if problems:
            raise SpecError([FieldError(field, p) for p in problems])
        return Rule(resource=resource, prefix=prefix, level=Level(level))

    def __str__(self) -> str:
        where = f"{self.resource}:{self.prefix}" if self.prefix else self.resource
        return f"{where}={self.level.value}"


class Policy(Strict):
    name: str = Field(pattern=r"^[A-Za-z0-9_-]{1,128}$")
    description: str = ""
    rules: list[Rule] = Field(default_factory=list)
    created_at: float = 0.0


class Token(Strict):
    accessor_id: str
    secret_sha256: str  # hex; the secret itself is shown once, at creation, and never stored
    description: str = ""
    policies: list[str] = Field(default_factory=list)
    management: bool = False
    created_at: float = 0.0


def secret_digest(secret: str) -> str:
    return hashlib.sha256(secret.encode()).hexdigest()


def decide(rules: list[Rule], resource: str, name: str, wanted: Level) -> bool:
    """Whether `rules` grant `wanted` on resource `name`: the longest matching prefix decides."""
    best: Rule | None = None
    for rule in rules:
        if rule.resource != resource or not name.startswith(rule.prefix):
            continue
        if (
            best is None
            or len(rule.prefix) > len(best.prefix)
            or (len(rule.prefix) == len(best.prefix) and rule.level == Level.DENY)
        ):
            best = rule
    return best is not None and best.level != Level.DENY and best.level.rank >= wanted.rank


@dataclass(frozen=True)
class Need:
    """What one call needs: `level` on `resource` `name` (a name "" means all of them)."""

    resource: str
    name: str
    level: Level

    def __str__(self) -> str:
        where = f"{self.resource}:{self.name}" if self.name else self.resource
        return f"{where} {self.level.value}"


class Authorizer:
    """What one caller's token may do (ALLOW_ALL while ACLs are off, or for management)."""

    def __init__(self, rules: list[Rule] | None, management: bool = False) -> None:
        self.rules = rules or []
        self.management = management

    def allows(self, resource: str, name: str, level: Level) -> bool:
        return self.management or decide(self.rules, resource, name, level)

    def allows_any(self, resource: str, level: Level) -> bool:
        """Whether some name of `resource` is granted `level`: a call that names what it
        touches in its body can pass at all (each name is checked once the body is read)."""
        return self.management or any(
            rule.resource == resource and decide(self.rules, resource, rule.prefix, level)
            for rule in self.rules
        )

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
