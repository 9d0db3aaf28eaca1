"""Explicit rebalancing (`moorage service rebalance NAME`): which tasks move, decided purely.

When a node joins (or comes back) nothing moves by itself: moving tasks is churn, so the user
asks for it. The decision places the service's whole count from scratch with the real
scheduler (the reconciler's Ask, on the cluster minus this service's own tasks) and compares:

    scratch placement ──▶ target tasks per node ─┐
    running tasks     ──▶ tasks per node now ────┴─▶ each node over its target: that many of its
                                                      tasks migrate (unhealthy first, then newest)

Ties are not moves: binpack moves nothing when the counts per node are the same multiset (kept
apart on the nodes a spot_preferred service prefers), and spread compares evenness, not node
names. The spread target is laid over the current placement
(values and nodes sorted by what they hold now take the target counts in the same order), so
a spread that is already as even as possible moves nothing, and an uneven one moves the fewest
tasks that make it even.

The moves are written as `Task.migrate` flags; the count enforcer then treats those tasks as it
treats tasks on a draining node: it places replacements (never on the node a task leaves) and
stops the flagged tasks while the service stays at min_healthy_percent.
"""

from __future__ import annotations

from collections import Counter
from collections.abc import Iterable, Mapping
from dataclasses import dataclass

from moorage.model import Conflict, Node, NotFound
from moorage.model.cluster import ClusterSnapshot
from moorage.scheduler import Ask, ClusterState, place, shares

from .reconcile import allocs, deployment_in_progress, node_infos, service_ask


@dataclass(frozen=True)
class Move:
    task: str
    node: str  # the node the task leaves


@dataclass(frozen=True)
class Rebalance:
    service: str
    moves: tuple[Move, ...]
    current: dict[str, int]  # tasks of the service per node now
    target: dict[str, int]  # per node once the moves are done (as the scheduler would place)
    message: str = ""


def plan_rebalance(snapshot: ClusterSnapshot, name: str, seed: int = 0) -> Rebalance:
    """The tasks of service `name` to migrate. NotFound / Conflict when it cannot rebalance."""
    service = snapshot.services.get(name)
    if service is None:
        raise NotFound(f"no service named {name!r}")
    if service.status != "active":
        raise Conflict(f"{name} is stopped: deploy it to start it again")
    deployment = deployment_in_progress(snapshot, service)
    if deployment is not None:
        raise Conflict(
            f"{name} has deployment {deployment.id} {deployment.status.value}: rebalance once "
            "it is done (or rolled back)"
        )
    taskdef = snapshot.taskdefs.get((service.family, service.revision))
    if taskdef is None:
        raise NotFound(f"no task definition {service.taskdef_ref}")
    live = [t for t in snapshot.tasks.values() if t.service == name and t.live]
    moving = [t for t in live if t.migrate]
    if moving:
        raise Conflict(f"{name} is still moving {len(moving)} task(s) of an earlier rebalance")

    # Tasks on nodes that are not ready are moving already (drained) or lost: not counted.
    ready = {n.name for n in snapshot.nodes.values() if n.schedulable}
    placed = [t for t in live if t.revision == service.revision and t.node in ready]
    current = Counter(t.node for t in placed if t.node is not None)

    ask = service_ask(service, taskdef, service.count)
    others = [t for t in snapshot.tasks.values() if t.service != name]
    state = ClusterState.build(node_infos(snapshot.nodes.values()), allocs(others))
    result = place(state, [ask], seed)
    scratch = Counter(p.node for p in result.placements.get(0, []))
    if sum(scratch.values()) < len(placed):  # the cluster cannot hold more where it would go
        why = (
            result.unplaced[0].reason
            if 0 in result.unplaced
            else f"{len(placed)} tasks placed for a count of {service.count}"
        )
        return Rebalance(name, (), _nonzero(current), _nonzero(current), f"nothing to gain: {why}")

    feasible = {
        n.name: n
        for n in snapshot.nodes.values()
        if n.name in ready and (_fits(n, ask) or scratch[n.name])
    }
    if ask.strategy == "spread" and ask.prefer is None:
        target = _spread_target(current, scratch, feasible, ask.spread_attr)
    elif _shape(current, snapshot.nodes, ask) == _shape(scratch, snapshot.nodes, ask):
        target = dict(current)  # packed as tightly as it can be, on other (equivalent) nodes
    else:
        target = dict(scratch)

    moves: list[Move] = []
    for node in sorted(current):
        surplus = current[node] - target.get(node, 0)
        if surplus <= 0:
            continue
        mine = sorted(
            (t for t in placed if t.node == node), key=lambda t: (t.healthy, -t.created_at, t.id)
        )
        moves += [Move(t.id, node) for t in mine[:surplus]]
    message = "" if moves else "already balanced"
    return Rebalance(name, tuple(moves), _nonzero(current), _nonzero(target), message)


