"""The scheduler's input: nodes and what they already hold, as a read-only snapshot."""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field
from typing import Literal

from moorage.model import Constraint, PortSpec


@dataclass(frozen=True)
class NodeInfo:
    """A node as the scheduler sees it: capacity (cpu units, MiB), attributes, port range."""

    name: str
    cpu: int
    memory: int
    attrs: Mapping[str, str] = field(default_factory=dict)
    port_range: tuple[int, int] = (20000, 32000)
    eligible: bool = True
    drivers: frozenset[str] = frozenset({"process"})
    host_volumes: tuple[str, ...] = ()  # directories the agent shares (`--host-volume`)
    privileged: bool = False  # the agent runs privileged containers (`--allow-privileged`)


@dataclass(frozen=True)
class Alloc:
    """Resources an existing task holds on a node."""

    node: str
    service: str
    cpu: int
    memory: int
    host_ports: tuple[int, ...] = ()


@dataclass(frozen=True)
class Ask:
    """`count` identical tasks of one service to place."""

    service: str
    count: int
    cpu: int
    memory: int
    ports: tuple[PortSpec, ...] = ()
    constraints: tuple[Constraint, ...] = ()
    strategy: Literal["binpack", "spread"] = "binpack"
    spread_attr: str | None = None
    drivers: frozenset[str] = frozenset()  # task drivers the node must offer (process, docker)
    prefer: Constraint | None = None  # nodes matching it are filled first (spot_preferred)
    host_paths: tuple[str, ...] = ()  # node directories the task mounts (host volumes)
    privileged: bool = False


@dataclass
class Placed:
    node: str
    ports: dict[str, int]


@dataclass
class Unplaced:
    count: int
    reason: str


@dataclass
class PlaceResult:
    placements: dict[int, list[Placed]] = field(default_factory=dict)
    unplaced: dict[int, Unplaced] = field(default_factory=dict)


class ClusterState:
    """Read-only snapshot: capacity and usage per node. `place()` never mutates it.

    `by_service` maps a service to the nodes running its tasks and how many: spread and
    distinct_hosts read it without scanning every node.
    """

    def __init__(
        self,
        nodes: dict[str, NodeInfo],
        cpu_used: dict[str, int],
        mem_used: dict[str, int],
        ports_used: dict[str, frozenset[int]],
        by_service: dict[str, dict[str, int]],
    ) -> None:
        self.nodes = nodes
        self.cpu_used = cpu_used
        self.mem_used = mem_used
        self.ports_used = ports_used
        self.by_service = by_service

    @classmethod
    def build(cls, nodes: Iterable[NodeInfo], allocs: Iterable[Alloc]) -> ClusterState:
        by_name = {n.name: n for n in nodes}
        cpu = dict.fromkeys(by_name, 0)
        mem = dict.fromkeys(by_name, 0)
        ports: dict[str, set[int]] = {name: set() for name in by_name}
        by_service: dict[str, dict[str, int]] = {}
        for alloc in allocs:
            if alloc.node not in by_name:
                continue  # a task on a node that left: it holds nothing the scheduler can use
            cpu[alloc.node] += alloc.cpu
            mem[alloc.node] += alloc.memory
            ports[alloc.node].update(alloc.host_ports)
            on = by_service.setdefault(alloc.service, {})
            on[alloc.node] = on.get(alloc.node, 0) + 1
        frozen = {name: frozenset(p) for name, p in ports.items()}
        return cls(by_name, cpu, mem, frozen, by_service)


def shares(host_volumes: Iterable[str], path: str) -> bool:
    """Whether one of the shared directories is `path` or a parent of it."""
    return any(path == v or path.startswith(v.rstrip("/") + "/") for v in host_volumes)


def missing_feature(node: NodeInfo, ask: Ask) -> str | None:
    """What the ask needs that the node's agent does not offer: a host volume, privileges."""
    for path in ask.host_paths:
        if not shares(node.host_volumes, path):
            return f"host_volume:{path}"
    if ask.privileged and not node.privileged:
        return "privileged"
    return None


def constraints_ok(node: NodeInfo, ask: Ask) -> bool:
    """The node offers the ask's drivers, and its attributes satisfy every constraint."""
    if not ask.drivers <= node.drivers or missing_feature(node, ask) is not None:
        return False
    for constraint in ask.constraints:
        if constraint.op == "distinct_hosts":
            continue
        attrs = node.attrs if "node.name" in node.attrs else {**node.attrs, "node.name": node.name}
        if not constraint.matches(dict(attrs)):
            return False
    return True
