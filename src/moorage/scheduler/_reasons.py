"""Why an ask could not be fully placed, in words a user acts on."""

from __future__ import annotations

from dataclasses import replace
from typing import Protocol

from ._state import Ask, ClusterState, NodeInfo, constraints_ok, missing_feature


class Work(Protocol):
    """What `place()` has decided so far, as far as the reasons need it."""

    state: ClusterState

    def count(self, node: str, service: str) -> int: ...
    def free_cpu(self, node: NodeInfo) -> int: ...
    def free_mem(self, node: NodeInfo) -> int: ...
    def static_ports_free(self, node: NodeInfo, ask: Ask) -> bool: ...


def _rejection(work: Work, node: NodeInfo, ask: Ask) -> str:
    """The first checker of the chain that rejects node for one more task of ask."""
    if not node.eligible:
        return "ineligible"
    missing = sorted(ask.drivers - node.drivers)
    if missing:
        return f"driver:{missing[0]}"
    feature = missing_feature(node, ask)
    if feature is not None:
        return feature
    for constraint in ask.constraints:
        if constraint.op != "distinct_hosts" and not constraints_ok(node, _only(ask, constraint)):
            return f"constraint:{constraint}"
    if any(c.op == "distinct_hosts" for c in ask.constraints) and work.count(
        node.name, ask.service
    ):
        return "distinct_hosts"
    if work.free_cpu(node) < ask.cpu:
        return "cpu"
    if work.free_mem(node) < ask.memory:
        return "memory"
    if not work.static_ports_free(node, ask):
        return "static_port"
    return "dynamic_ports"


def _only(ask: Ask, constraint: object) -> Ask:
    return replace(ask, constraints=(constraint,))  # type: ignore[arg-type]


def _phrase(kind: str, ask: Ask, count: int | None) -> str:
    """One reason; `count` None means 'no node', else 'N nodes'."""
    static = ", ".join(str(p.host) for p in ask.ports if p.host is not None)
    if count is None:
        return {
            "ineligible": "no node is eligible (all down or draining)",
            "distinct_hosts": f"no node is free of a {ask.service} task (distinct_hosts)",
            "cpu": f"no node has {ask.cpu} CPU units free",
            "memory": f"no node has {ask.memory} MiB of free memory",
            "static_port": f"no node has host port {static} free",
            "dynamic_ports": "no node has enough free dynamic ports",
        }.get(kind) or _other(kind, None)
    return {
        "ineligible": f"{count} not eligible",
        "distinct_hosts": f"{count} already run {ask.service} (distinct_hosts)",
        "cpu": f"{count} lack cpu ({ask.cpu} units)",
        "memory": f"{count} lack memory ({ask.memory} MiB)",
        "static_port": f"{count} have host port {static} taken",
        "dynamic_ports": f"{count} lack dynamic ports",
    }.get(kind) or _other(kind, count)


def _other(kind: str, count: int | None) -> str:
    head, _, detail = kind.partition(":")
    if head == "privileged":
        return (
            "no node allows privileged containers (agent --allow-privileged)"
            if count is None
            else f"{count} do not allow privileged containers"
        )
    if head == "host_volume":
        return (
            f"no node shares the host path {detail} (agent --host-volume NAME=PATH)"
            if count is None
            else f"{count} do not share the host path {detail}"
        )
    if head == "driver":
        return (
            f"no node has the {detail} driver"
            if count is None
            else f"{count} lack the {detail} driver"
        )
    return f"no node satisfies {detail}" if count is None else f"{count} excluded by {detail}"


def explain(work: Work, ask: Ask) -> str:
    nodes = list(work.state.nodes.values())
    if not nodes:
        return "no nodes"
    tally: dict[str, int] = {}
    for node in sorted(nodes, key=lambda n: n.name):
        kind = _rejection(work, node, ask)
        tally[kind] = tally.get(kind, 0) + 1
    if len(tally) == 1:
        return _phrase(next(iter(tally)), ask, None)
    parts = sorted(tally.items(), key=lambda item: (-item[1], item[0]))
    return "no node fits: " + ", ".join(_phrase(kind, ask, count) for kind, count in parts)
