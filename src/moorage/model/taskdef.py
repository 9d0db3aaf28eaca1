"""Task definitions: immutable, versioned (`family:revision`) descriptions of containers.

A task definition is what a deploy changes; everything else about a service (count,
placement, deployment policy) can change without a new revision.
"""

from __future__ import annotations

import hashlib
import json
import math
import re
from typing import Any, Literal

from pydantic import BaseModel, ConfigDict, Field, field_validator, model_validator

from .duration import Duration
from .errors import FieldError, FieldProblems

NAME_PATTERN = r"^[a-z0-9]([a-z0-9-]{0,61}[a-z0-9])?$"
"""Service, container, port and volume names: DNS labels, so they work in DNS names."""


class Strict(BaseModel):
    """Base for every user-facing model: unknown keys are errors, values are not coerced loosely."""

    model_config = ConfigDict(extra="forbid", frozen=True, populate_by_name=True)


class PortSpec(Strict):
    """A port the container listens on. The host port is assigned unless `host` pins it."""

    name: str = Field(pattern=NAME_PATTERN)
    container: int | None = Field(default=None, ge=1, le=65535)
    host: int | None = Field(default=None, ge=1, le=65535)
    protocol: Literal["tcp", "udp"] = "tcp"


class HealthCheck(Strict):
    """One health check; exactly one of http, tcp, command, ttl."""

    http: str | None = None
    tcp: bool | None = None
    command: list[str] | None = Field(default=None, min_length=1)
    ttl: Duration | None = None
    port: str | None = None
    interval: Duration = 10.0
    timeout: Duration = 2.0
    retries: int = Field(default=3, ge=1)
    start_period: Duration = 0.0

    @model_validator(mode="after")
    def _one_kind(self) -> HealthCheck:
        kinds = [
            k for k in ("http", "tcp", "command", "ttl") if getattr(self, k) not in (None, False)
        ]
        if len(kinds) != 1:
            raise ValueError("exactly one of http, tcp, command or ttl must be set")
        if kinds[0] in ("http", "tcp") and self.port is None:
            raise ValueError(f"a {kinds[0]} check needs `port` (a port name)")
        if self.interval < 1.0:
            raise ValueError("interval must be at least 1s")
        return self

    @property
    def kind(self) -> str:
        for k in ("http", "tcp", "command", "ttl"):
            if getattr(self, k) not in (None, False):
                return k
        return "none"


class Mount(Strict):
    volume: str = Field(pattern=NAME_PATTERN)
    path: str = Field(min_length=1)
    read_only: bool = False


class DependsOn(Strict):
    container: str
    condition: Literal["started", "healthy"] = "started"


USER_PATTERN = r"^[A-Za-z0-9_][A-Za-z0-9_.-]{0,31}(:[A-Za-z0-9_][A-Za-z0-9_.-]{0,31})?$"


class Container(Strict):
    """One process tree of a task: an image (docker driver) or a command (process driver)."""

    name: str = Field(pattern=NAME_PATTERN)
    image: str | None = Field(default=None, min_length=1)
    command: list[str] | None = Field(default=None, min_length=1)
    entrypoint: list[str] | None = None
    workdir: str | None = None
    # Who the container runs as, as Docker's `--user`: a name or a uid, optionally `:group`.
    # Docker containers: the image's user database; processes: the node's (it must exist).
    user: str | None = Field(default=None, pattern=USER_PATTERN)
    cpu: int = Field(default=100, gt=0, le=1024 * 512)
    memory: int = Field(default=128, gt=0, le=1024 * 1024 * 4)
    memory_reservation: int | None = Field(default=None, gt=0)
    ports: list[PortSpec] = Field(default_factory=list)
    env: dict[str, str] = Field(default_factory=dict)
    secrets: dict[str, str] = Field(default_factory=dict)
    health: HealthCheck | None = None
    mounts: list[Mount] = Field(default_factory=list)
    essential: bool = True
    depends_on: list[DependsOn] = Field(default_factory=list)
    stop_timeout: Duration = 10.0
    labels: dict[str, str] = Field(default_factory=dict)  # Docker labels

    @field_validator("env", mode="before")
    @classmethod
    def _env_scalars(cls, value: object) -> object:
        # YAML turns `DEBUG: 1` into an int; env values are strings, so accept scalars as text.
        if isinstance(value, dict):
            return {
                k: (str(v).lower() if isinstance(v, bool) else str(v))
                if isinstance(v, int | float | bool)
                else v
                for k, v in value.items()
            }
        return value

    @model_validator(mode="after")
    def _checks(self) -> Container:
        problems: list[FieldError] = []
        if self.image is None and self.command is None:
            problems.append(
                FieldError(
                    "command",
                    "either image (docker driver) or command (process driver) is required",
                )
            )
        if self.memory_reservation is not None and self.memory_reservation > self.memory:
            problems.append(
                FieldError("memory_reservation", f"must not exceed memory ({self.memory} MiB)")
            )
        names = [p.name for p in self.ports]
        for j, port in enumerate(self.ports):
            if names.index(port.name) != j:
                problems.append(FieldError(f"ports[{j}].name", f"{port.name!r} is used twice"))
        if (
            self.health is not None
            and self.health.port is not None
            and self.health.port not in names
        ):
            problems.append(
                FieldError("health.port", f"{self.health.port!r} is not one of the ports {names}")
            )
        if problems:
            raise FieldProblems(problems)
        return self

    @property
    def driver(self) -> Literal["docker", "process"]:
        return "docker" if self.image is not None else "process"


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


