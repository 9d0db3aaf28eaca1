"""Node identities: join, renew, revoke, and whether a certificate still speaks for its node.

    join(JoinRequest)           the join token was checked; a certificate for the CSR's key,
                                naming the node; refused while another key holds the name
                                (`moorage node revoke NAME` first) or while the name is revoked
    renew(name, CSR)            the node's current certificate was checked; a new certificate
    revoke(name) / lift         its certificates stop speaking for it at once
    rotate_join_token()         a new join token (the old one stops working); the file and the
                                digest every server checks

The Kubernetes Node authorizer's rule follows from identities: a node reads and writes only
what belongs to it (its tasks, their secrets, its volume claims), checked in the operations.
"""

from __future__ import annotations

import hashlib
from collections.abc import Callable
from pathlib import Path
from typing import Protocol

from cryptography import x509
from cryptography.hazmat.primitives import serialization

from moorage.model import Conflict, FieldError, Forbidden, NotFound, SpecError
from moorage.model.identity import JoinRequest, NodeCertificate, NodeIdentity
from moorage.pki.certs import NODE_DAYS, PeerError, Role, not_after, serial_of, write_private
from moorage.pki.tokens import new_join_token
from moorage.state import StateCache, StateWriter, kinds, new_event
from moorage.store import Op, Put

JOIN_TOKEN = "join-token"  # the meta key of the join token's SHA-256 (hex)
Change = tuple[NodeIdentity | None, list[Op]]


class Signer(Protocol):
    @property
    def pem(self) -> bytes:
        """The CA certificate (PEM)."""
        ...

    @property
    def fingerprint(self) -> str:
        """`SHA256:<hex>` of the CA certificate."""
        ...

    def sign(self, csr_pem: bytes, role: Role, name: str, days: int) -> bytes:
        """A certificate for the CSR's key; PeerError when the CSR is not acceptable."""
        ...


def public_key_sha256(csr_pem: bytes) -> str:
    try:
        csr = x509.load_pem_x509_csr(csr_pem)
    except ValueError:
        raise SpecError([FieldError("csr", "is not a PEM certificate request")]) from None
    der = csr.public_key().public_bytes(
        serialization.Encoding.DER, serialization.PublicFormat.SubjectPublicKeyInfo
    )
    return hashlib.sha256(der).hexdigest()


def token_digest(token: str) -> str:
    return hashlib.sha256(token.encode()).hexdigest()


class Identities:
    def __init__(
        self,
        cache: StateCache,
        writer: StateWriter,
        clock: Callable[[], float],
        signer: Signer,
        token_path: Path | None = None,
    ) -> None:
        self.cache = cache
        self.writer = writer
        self.clock = clock
        self.signer = signer
        self.token_path = token_path  # where the join token is kept for people (0600)

    def speaks_for(self, name: str, serial: str) -> bool:
        identity = self.cache.items(kinds.IDENTITY).get(name)
        return identity is not None and identity.speaks_for(serial)

    async def join(self, request: JoinRequest) -> NodeCertificate:
        key = public_key_sha256(request.csr.encode())
        pem = self._sign(request.csr, request.name)
        now = self.clock()

        def change(current: NodeIdentity | None) -> Change:
            if current is not None and current.revoked:
                raise Forbidden(
                    f"node {request.name} was revoked: lift it first "
                    f"(moorage node revoke --lift {request.name})"
                )
            # a live identity keeps its key; a revoked-then-lifted one (no serials) may change
            if current is not None and current.serials and current.key_sha256 != key:
                raise Conflict(
                    f"node {request.name} joined already with another key: if that machine is "
                    f"gone, `moorage node revoke {request.name}` then `--lift` it, and join again"
                )
            kept = current.serials[:1] if current is not None else []
            text = f"node {request.name} joined (certificate {serial_of(pem)})"
            event = new_event("node.joined", text, now=now, node=request.name)
            return self._issued(request.name, key, pem, kept, now), [event]

        await self.writer.update(kinds.IDENTITY, request.name, change)
        return self._answer(pem)

    async def renew(self, name: str, csr: str) -> NodeCertificate:
        key = public_key_sha256(csr.encode())
        pem = self._sign(csr, name)
        now = self.clock()

        def change(current: NodeIdentity | None) -> Change:
            if current is None or current.revoked:
                raise Forbidden(f"node {name} has no identity to renew: join again")
            return self._issued(name, key, pem, current.serials[:1], now), []

        await self.writer.update(kinds.IDENTITY, name, change)
        return self._answer(pem)

    async def revoke(self, name: str, lift: bool = False) -> NodeIdentity:
        now = self.clock()

        def change(current: NodeIdentity | None) -> Change:
            if current is None:
                raise NotFound(f"no node {name!r} ever joined")
            if lift:
                text = f"node {name}: revocation lifted (it may join again)"
                lifted = current.model_copy(update={"revoked": False, "revoked_at": None})
                return lifted, [new_event("node.revocation_lifted", text, now=now, node=name)]
            text = f"node {name} revoked: its certificates speak for it no more"
            revoked = current.model_copy(update={"revoked": True, "revoked_at": now, "serials": []})
            return revoked, [new_event("node.revoked", text, now=now, node=name)]

        identity = await self.writer.update(kinds.IDENTITY, name, change)
        assert identity is not None
        return identity

    # ---- the join token ----------------------------------------------------------------
    def join_token_digest(self) -> str | None:
        raw = self.cache.meta.get(JOIN_TOKEN)
        return raw.decode() if raw else None

    async def keep_join_token(self, token: str) -> None:
        """Make `token` the one every server accepts (at start: the file's)."""
        digest = token_digest(token)
        if self.join_token_digest() != digest:
            await self.writer.commit([], [Put(kinds.META.key(JOIN_TOKEN), digest.encode())])

    async def rotate_join_token(self) -> str:
        """A new join token; the old one stops working. Written to the token file (0600)."""
        token = new_join_token(self.signer.fingerprint)
        if self.token_path is not None:
            write_private(self.token_path, (token + "\n").encode())
        event = new_event("cluster.join_token", "join token rotated", now=self.clock())
        put = Put(kinds.META.key(JOIN_TOKEN), token_digest(token).encode())
        await self.writer.commit([], [put, event])
        return token

    # ---- helpers -----------------------------------------------------------------------
    def _sign(self, csr: str, name: str) -> bytes:
        try:
            return self.signer.sign(csr.encode(), "node", name, NODE_DAYS)
        except PeerError as exc:
            raise SpecError([FieldError("csr", str(exc))]) from None

    def _issued(self, name: str, key: str, pem: bytes, kept: list[str], now: float) -> NodeIdentity:
        return NodeIdentity(
            name=name,
            key_sha256=key,
            serials=[serial_of(pem), *kept],
            not_after=not_after(pem),
            issued_at=now,
        )

    def _answer(self, pem: bytes) -> NodeCertificate:
        return NodeCertificate(
            certificate=pem.decode(), ca=self.signer.pem.decode(), not_after=not_after(pem)
        )
