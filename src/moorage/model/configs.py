"""Configs: files stored with a service's revision (compose bind mounts of files under the
compose directory, `configs:` in specs), content-addressed and shipped to the node with the task."""

from __future__ import annotations

import base64
import binascii
import hashlib
import re

from pydantic import BaseModel, ConfigDict, Field, field_validator, model_validator

CONFIG_BYTES = 1024 * 1024
"""What a service's configs may hold in all (decoded): they travel with every task."""
CONFIG_FILES = 256
CONFIG_PATH = r"^(?!.*(^|/)\.\.?(/|$))[A-Za-z0-9._@+-][A-Za-z0-9._@+/ -]{0,254}$"


class ConfigSpec(BaseModel):
    """Files stored with the revision: one file (`text`, or base64 `data`) or a directory
    (`files`: relative path → base64). Spec files may say `file:` or `dir:` instead, which the
    CLI reads relative to the spec (docs/spec.md); the server only takes the content."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    text: str | None = None
    data: str | None = None
    files: dict[str, str] | None = Field(default=None, max_length=CONFIG_FILES)

    @field_validator("data")
    @classmethod
    def _base64(cls, value: str | None) -> str | None:
        if value is not None:
            _decode(value)
        return value

    @field_validator("files")
    @classmethod
    def _paths(cls, value: dict[str, str] | None) -> dict[str, str] | None:
        for path, data in (value or {}).items():
            if not re.match(CONFIG_PATH, path) or "//" in path or path.endswith("/"):
                raise ValueError(f"{path!r} is not a relative path inside the config")
            _decode(data, path)
        return value

    @model_validator(mode="after")
    def _one(self) -> ConfigSpec:
        given = [k for k in ("text", "data", "files") if getattr(self, k) is not None]
        if len(given) != 1:
            raise ValueError("exactly one of text, data or files (file: or dir: in a spec file)")
        return self

    @property
    def is_dir(self) -> bool:
        return self.files is not None

    def contents(self) -> dict[str, bytes]:
        """Relative path → bytes; a one-file config is the single path ''."""
        if self.files is not None:
            return {path: _decode(data) for path, data in self.files.items()}
        if self.text is not None:
            return {"": self.text.encode()}
        return {"": _decode(self.data or "")}

    def size(self) -> int:
        return sum(len(b) for b in self.contents().values())

    def digest(self) -> str:
        """Content address: equal content, equal digest (whatever the config's name)."""
        sha = hashlib.sha256()
        for path, data in sorted(self.contents().items()):
            sha.update(f"{path}\0{len(data)}\0".encode())
            sha.update(data)
        return sha.hexdigest()


def _decode(data: str, path: str = "") -> bytes:
    try:
        return base64.b64decode(data, validate=True)
    except (binascii.Error, ValueError):
        where = f" ({path})" if path else ""
        raise ValueError(f"content{where} is not base64") from None
