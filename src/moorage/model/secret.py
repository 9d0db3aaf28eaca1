"""Secrets as stored: sealed values (AES-GCM), never plain text, and what the API shows of them."""

from __future__ import annotations

from pydantic import BaseModel, ConfigDict, Field

SECRET_NAME = r"^[A-Za-z0-9][A-Za-z0-9_.\-]{0,127}$"


class Secret(BaseModel):
    """A secret in the store: `sealed` is base64(key version ‖ nonce ‖ AES-GCM ciphertext)."""

    model_config = ConfigDict(extra="ignore")

    name: str
    version: int = 1
    sealed: str
    created_at: float = 0.0
    updated_at: float = 0.0

    def info(self) -> SecretInfo:
        return SecretInfo(
            name=self.name,
            version=self.version,
            created_at=self.created_at,
            updated_at=self.updated_at,
        )


class SecretInfo(BaseModel):
    """What the API and CLI show: names and versions, never values."""

    name: str
    version: int
    created_at: float
    updated_at: float


class SecretValue(BaseModel):
    model_config = ConfigDict(extra="forbid")

    value: str = Field(max_length=64 * 1024)
