"""Secrets: sealed with AES-GCM before they reach the store, opened only to start a task.

    sealed = base64( key version (1 byte) ‖ nonce (12 bytes) ‖ AES-GCM(value, aad = name) )

The key is `MOORAGE_SECRET_KEY` (32 bytes, base64) or `<data dir>/secret.key`, created with mode
0600 on first start. Binding the name as associated data means a sealed value copied under
another name does not open. The API lists names and versions only; the one route that returns
values serves an agent the secrets of a task placed on it.
"""

from __future__ import annotations

import base64
import binascii
import json
import os
import re
from collections.abc import Callable
from pathlib import Path

from aiohttp import web
from cryptography.exceptions import InvalidTag
from cryptography.hazmat.primitives.ciphers.aead import AESGCM

from moorage.model import (
    SECRET_NAME,
    FieldError,
    NotFound,
    Secret,
    SecretInfo,
    SecretValue,
    SpecError,
    Unavailable,
)
from moorage.model.spec import validate_body
from moorage.state import StateCache, StateWriter
from moorage.state import keys as k
from moorage.state.writer import new_event
from moorage.store import Delete, Op, Put

from .api import respond, table
from .errors import read_json
from .join import JoinGuard

KEY_VERSION = 1
NODE_HEADER = "X-Moorage-Node"


class SecretBox:
    def __init__(self, key: bytes) -> None:
        if len(key) != 32:
            raise ValueError("a secret key is 32 bytes")
        self._aead = AESGCM(key)

    @classmethod
    def load(cls, data_dir: Path) -> SecretBox:
        """The key from MOORAGE_SECRET_KEY, or the data dir's key file (created 0600)."""
        raw = os.environ.get("MOORAGE_SECRET_KEY")
        if raw:
            try:
                return cls(base64.b64decode(raw, validate=True))
            except (binascii.Error, ValueError):
                raise SpecError(
                    [FieldError("MOORAGE_SECRET_KEY", "must be 32 bytes, base64-encoded")]
                ) from None
        path = data_dir / "secret.key"
        try:
            fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
        except FileExistsError:
            return cls(base64.b64decode(path.read_bytes()))
        with os.fdopen(fd, "wb") as out:
            out.write(base64.b64encode(AESGCM.generate_key(bit_length=256)))
        return cls(base64.b64decode(path.read_bytes()))

    def seal(self, name: str, value: str) -> str:
        nonce = os.urandom(12)
        sealed = self._aead.encrypt(nonce, value.encode(), name.encode())
        return base64.b64encode(bytes([KEY_VERSION]) + nonce + sealed).decode()

    def open(self, name: str, sealed: str) -> str:
        raw = base64.b64decode(sealed)
        if raw[0] != KEY_VERSION:
            raise Unavailable(f"secret {name!r} is sealed with an unknown key version {raw[0]}")
        try:
            return self._aead.decrypt(raw[1:13], raw[13:], name.encode()).decode()
        except InvalidTag:
            raise Unavailable(f"secret {name!r} does not open with this server's key") from None


def check_name(name: str, field: str = "name") -> None:
    if not re.match(SECRET_NAME, name):
        raise SpecError(
            [FieldError(field, f"{name!r} is not a secret name (letters, digits, _ . -)")]
        )


class SecretsApi:
    def __init__(
        self, cache: StateCache, writer: StateWriter, box: SecretBox, clock: Callable[[], float]
    ) -> None:
        self.cache = cache
        self.writer = writer
        self.box = box
        self.clock = clock
        self.guard: JoinGuard | None = None

    async def _put(self, values: dict[str, str]) -> list[SecretInfo]:
        now = self.clock()
        ops: list[Op] = []
        stored: list[Secret] = []
        for name, value in sorted(values.items()):
            current = self.cache.secrets.get(name)
            secret = Secret(
                name=name,
                version=current.version + 1 if current else 1,
                sealed=self.box.seal(name, value),
                created_at=current.created_at if current else now,
                updated_at=now,
            )
            stored.append(secret)
            ops.append(Put(k.secret_key(name), k.encode(secret)))
            text = f"secret {name} set (version {secret.version})"
            ops.append(new_event("secret.set", text, now=now))
        await self.writer.commit([], ops)
        return [s.info() for s in stored]

    @table.add(
        "PUT",
        "/v1/secrets/{name}",
        "Set a secret (a new version); the value is sealed before it is stored",
        body=SecretValue,
        response=SecretInfo,
        tags=("secrets",),
    )
    async def set_secret(self, request: web.Request) -> web.Response:
        name = request.match_info["name"]
        check_name(name)
        body = validate_body(SecretValue, await read_json(request))
        (info,) = await self._put({name: body.value})
        return respond(info)

    @table.add(
        "POST",
        "/v1/secrets",
        'Set many secrets at once: {"NAME": "value", ...}',
        response=list[SecretInfo],
        tags=("secrets",),
    )
    async def import_secrets(self, request: web.Request) -> web.Response:
        data = await read_json(request)
        if not isinstance(data, dict) or not data:
            raise SpecError([FieldError("", "expected a JSON object of name: value")])
        errors = []
        for name, value in data.items():
            if not re.match(SECRET_NAME, str(name)):
                errors.append(
                    FieldError(str(name), "is not a secret name (letters, digits, _ . -)")
                )
            elif not isinstance(value, str):
                errors.append(FieldError(str(name), "the value must be a string"))
        if errors:
            raise SpecError(errors)
        infos = await self._put({str(n): str(v) for n, v in data.items()})
        return respond(infos)

    @table.add(
        "GET",
        "/v1/secrets",
        "Secret names and versions (never values)",
        response=list[SecretInfo],
        tags=("secrets",),
    )
    async def list_secrets(self, request: web.Request) -> web.Response:
        infos = [s.info() for s in sorted(self.cache.secrets.values(), key=lambda s: s.name)]
        return respond(infos)

    @table.add("DELETE", "/v1/secrets/{name}", "Remove a secret", tags=("secrets",))
    async def delete_secret(self, request: web.Request) -> web.Response:
        name = request.match_info["name"]
        if name not in self.cache.secrets:
            raise NotFound(f"no secret named {name!r}")
        now = self.clock()
        event = new_event("secret.removed", f"secret {name} removed", now=now)
        await self.writer.commit([], [Delete(k.secret_key(name)), event])
        return respond({})

    @table.add(
        "GET",
        "/v1/tasks/{id}/secrets",
        "The secret values a task's containers get (agents only: the task's own node)",
        tags=("agents",),
    )
    async def task_secrets(self, request: web.Request) -> web.Response:
        if self.guard is not None:
            self.guard.check(request)
        task = self.cache.tasks.get(request.match_info["id"])
        if task is None:
            raise NotFound(f"no task {request.match_info['id']!r}")
        if not task.node or request.headers.get(NODE_HEADER) != task.node:
            raise NotFound(f"no task {task.id!r} on this node")  # no hint either way
        taskdef = self.cache.taskdefs.get((task.family, task.revision))
        if taskdef is None:
            raise NotFound(f"no task definition {task.taskdef_ref}")
        values: dict[str, dict[str, str]] = {}
        for container in taskdef.containers:
            env = {}
            for var, name in container.secrets.items():
                secret = self.cache.secrets.get(name)
                if secret is None:
                    raise NotFound(f"secret {name!r} (for {container.name} {var}) does not exist")
                env[var] = self.box.open(name, secret.sealed)
            values[container.name] = env
        return web.Response(text=json.dumps(values), content_type="application/json")
