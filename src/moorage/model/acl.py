"""ACL: tokens carry policies; a policy is rules on resources, each with a level.

    rule := RESOURCE[:PREFIX]=LEVEL          kv:app/=write   service:web=read   node=read
    RESOURCE: service kv node secret exec event acl       LEVEL: deny read write

The rule whose prefix is the longest match for a name decides (Consul's way); at equal length
`deny` wins. Without a matching rule the answer is deny (ACLs are default-deny when on). A
management token may do everything. Tokens are stored only as their SHA-256.
"""

from __future__ import annotations

import hashlib
from enum import StrEnum

from pydantic import Field

from .errors import FieldError, SpecError
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
