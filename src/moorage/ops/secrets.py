"""Secrets: sealed with AES-GCM before they reach the store, opened only to start a task.

    sealed = base64( key version (1 byte) ‖ nonce (12 bytes) ‖ AES-GCM(value, aad = name) )

The key is `MOORAGE_SECRET_KEY` (32 bytes, base64) or `<data dir>/secret.key`, created with mode
0600 on first start. Binding the name as associated data means a sealed value copied under
another name does not open. Users see names and versions only; the one operation that returns
values (`for_task`) serves an agent the secrets of a task placed on its node.
"""

from __future__ import annotations

import base64
import binascii
import os
import re
from collections.abc import Callable
from pathlib import Path

from cryptography.exceptions import InvalidTag
from cryptography.hazmat.primitives.ciphers.aead import AESGCM

from moorage.model import (
    SECRET_NAME,
    FieldError,
    Forbidden,
    NotFound,
    Secret,
    SecretInfo,
    SpecError,
    Unavailable,
)
from moorage.model.messages import TaskSecrets
from moorage.state import StateCache, StateWriter, kinds, new_event
from moorage.store import Op

KEY_VERSION = 1


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


class Secrets:
    def __init__(
        self, cache: StateCache, writer: StateWriter, box: SecretBox, clock: Callable[[], float]
    ) -> None:
        self.cache = cache
        self.writer = writer
        self.box = box
        self.clock = clock

    def infos(self) -> list[SecretInfo]:
        """Names and versions, never values."""
        return [s.info() for s in sorted(self.cache.secrets.values(), key=lambda s: s.name)]

    async def set(self, name: str, value: str) -> SecretInfo:
        """A new version of one secret."""
        check_name(name)
        (info,) = await self._put({name: value})
        return info

    async def set_many(self, values: object) -> list[SecretInfo]:
        """Several at once, from `{"NAME": "value", ...}`; every bad entry named."""
        if not isinstance(values, dict) or not values:
            raise SpecError([FieldError("", "expected a JSON object of name: value")])
        errors = []
        for name, value in values.items():
            if not re.match(SECRET_NAME, str(name)):
                errors.append(
                    FieldError(str(name), "is not a secret name (letters, digits, _ . -)")
                )
            elif not isinstance(value, str):
                errors.append(FieldError(str(name), "the value must be a string"))
        if errors:
            raise SpecError(errors)
        return await self._put({str(n): str(v) for n, v in values.items()})

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
            ops.append(kinds.SECRET.put(secret))
            text = f"secret {name} set (version {secret.version})"
            ops.append(new_event("secret.set", text, now=now))
        await self.writer.commit([], ops)
        return [s.info() for s in stored]

    async def delete(self, name: str) -> None:
        if name not in self.cache.secrets:
            raise NotFound(f"no secret named {name!r}")
        event = new_event("secret.removed", f"secret {name} removed", now=self.clock())
        await self.writer.commit([], [kinds.SECRET.delete(name), event])

    def for_task(self, task_id: str, node: str) -> TaskSecrets:
        """The secret values of a task's containers, for the node it is placed on only (the
        Kubernetes Node authorizer's rule): any other node is refused."""
        task = self.cache.tasks.get(task_id)
        if task is None or not task.node or node != task.node:
            raise Forbidden(f"node {node} runs no task {task_id!r}: its secrets are not its own")
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
        return TaskSecrets(values)
