"""Task definitions: immutable, versioned (`family:revision`) descriptions of containers.

A task definition is what a deploy changes; everything else about a service (count,
placement, deployment policy) can change without a new revision.
"""

from __future__ import annotations

import hashlib
import json
import re
from typing import Any, Literal

from pydantic import BaseModel, ConfigDict, Field, field_validator, model_validator

from .configs import CONFIG_BYTES, ConfigSpec
from .duration import Duration
from .errors import FieldError, FieldProblems
from .runtime import (
    CAPABILITY_PATTERN,
    DOCKER_ONLY,
    HOST_PATTERN,
    SYSCTL_PATTERN,
    SYSCTL_PREFIXES,
    ULIMITS,
    Tmpfs,
    Ulimit,
    signal_number,
    size_mib,
)

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


class ConfigMount(Strict):
    """A config (files stored with the revision) at `path` in the container: read-only, or a
    private writable copy per task with `read_only: false`."""

    config: str = Field(pattern=NAME_PATTERN)
    path: str = Field(pattern=r"^/", max_length=4096)
    read_only: bool = True


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
    configs: list[ConfigMount] = Field(default_factory=list, max_length=64)
    # Runtime options, as Docker's API takes them (docs/spec.md); the process driver takes
    # user, ulimits and stop_signal, and refuses the rest (DOCKER_ONLY).
    network_mode: Literal["bridge", "host"] = "bridge"
    ulimits: dict[str, Ulimit] = Field(default_factory=dict)
    stop_signal: str | None = None  # SIGTERM unless set: SIGQUIT for nginx, SIGINT for others
    cap_add: list[str] = Field(default_factory=list, max_length=64)
    cap_drop: list[str] = Field(default_factory=list, max_length=64)
    sysctls: dict[str, str] = Field(default_factory=dict, max_length=64)
    shm_size: str | None = None  # /dev/shm: 64MiB by default in Docker
    tmpfs: list[Tmpfs] = Field(default_factory=list, max_length=32)
    init: bool | None = None  # docker: an init process reaps zombies (on unless false)
    extra_hosts: dict[str, str] = Field(default_factory=dict, max_length=256)
    read_only: bool = False  # a read-only root filesystem
    privileged: bool = False  # only on agents started with --allow-privileged

    @model_validator(mode="before")
    @classmethod
    def _host_network_ports(cls, data: Any) -> Any:
        """In the host's network a container port is a host port: pin it (static port)."""
        if not isinstance(data, dict) or data.get("network_mode") != "host":
            return data
        ports = data.get("ports")
        if not isinstance(ports, list):
            return data
        pinned = []
        for port in ports:
            if isinstance(port, dict) and port.get("host") is None and port.get("container"):
                port = {**port, "host": port["container"]}
            pinned.append(port)
        return {**data, "ports": pinned}

    @field_validator("ulimits")
    @classmethod
    def _ulimit_names(cls, value: dict[str, Ulimit]) -> dict[str, Ulimit]:
        for name in value:
            if name not in ULIMITS:
                raise ValueError(f"{name!r} is not a ulimit (one of {', '.join(ULIMITS)})")
        return value

    @field_validator("stop_signal")
    @classmethod
    def _signal(cls, value: str | None) -> str | None:
        if value is not None and signal_number(value) is None:
            raise ValueError(f"{value!r} is not a signal name such as SIGTERM or SIGQUIT")
        return value

    @field_validator("cap_add", "cap_drop")
    @classmethod
    def _capabilities(cls, value: list[str]) -> list[str]:
        for cap in value:
            if not re.match(CAPABILITY_PATTERN, cap):
                raise ValueError(f"{cap!r} is not a capability such as NET_ADMIN or CAP_CHOWN")
        return value

    @field_validator("sysctls")
    @classmethod
    def _sysctls(cls, value: dict[str, str]) -> dict[str, str]:
        for name, setting in value.items():
            if not re.match(SYSCTL_PATTERN, name):
                raise ValueError(f"{name!r} is not a sysctl name such as net.core.somaxconn")
            if not name.startswith(SYSCTL_PREFIXES):
                raise ValueError(
                    f"{name!r} is not namespaced: it would change the whole node, so a "
                    f"container may not set it (allowed: {', '.join(SYSCTL_PREFIXES)}*)"
                )
            if len(setting) > 256 or "\n" in setting:
                raise ValueError(f"the value of {name!r} must be one line of at most 256 chars")
        return value

    @field_validator("shm_size")
    @classmethod
    def _shm(cls, value: str | None) -> str | None:
        if value is not None:
            size_mib(value)
        return value

    @field_validator("extra_hosts")
    @classmethod
    def _hosts(cls, value: dict[str, str]) -> dict[str, str]:
        import ipaddress

        for host, address in value.items():
            if not re.match(HOST_PATTERN, host):
                raise ValueError(f"{host!r} is not a host name")
            if address != "host-gateway":
                try:
                    ipaddress.ip_address(address)
                except ValueError:
                    raise ValueError(
                        f"{host}: {address!r} is not an IP address (or host-gateway)"
                    ) from None
        return value

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
        if self.network_mode == "host":
            for j, port in enumerate(self.ports):
                if port.container is not None and port.host != port.container:
                    problems.append(
                        FieldError(
                            f"ports[{j}].host",
                            "in the host's network the container port is the host port: "
                            f"{port.host} != {port.container}",
                        )
                    )
            if any(name.startswith("net.") for name in self.sysctls):
                problems.append(
                    FieldError("sysctls", "net.* sysctls need the container's own network")
                )
        paths = [c.path for c in self.configs]
        for j, path in enumerate(paths):
            if paths.index(path) != j:
                problems.append(FieldError(f"configs[{j}].path", f"{path!r} is used twice"))
        if self.image is None:  # the process driver
            problems.extend(
                FieldError(
                    key,
                    "is for Docker containers (an image); a process runs with the node's "
                    "network and filesystem and takes user, ulimits and stop_signal only",
                )
                for key in DOCKER_ONLY
                if key in self.model_fields_set
                and getattr(self, key) not in (None, False, [], {}, "bridge")
            )
        if problems:
            raise FieldProblems(problems)
        return self

    @property
    def driver(self) -> Literal["docker", "process"]:
        return "docker" if self.image is not None else "process"


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
    # A directory of the node (compose `/srv/data:/data`, ECS `host.sourcePath`): placed only
    # on nodes whose agent shares it (`--host-volume NAME=PATH`, PATH or a parent of it).
    host_path: str | None = Field(default=None, max_length=4096)
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

    @field_validator("host_path")
    @classmethod
    def _absolute(cls, value: str | None) -> str | None:
        if value is not None:
            parts = value.split("/")
            if not value.startswith("/") or ".." in parts or "\x00" in value:
                raise ValueError(f"{value!r} is not an absolute path without '..'")
            value = "/" + "/".join(p for p in parts if p not in ("", "."))
        return value

    @model_validator(mode="after")
    def _host_alone(self) -> VolumeSpec:
        if self.host_path is not None and (self.scope != "task" or self.size is not None):
            raise ValueError("a host_path volume is the node's directory: no scope or size")
        return self

    @property
    def size_mib(self) -> int | None:
        return size_mib(self.size) if self.size is not None else None

    def volume_name(self, key: str) -> str:
        """The cluster volume a `shared`-scope entry names."""
        return self.source or key


