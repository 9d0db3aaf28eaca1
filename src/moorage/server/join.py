"""The cluster join token: agents present it (`Authorization: Bearer …`) on every agent call.

Created on the server's first start in `<data dir>/join-token` (mode 0600); the server keeps only
its SHA-256 in memory and compares in constant time. A request without it gets 401, and nothing
about it is stored.
"""

from __future__ import annotations

import hashlib
import hmac
import os
import secrets
from pathlib import Path

from aiohttp import web

from moorage.model import Unauthorized


def load_or_create(data_dir: Path) -> tuple[Path, bytes]:
    """The token file's path and the token's SHA-256."""
    path = data_dir / "join-token"
    try:
        fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
    except FileExistsError:
        pass
    else:
        with os.fdopen(fd, "w") as out:
            out.write(secrets.token_urlsafe(32) + "\n")
    token = path.read_text().strip()
    return path, hashlib.sha256(token.encode()).digest()


class JoinGuard:
    def __init__(self, token_sha256: bytes) -> None:
        self._digest = token_sha256

    def matches(self, token: str) -> bool:
        given = hashlib.sha256(token.encode()).digest()
        return bool(token) and hmac.compare_digest(given, self._digest)

    def check(self, request: web.Request) -> None:
        header = request.headers.get("Authorization", "")
        token = header[len("Bearer ") :] if header.startswith("Bearer ") else ""
        given = hashlib.sha256(token.encode()).digest()
        if not token or not hmac.compare_digest(given, self._digest):
            raise Unauthorized(
                "this call needs the cluster's join token (moorage agent --token, "
                "or MOORAGE_TOKEN); the server keeps it in <data dir>/join-token"
            )
