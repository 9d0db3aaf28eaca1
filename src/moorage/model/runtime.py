"""Runtime options of a container, as Docker's API takes them (capabilities, ulimits, sysctls,
tmpfs, stop signal, sizes); the process driver takes user, ulimits and stop_signal only."""

from __future__ import annotations

import math
import re
import signal

from pydantic import BaseModel, ConfigDict, Field, field_validator, model_validator


class _Strict(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True, populate_by_name=True)


SIZE_PATTERN = r"^\s*(\d+)\s*([KMGT]i?B?|[KMGT]|B)?\s*$"
_SIZE_UNITS = {"": 1.0, "B": 1 / (1024 * 1024), "K": 1 / 1024, "M": 1, "G": 1024, "T": 1024 * 1024}


def size_mib(text: str) -> int:
    """`5GiB`, `5G`, `512MiB`, `512M`, `512` (MiB), `1048576B` (bytes) → MiB, rounded up."""
    match = re.match(SIZE_PATTERN, text, re.IGNORECASE)
    if match is None:
        raise ValueError(f"{text!r} is not a size (like 512MiB or 5GiB)")
    raw = (match.group(2) or "").upper()
    unit = "B" if raw == "B" else raw[:1]
    mib = int(match.group(1)) * _SIZE_UNITS[unit]
    return max(1, math.ceil(mib))


CAPABILITY_PATTERN = r"^(ALL|(CAP_)?[A-Z][A-Z_]{1,30})$"
ULIMITS = [
    "core",
    "cpu",
    "data",
    "fsize",
    "locks",
    "memlock",
    "msgqueue",
    "nice",
    "nofile",
    "nproc",
    "rss",
    "rtprio",
    "rttime",
    "sigpending",
    "stack",
]
# Sysctls a container may set: those namespaced per container (Docker refuses the others, and
# a node-wide one would change every task on the node). net.* needs the container's own network.
SYSCTL_PREFIXES = ("kernel.msg", "kernel.sem", "kernel.shm", "fs.mqueue.", "net.")
SYSCTL_PATTERN = r"^[a-z][a-z0-9_]*(\.[A-Za-z0-9_-]+){1,6}$"
HOST_PATTERN = r"^[A-Za-z0-9]([A-Za-z0-9.-]{0,252})$"
# Docker-only fields of a container: the process driver refuses them, naming the field.
DOCKER_ONLY = (
    "cap_add",
    "cap_drop",
    "sysctls",
    "shm_size",
    "tmpfs",
    "init",
    "extra_hosts",
    "read_only",
    "privileged",
    "network_mode",
)


def size_bytes(text: str) -> int:
    """A size as bytes (exact for byte counts: `67108864B`), for Docker's byte fields."""
    match = re.match(SIZE_PATTERN, text, re.IGNORECASE)
    if match is not None and (match.group(2) or "").upper() == "B":
        return int(match.group(1))
    return size_mib(text) * 1024 * 1024


class Ulimit(_Strict):
    """A resource limit (setrlimit): soft and hard, -1 for unlimited."""

    soft: int = Field(ge=-1, le=2**62)
    hard: int = Field(ge=-1, le=2**62)

    @model_validator(mode="before")
    @classmethod
    def _one_number(cls, value: object) -> object:
        if isinstance(value, int) and not isinstance(value, bool):  # `nofile: 65536`
            return {"soft": value, "hard": value}
        return value

    @model_validator(mode="after")
    def _order(self) -> Ulimit:
        if self.hard != -1 and (self.soft == -1 or self.soft > self.hard):
            raise ValueError(f"soft ({self.soft}) must not exceed hard ({self.hard})")
        return self


class Tmpfs(_Strict):
    """A tmpfs at `path`: memory-backed scratch space, gone with the container."""

    path: str = Field(pattern=r"^/", max_length=4096)
    size: str | None = None  # 64MiB; default: Docker's (half the node's memory)
    mode: int | None = Field(default=None, ge=0, le=0o7777)

    @field_validator("size")
    @classmethod
    def _size(cls, value: str | None) -> str | None:
        if value is not None:
            size_mib(value)
        return value


def signal_number(name: str) -> int | None:
    """SIGTERM, TERM, SIGRTMIN+3 or 15 → the signal's number on this platform; None if unknown."""
    text = name.strip().upper()
    if text.isdigit():
        number = int(text)
        return number if 0 < number < signal.NSIG else None
    text = text if text.startswith("SIG") else f"SIG{text}"
    match = re.fullmatch(r"SIGRTM(IN|AX)([+-]\d{1,2})?", text)
    if match is not None:
        base = signal.SIGRTMIN if match.group(1) == "IN" else signal.SIGRTMAX
        number = int(base) + int(match.group(2) or 0)
        return number if signal.SIGRTMIN <= number <= signal.SIGRTMAX else None
    try:
        return int(signal.Signals[text])
    except KeyError:
        return None
