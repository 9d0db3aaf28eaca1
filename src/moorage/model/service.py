"""Services: keep N tasks of a task definition running, placed and restarted by policy."""

from __future__ import annotations

import re
from typing import Literal

from pydantic import BaseModel, ConfigDict, Field, field_validator, model_validator

from .configs import ConfigSpec
from .duration import Duration
from .errors import FieldError, FieldProblems
from .taskdef import NAME_PATTERN, Container, Strict, VolumeSpec, config_problems

_CONSTRAINT = re.compile(
    r"^\s*(?P<attr>[A-Za-z_][\w.\-/]*)\s*(?P<op>==|!=|\bnot in\b|\bin\b)\s*(?P<rest>.+?)\s*$"
)


class Constraint(BaseModel):
    """A parsed placement constraint: `attr == v`, `attr != v`, `attr in [a, b]`, `distinct_hosts`."""

    model_config = ConfigDict(frozen=True)

    attr: str
    op: Literal["==", "!=", "in", "not in", "distinct_hosts"]
    values: tuple[str, ...] = ()

    @classmethod
    def parse(cls, text: str) -> Constraint:
        if text.strip() == "distinct_hosts":
            return cls(attr="", op="distinct_hosts")
        match = _CONSTRAINT.match(text)
        if match is None:
            raise ValueError(
                f"{text!r} is not a constraint (use `attr == v`, `attr != v`, "
                "`attr in [a, b]` or `distinct_hosts`)"
            )
        op, rest = match.group("op"), match.group("rest")
        if op in ("in", "not in"):
            if not (rest.startswith("[") and rest.endswith("]")):
                raise ValueError(f"{text!r}: `{op}` takes a list such as [a, b]")
            values = tuple(v.strip() for v in rest[1:-1].split(",") if v.strip())
            if not values:
                raise ValueError(f"{text!r}: the list is empty")
        else:
            values = (rest.strip(),)
        return cls(attr=match.group("attr"), op=op, values=values)

    def matches(self, attrs: dict[str, str]) -> bool:
        """Whether a node with these attributes satisfies this (non distinct_hosts) constraint."""
        value = attrs.get(self.attr)
        if self.op == "==":
            return value == self.values[0]
        if self.op == "!=":
            return value != self.values[0]
        if self.op == "in":
            return value in self.values
        if self.op == "not in":
            return value not in self.values
        return True

    def __str__(self) -> str:
        if self.op == "distinct_hosts":
            return "distinct_hosts"
        if self.op in ("in", "not in"):
            return f"{self.attr} {self.op} [{', '.join(self.values)}]"
        return f"{self.attr} {self.op} {self.values[0]}"


class Placement(Strict):
    strategy: Literal["binpack", "spread"] = "binpack"
    spread_attr: str | None = None
    constraints: list[str] = Field(default_factory=list)
    # any | spot_preferred (spot nodes while they have room, then others) | on_demand_only |
    # spot_only; nodes say what they are with the attribute lifecycle=spot.
    capacity: Literal["any", "spot_preferred", "on_demand_only", "spot_only"] = "any"

    @field_validator("constraints")
    @classmethod
    def _parse_all(cls, value: list[str]) -> list[str]:
        for text in value:
            Constraint.parse(text)
        return value

    def parsed_constraints(self) -> list[Constraint]:
        parsed = [Constraint.parse(t) for t in self.constraints]
        if self.capacity == "spot_only":
            parsed.append(Constraint(attr="lifecycle", op="==", values=("spot",)))
        elif self.capacity == "on_demand_only":
            parsed.append(Constraint(attr="lifecycle", op="!=", values=("spot",)))
        return parsed


class RestartPolicy(Strict):
    """Restart in place: the first restart is immediate, then `delay` doubles (exponential)."""

    attempts: int = Field(default=3, ge=0)
    interval: Duration = 300.0
    delay: Duration = 0.0
    max_delay: Duration = 60.0
    backoff: Literal["exponential", "constant"] = "exponential"

    def delay_for(self, attempt: int) -> float:
        """Delay before restart number `attempt` (1-based) within the current interval."""
        if attempt <= 1:
            return 0.0
        base = self.delay if self.delay > 0 else 1.0
        if self.backoff == "constant":
            return min(base, self.max_delay)
        return float(min(base * (2 ** (attempt - 2)), self.max_delay))


class DeploymentPolicy(Strict):
    strategy: Literal["rolling", "blue_green"] = "rolling"
    min_healthy_percent: int = Field(default=100, ge=0, le=100)
    max_percent: int = Field(default=200, ge=100, le=400)
    auto_rollback: bool = True
    min_healthy_time: Duration = 10.0
    progress_deadline: Duration = 600.0


class Discovery(Strict):
    """How the service's running tasks appear in the catalog, DNS and the Consul API."""

    name: str | None = Field(default=None, pattern=NAME_PATTERN)  # default: the service name
    tags: list[str] = Field(default_factory=list)
    port: str | None = None  # a port name; default: the first port of the first container
    meta: dict[str, str] = Field(default_factory=dict)