def _fits(node: Node, ask: Ask) -> bool:
    """The node offers the ask's drivers and satisfies its constraints (capacity aside)."""
    if not ask.drivers <= set(node.drivers):
        return False
    if ask.privileged and not node.privileged:
        return False
    if not all(shares(node.host_volumes.values(), path) for path in ask.host_paths):
        return False
    attrs = {**node.attrs, "node.name": node.name}
    return all(c.op == "distinct_hosts" or c.matches(attrs) for c in ask.constraints)


def _spread_target(
    current: Mapping[str, int],
    scratch: Mapping[str, int],
    feasible: Mapping[str, Node],
    attr: str | None,
) -> dict[str, int]:
    """The scratch placement's evenness, laid over the current placement.

    Spread ranks attribute values, then nodes within a value, by how many tasks they hold: which
    value or node gets the one extra task is a tie the scheduler breaks at random. So the value
    totals are handed to the values in the order of what they hold now (most to most), and
    within each value the node counts likewise, adjusted to the value's new total. Pairing two
    sorted lists minimises the tasks over target, so nothing moves that evenness does not need.
    Tasks on nodes the service may not use (constraints) have a target of 0.
    """
    by_value: dict[str, list[str]] = {}
    for name, node in sorted(feasible.items()):
        value = node.attrs.get(attr, "") if attr is not None else ""
        by_value.setdefault(value, []).append(name)
    now = {v: sum(current.get(n, 0) for n in names) for v, names in by_value.items()}
    goal = {v: sum(scratch.get(n, 0) for n in names) for v, names in by_value.items()}
    totals = _pair(by_value, now, goal)
    target: dict[str, int] = {}
    for value, names in by_value.items():
        counts = sorted((scratch.get(n, 0) for n in names), reverse=True)
        while sum(counts) < totals[value]:  # spread the difference as the scheduler would
            counts[counts.index(min(counts))] += 1
        while sum(counts) > totals[value]:
            counts[counts.index(max(counts))] -= 1
        per_node = dict(zip(names, counts, strict=True))
        target.update(_pair(names, current, per_node))
    return target


def _pair(keys: Iterable[str], now: Mapping[str, int], goal: Mapping[str, int]) -> dict[str, int]:
    """The goal counts handed out again: the key holding most now gets the largest goal count
    (ties: the key the goal gave more to first, then by name)."""
    keys = list(keys)
    order = sorted(keys, key=lambda k: (-now.get(k, 0), -goal.get(k, 0), k))
    counts = sorted((goal.get(k, 0) for k in keys), reverse=True)
    return dict(zip(order, counts, strict=True))


def _shape(
    counts: Mapping[str, int], nodes: Mapping[str, Node], ask: Ask
) -> list[tuple[bool, int]]:
    """Tasks per node as a multiset (binpack: which nodes hold them is a tie), apart on nodes the
    ask prefers (spot_preferred) and the others."""
    prefer = ask.prefer

    def preferred(name: str) -> bool:
        node = nodes.get(name)
        attrs = {**node.attrs, "node.name": name} if node is not None else {}
        return prefer is not None and prefer.matches(attrs)

    return sorted((preferred(name), count) for name, count in counts.items() if count > 0)


def _nonzero(counts: Mapping[str, int]) -> dict[str, int]:
    return {node: count for node, count in sorted(counts.items()) if count > 0}
