"""The join token: the one secret a new node needs, and where to find the cluster's CA.

    mrg1:<sha256 of the CA certificate, hex>:<secret>

The server keeps only the SHA-256 of the whole token. An agent pins the CA by the fingerprint
in its token on first contact (as k3s's `K10<ca hash>::` tokens), so joining needs no other
file; a token without one (older data dirs) needs `--ca-cert`.
"""

from __future__ import annotations

import re
import secrets
from dataclasses import dataclass

PREFIX = "mrg1"
_PINNED = re.compile(r"^mrg1:([0-9a-f]{64}):([A-Za-z0-9_-]{20,})$")


@dataclass(frozen=True)
class JoinToken:
    value: str  # the whole token, as sent
    ca_sha256: str | None  # hex; None: the token pins no CA

    @property
    def ca_fingerprint(self) -> str | None:
        return f"SHA256:{self.ca_sha256}" if self.ca_sha256 else None


def parse_join_token(text: str) -> JoinToken:
    value = text.strip()
    found = _PINNED.match(value)
    return JoinToken(value, found.group(1) if found else None)


def new_join_token(ca_fingerprint: str) -> str:
    """A fresh token pinning the CA whose fingerprint (`SHA256:<hex>`) is given."""
    digest = ca_fingerprint.removeprefix("SHA256:").lower()
    return f"{PREFIX}:{digest}:{secrets.token_urlsafe(32)}"