class VolumeSpec(Strict):
    """A volume a task definition's containers mount (docs/volumes.md).

    `scope: shared` names a cluster volume (`source`, default: the key) that outlives tasks and
    deployments: the server creates it at deploy time when `autoprovision` is set (else it must
    exist), and the node's agent claims it before starting the task. `scope: task` is created
    with its task on its node and deleted after.
    """

    driver: Literal["local", "shared"] = "local"
    source: str | None = Field(default=None, pattern=NAME_PATTERN)
    size: str | None = None  # 5GiB, 512MiB, 512 (MiB)
    scope: Literal["task", "shared"] = "task"
    access: Literal["single-writer", "read-only-many"] = "single-writer"
    autoprovision: bool = True
    read_only: bool = False
    host_path: str | None = None  # an imported host volume (ECS `host.sourcePath`)
    plugin: str | None = None  # an imported Docker volume driver (ECS, compose), recorded
    plugin_options: dict[str, str] = Field(default_factory=dict)

    @field_validator("size", mode="before")
    @classmethod
    def _size_text(cls, value: object) -> object:
        if isinstance(value, int) and not isinstance(value, bool):
            value = str(value)
        if isinstance(value, str):
            size_mib(value)  # a ValueError names what a size looks like
        return value

    @property
    def size_mib(self) -> int | None:
        return size_mib(self.size) if self.size is not None else None

    def volume_name(self, key: str) -> str:
        """The cluster volume a `shared`-scope entry names."""
        return self.source or key


class TaskDefinition(Strict):
    """Immutable once written: a change is a new revision of the family."""

    family: str = Field(pattern=NAME_PATTERN)
    revision: int = Field(ge=1)
    containers: list[Container] = Field(min_length=1)
    volumes: dict[str, VolumeSpec] = Field(default_factory=dict)
    # Agent-side fencing: the node's agent stops the task once no server answered for a TTL.
    stop_on_disconnect: bool = False
    created_at: float = 0.0

    @property
    def ref(self) -> str:
        return f"{self.family}:{self.revision}"

    @property
    def cpu(self) -> int:
        return sum(c.cpu for c in self.containers)

    @property
    def memory(self) -> int:
        return sum(c.memory for c in self.containers)

    def claimed_volumes(self) -> dict[str, VolumeSpec]:
        """The entries naming cluster volumes (`scope: shared`): claimed before the task starts."""
        return {k: v for k, v in self.volumes.items() if v.scope == "shared"}

    def single_writer_volumes(self) -> list[str]:
        """The cluster volumes only one task at a time may hold (sorted names)."""
        return sorted(
            {
                v.volume_name(k)
                for k, v in self.claimed_volumes().items()
                if v.access == "single-writer"
            }
        )

    def content_hash(self) -> str:
        """Hash of what runs (not family, revision or time): equal hash means no new revision."""
        body: dict[str, Any] = {
            "containers": [c.model_dump(mode="json") for c in self.containers],
            "volumes": {k: v.model_dump(mode="json") for k, v in sorted(self.volumes.items())},
        }
        if self.stop_on_disconnect:  # only when set: older revisions keep their hash
            body["stop_on_disconnect"] = True
        raw = json.dumps(body, sort_keys=True, separators=(",", ":")).encode()
        return hashlib.sha256(raw).hexdigest()[:16]
