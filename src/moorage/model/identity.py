"""Node identities: which certificates speak for a node, and the join and renewal messages.

    agent ── POST /v1/join (join token)                  JoinRequest  ─▶ server
          ◀─                                             NodeCertificate
          ── POST /v1/nodes/<name>/certificate (its own) CertificateRequest ─▶
          ◀─                                             NodeCertificate

The server keeps one `NodeIdentity` per node name: the key its certificates certify and their
serials. A request on the cluster port speaks for a node only while its certificate's serial is
one of those and the identity is not revoked (`moorage node revoke NAME`).
"""

from __future__ import annotations

from pydantic import BaseModel, ConfigDict, Field

NODE_NAME = r"^[a-z0-9]([a-z0-9-]{0,61}[a-z0-9])?$"
MAX_CSR = 16 * 1024  # bytes of PEM: a CSR with a few addresses is well under 2 KiB


class NodeIdentity(BaseModel):
    model_config = ConfigDict(extra="ignore")

    name: str
    key_sha256: str  # hex: the public key its certificates certify
    serials: list[str] = Field(default_factory=list)  # hex, newest first: the current and the
    # one it replaced (an agent switches to a renewed certificate on its next connection)
    not_after: float = 0.0  # the newest certificate's expiry
    issued_at: float = 0.0
    revoked: bool = False
    revoked_at: float | None = None

    def speaks_for(self, serial: str) -> bool:
        """Whether a certificate with this serial (hex, any case) speaks for the node now."""
        if self.revoked:
            return False
        try:
            wanted = int(serial, 16)
        except ValueError:
            return False
        return any(int(known, 16) == wanted for known in self.serials)


class IdentityMessage(BaseModel):
    model_config = ConfigDict(extra="forbid")


class JoinRequest(IdentityMessage):
    """A new node asks for its certificate (the join token authenticates the call)."""

    name: str = Field(pattern=NODE_NAME)
    csr: str = Field(min_length=1, max_length=MAX_CSR, description="PEM certificate request")


class CertificateRequest(IdentityMessage):
    """A node renews its certificate (its current certificate authenticates the call)."""

    csr: str = Field(min_length=1, max_length=MAX_CSR, description="PEM certificate request")


class NodeCertificate(IdentityMessage):
    certificate: str  # PEM
    ca: str  # PEM: the cluster CA
    not_after: float