class ServiceSpec(Strict):
    """One document of the moorage YAML spec."""

    service: str = Field(pattern=NAME_PATTERN)
    count: int = Field(default=1, ge=0, le=10000)
    containers: list[Container] = Field(min_length=1)
    volumes: dict[str, VolumeSpec] = Field(default_factory=dict)
    configs: dict[str, ConfigSpec] = Field(default_factory=dict, max_length=64)
    stop_on_disconnect: bool = False
    placement: Placement = Field(default_factory=Placement)
    deployment: DeploymentPolicy = Field(default_factory=DeploymentPolicy)
    discovery: Discovery | None = None
    restart: RestartPolicy = Field(default_factory=RestartPolicy)

    @model_validator(mode="after")
    def _cross_checks(self) -> ServiceSpec:
        problems: list[FieldError] = []
        names = [c.name for c in self.containers]
        for i, container in enumerate(self.containers):
            at = f"containers[{i}]"
            if names.index(container.name) != i:
                problems.append(FieldError(f"{at}.name", f"{container.name!r} is used twice"))
            for j, mount in enumerate(container.mounts):
                if mount.volume not in self.volumes:
                    problems.append(
                        FieldError(
                            f"{at}.mounts[{j}].volume",
                            f"unknown volume {mount.volume!r} (declare it under volumes)",
                        )
                    )
                volume = self.volumes.get(mount.volume)
                if volume is not None and volume.access == "read-only-many" and not mount.read_only:
                    problems.append(
                        FieldError(
                            f"{at}.mounts[{j}].read_only",
                            f"volume {mount.volume!r} is read-only-many: mount it read_only: true",
                        )
                    )
            for j, dep in enumerate(container.depends_on):
                if dep.container not in names or dep.container == container.name:
                    problems.append(
                        FieldError(
                            f"{at}.depends_on[{j}].container",
                            f"unknown container {dep.container!r}",
                        )
                    )
                elif (
                    dep.condition == "healthy"
                    and self.containers[names.index(dep.container)].health is None
                ):
                    problems.append(
                        FieldError(
                            f"{at}.depends_on[{j}].condition",
                            f"{dep.container!r} has no health check to wait for",
                        )
                    )
        cycle = _dependency_cycle(self.containers)
        if cycle:
            problems.append(
                FieldError("containers", f"depends_on forms a cycle: {' -> '.join(cycle)}")
            )
        problems.extend(_port_problems(self.containers))
        problems.extend(config_problems(self.configs, self.containers))
        for key in self.configs:
            if not re.match(NAME_PATTERN, key):
                problems.append(FieldError(f"configs.{key}", "is not a name (a DNS label)"))
        problems.extend(_volume_problems(self.volumes, self.count))
        if self.discovery is not None and self.discovery.port is not None:
            all_ports = {p.name for c in self.containers for p in c.ports}
            if self.discovery.port not in all_ports:
                problems.append(
                    FieldError("discovery.port", f"{self.discovery.port!r} is not a declared port")
                )
        if problems:
            raise FieldProblems(problems)
        return self


def _volume_problems(volumes: dict[str, VolumeSpec], count: int) -> list[FieldError]:
    problems = []
    names: dict[str, str] = {}
    for key, volume in volumes.items():
        at = f"volumes.{key}"
        if volume.scope == "shared":
            name = volume.volume_name(key)
            if name in names:
                problems.append(
                    FieldError(f"{at}.source", f"volume {name!r} is also {names[name]!r}")
                )
            names[name] = key
            if volume.access == "single-writer" and count > 1:
                problems.append(
                    FieldError(
                        "count",
                        f"volume {name!r} is single-writer: one task holds it at a time, so "
                        f"count must be at most 1 (or make the volume read-only-many)",
                    )
                )
        elif volume.source is not None:
            problems.append(
                FieldError(f"{at}.source", "only a scope: shared volume names a cluster volume")
            )
    return problems


def _dependency_cycle(containers: list[Container]) -> list[str]:
    edges = {c.name: [d.container for d in c.depends_on] for c in containers}
    state: dict[str, int] = {}  # 1 visiting, 2 done
    path: list[str] = []

    def visit(name: str) -> list[str]:
        if state.get(name) == 2 or name not in edges:
            return []
        if state.get(name) == 1:
            return [*path[path.index(name) :], name]
        state[name] = 1
        path.append(name)
        for nxt in edges[name]:
            found = visit(nxt)
            if found:
                return found
        path.pop()
        state[name] = 2
        return []

    for name in edges:
        found = visit(name)
        if found:
            return found
    return []


def _port_problems(containers: list[Container]) -> list[FieldError]:
    problems: list[FieldError] = []
    seen_names: set[str] = set()
    seen_host: set[tuple[int, str]] = set()
    for i, container in enumerate(containers):
        for j, port in enumerate(container.ports):
            at = f"containers[{i}].ports[{j}]"
            if port.name in seen_names and port.name not in {p.name for p in container.ports[:j]}:
                problems.append(
                    FieldError(f"{at}.name", f"port name {port.name!r} is used by two containers")
                )
            seen_names.add(port.name)
            if port.host is not None:
                if (port.host, port.protocol) in seen_host:
                    problems.append(
                        FieldError(
                            f"{at}.host", f"host port {port.host}/{port.protocol} is claimed twice"
                        )
                    )
                seen_host.add((port.host, port.protocol))
    return problems


class Service(Strict):
    """A service as stored: the spec minus the containers (those live in the task definition)."""

    name: str
    family: str
    revision: int
    count: int
    placement: Placement = Field(default_factory=Placement)
    deployment: DeploymentPolicy = Field(default_factory=DeploymentPolicy)
    discovery: Discovery | None = None
    restart: RestartPolicy = Field(default_factory=RestartPolicy)
    status: Literal["active", "stopped"] = "active"
    deployment_id: str | None = None  # the latest deployment (running or finished)
    stable_revision: int | None = None  # the last revision a deployment completed (rollback target)
    created_at: float = 0.0
    updated_at: float = 0.0

    @property
    def taskdef_ref(self) -> str:
        return f"{self.family}:{self.revision}"


__all__ = [
    "Constraint",
    "DeploymentPolicy",
    "Discovery",
    "Placement",
    "RestartPolicy",
    "Service",
    "ServiceSpec",
    "VolumeSpec",
]
