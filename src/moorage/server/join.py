"""The cluster join token: a new node presents it (`Authorization: Bearer …`) to get its
certificate, and nothing else.

Created on the server's first start in `<data dir>/join-token` (mode 0600), pinning the cluster
CA (`moorage.pki.tokens`); the store keeps only its SHA-256 (`moorage token rotate` replaces
it, for every server at once), compared in constant time. A request without it gets 401.
"""

from __future__ import annotations

import hashlib
import hmac
from collections.abc import Callable
from pathlib import Path

from aiohttp import web

from moorage.model import Unauthorized
from moorage.pki.certs import write_private
from moorage.pki.tokens import new_join_token


def load_or_create(data_dir: Path, ca_fingerprint: str) -> tuple[Path, str]:
    """The token file's path and the token (created, pinning the CA, on first start)."""
    path = data_dir / "join-token"
    if not path.exists():
        write_private(path, (new_join_token(ca_fingerprint) + "\n").encode())
    return path, path.read_text().strip()


class JoinGuard:
    def __init__(self, digest: Callable[[], str | None]) -> None:
        self._digest = digest  # the SHA-256 (hex) of the token every server accepts now

    def matches(self, token: str) -> bool:
        wanted = self._digest()
        given = hashlib.sha256(token.encode()).hexdigest()
        return bool(token) and wanted is not None and hmac.compare_digest(given, wanted)

    def check(self, request: web.Request) -> None:
        header = request.headers.get("Authorization", "")
        token = header[len("Bearer ") :] if header.startswith("Bearer ") else ""
        if not self.matches(token):
            raise Unauthorized(
                "this call needs the cluster's join token (moorage agent --token-file FILE, "
                "or MOORAGE_TOKEN); the server keeps it in <data dir>/join-token"
            )
