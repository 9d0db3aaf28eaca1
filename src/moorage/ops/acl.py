"""ACL tokens and policies (docs/acl.md): what a token may do, and how tokens are made.

    resolve(secret)      ─▶ the token's Authorizer (its policies' rules; everything for a
                            management token; the `anonymous` policy's rules for no token;
                            None for a token nobody issued)
    bootstrap()          ─▶ the first management token, once (its SecretID shown once)
    set_policy(body)     ─▶ {"Name", "Description", "Rules": ["kv:app/=write", ...]}
    create_token(body)   ─▶ {"Description", "Policies": ["name", ...]}: SecretID shown once

Tokens are stored only as the SHA-256 of their secret.
"""

from __future__ import annotations

import secrets
import uuid
from collections.abc import Callable
from typing import Any

from moorage.model import Conflict, FieldError, Forbidden, NotFound, SpecError
from moorage.model.acl import ALLOW_ALL, Authorizer, Policy, Rule, Token, secret_digest
from moorage.state import StateCache, StateWriter, kinds, new_event
from moorage.store import Compare, Put

ANONYMOUS = "anonymous"  # the policy requests without a token get (none: they get nothing)
BOOTSTRAPPED = "acl-bootstrap"  # the meta key that marks the bootstrap done


class Acl:
    def __init__(
        self, cache: StateCache, writer: StateWriter, clock: Callable[[], float], enabled: bool
    ) -> None:
        self.cache = cache
        self.writer = writer
        self.clock = clock
        self.enabled = enabled

    # ---- evaluation --------------------------------------------------------------------
    def resolve(self, secret: str) -> Authorizer | None:
        """The token's authorizer, or None for an unknown token."""
        if not secret:  # anonymous: the rules of the policy named "anonymous", if any
            anonymous = self.cache.acl_policies.get(ANONYMOUS)
            return Authorizer(list(anonymous.rules) if anonymous is not None else [])
        found = self.cache.acl_by_digest.get(secret_digest(secret))
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

    def token_self(self, secret: str) -> Token:
        """The token the caller holds (no rule needed to read one's own token)."""
        self._on()
        found = self.cache.acl_by_digest.get(secret_digest(secret)) if secret else None
        if found is None:
            raise Forbidden("ACL not found: the token is not known")
        return found

    # ---- tokens ------------------------------------------------------------------------
    async def bootstrap(self) -> tuple[Token, str]:
        """The first management token and its secret; Conflict once done."""
        self._on()
        secret = _new_secret()
        now = self.clock()
        token = Token(
            accessor_id=str(uuid.uuid4()),
            secret_sha256=secret_digest(secret),
            description="Bootstrap Token (Global Management)",
            management=True,
            created_at=now,
        )
        marker = kinds.META.key(BOOTSTRAPPED)
        ops = [
            Put(marker, token.accessor_id.encode()),
            kinds.ACL_TOKEN.put(token),
            new_event("acl.bootstrap", "ACL bootstrap: management token created", now=now),
        ]
        if await self.writer.commit([Compare.absent(marker)], ops) is None:
            raise Conflict("ACL bootstrap already done (the management token exists)")
        return token, secret

    def tokens(self) -> list[Token]:
        self._on()
        return sorted(self.cache.acl_tokens.values(), key=lambda t: t.created_at)

    async def create_token(self, body: object) -> tuple[Token, str]:
        self._on()
        if not isinstance(body, dict):
            raise SpecError([FieldError("", "must be a JSON object")])
        names: list[str] = []
        for i, item in enumerate(body.get("Policies", [])):
            name = item.get("Name") if isinstance(item, dict) else item
            if not isinstance(name, str) or name not in self.cache.acl_policies:
                raise SpecError([FieldError(f"Policies[{i}]", f"no policy {name!r}")])
            names.append(name)
        secret = _new_secret()
        token = Token(
            accessor_id=str(uuid.uuid4()),
            secret_sha256=secret_digest(secret),
            description=str(body.get("Description", "")),
            policies=names,
            created_at=self.clock(),
        )
        await self.writer.commit([], [kinds.ACL_TOKEN.put(token)])
        return token, secret

    async def delete_token(self, accessor: str) -> None:
        self._on()
        if accessor not in self.cache.acl_tokens:
            raise NotFound(f"no token {accessor!r}")
        await self.writer.commit([], [kinds.ACL_TOKEN.delete(accessor)])

    # ---- policies ----------------------------------------------------------------------
    def policies(self) -> list[Policy]:
        self._on()
        return sorted(self.cache.acl_policies.values(), key=lambda p: p.name)

    async def set_policy(self, body: object) -> Policy:
        self._on()
        if not isinstance(body, dict):
            raise SpecError([FieldError("", "must be a JSON object")])
        rules_raw: Any = body.get("Rules", [])
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
        await self.writer.commit([], [kinds.ACL_POLICY.put(policy)])
        return policy

    async def delete_policy(self, name: str) -> None:
        self._on()
        if name not in self.cache.acl_policies:
            raise NotFound(f"no policy {name!r}")
        await self.writer.commit([], [kinds.ACL_POLICY.delete(name)])

    def _on(self) -> None:
        if not self.enabled:
            raise Conflict("ACLs are off on this server (start it with --acl)")


def _new_secret() -> str:
    return str(uuid.UUID(bytes=secrets.token_bytes(16), version=4))