def config_problems(
    configs: dict[str, ConfigSpec], containers: list[Container]
) -> list[FieldError]:
    """Configs too big in all, or mounts of configs that are not declared."""
    problems: list[FieldError] = []
    total = sum(c.size() for c in configs.values())
    if total > CONFIG_BYTES:
        biggest = max(configs, key=lambda k: configs[k].size())
        problems.append(
            FieldError(
                f"configs.{biggest}",
                f"the configs hold {total / 1048576:.2f} MiB in all: at most 1 MiB per "
                "service (they travel with every task); put bigger files in an image or a volume",
            )
        )
    for i, container in enumerate(containers):
        for j, mount in enumerate(container.configs):
            if mount.config not in configs:
                problems.append(
                    FieldError(
                        f"containers[{i}].configs[{j}].config",
                        f"unknown config {mount.config!r} (declare it under configs)",
                    )
                )
    return problems


class TaskDefinition(Strict):
    """Immutable once written: a change is a new revision of the family."""

    family: str = Field(pattern=NAME_PATTERN)
    revision: int = Field(ge=1)
    containers: list[Container] = Field(min_length=1)
    volumes: dict[str, VolumeSpec] = Field(default_factory=dict)
    configs: dict[str, ConfigSpec] = Field(default_factory=dict)
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

    def host_paths(self) -> set[str]:
        """The node directories the task mounts (host volumes)."""
        return {v.host_path for v in self.volumes.values() if v.host_path is not None}

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
            "containers": [_hashed(c) for c in self.containers],
            "volumes": {k: v.model_dump(mode="json") for k, v in sorted(self.volumes.items())},
        }
        if self.stop_on_disconnect:  # only when set: older revisions keep their hash
            body["stop_on_disconnect"] = True
        if self.configs:  # likewise: a changed file is a new revision
            body["configs"] = {k: v.digest() for k, v in sorted(self.configs.items())}
        raw = json.dumps(body, sort_keys=True, separators=(",", ":")).encode()
        return hashlib.sha256(raw).hexdigest()[:16]


# Container fields added after revisions were stored: left out of the hash while unset, so an
# unchanged spec deployed again is still no new revision.
_LATER_FIELDS = ("configs", "ulimits", "stop_signal", *DOCKER_ONLY)


def _hashed(container: Container) -> dict[str, Any]:
    body = container.model_dump(mode="json")
    for key in _LATER_FIELDS:
        if key not in container.model_fields_set or body[key] == _DEFAULTS[key]:
            body.pop(key, None)
    return body


_DEFAULTS = {
    key: Container.model_fields[key].get_default(call_default_factory=True) for key in _LATER_FIELDS
}
