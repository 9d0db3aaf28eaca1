"""Placement: a chain of feasibility checks, then binpack or spread ranking.

    ask ─▶ eligible? ─▶ constraints ─▶ distinct_hosts ─▶ cpu ─▶ memory ─▶ host ports ─▶ rank
                                                                                    ├ binpack: tightest fit
                                                                                    └ spread: emptiest attr value

Binpack keeps the nodes in one list sorted by free (memory, cpu): the tightest node that fits
an ask is found by bisection, and it stays the tightest until it is full, so it is filled
before the next one is tried (identical to choosing the tightest node task by task). A node
left with less cpu or memory than the plan's smallest ask leaves the list: full-cpu nodes with
memory to spare would otherwise sit where every search starts.
"""

from __future__ import annotations

import bisect
import heapq
import math
import random
from collections import Counter
from collections.abc import Callable, Sequence
from dataclasses import replace

from ._reasons import explain
from ._state import Ask, ClusterState, NodeInfo, Placed, PlaceResult, Unplaced, constraints_ok

IndexKey = tuple[int, int, float, str]


class Work:
    """A copy-on-write overlay of the snapshot: what `place()` has decided so far."""

    def __init__(self, state: ClusterState, seed: int, asks: Sequence[Ask] = ()) -> None:
        self.state = state
        # The smallest request of the plan: a node with less free cpu or memory than that can
        # take no task of this plan, so the binpack index leaves it out (instead of every later
        # search stepping over it: full-cpu nodes with memory left are a long run otherwise).
        self.min_cpu = min((a.cpu for a in asks), default=0)
        self.min_mem = min((a.memory for a in asks), default=0)
        self.rng = random.Random(seed)
        self.cpu = dict(state.cpu_used)
        self.mem = dict(state.mem_used)
        self._added: dict[str, dict[str, int]] = {}  # service -> node -> tasks placed by this plan
        self._ports: dict[str, set[int]] = {}
        self._dynamic_used: dict[str, int] = {}
        self._cursor: dict[str, int] = {}
        self.tiebreak = {name: self.rng.random() for name in sorted(state.nodes)}
        self._index: list[IndexKey] | None = None
        self._groups: dict[str | None, dict[str, list[tuple[float, str]]]] = {}

    # ---- tasks of a service per node (snapshot + this plan) -------------------------------
    def count(self, node: str, service: str) -> int:
        base = self.state.by_service.get(service)
        added = self._added.get(service)
        return (base.get(node, 0) if base else 0) + (added.get(node, 0) if added else 0)

    def service_nodes(self, service: str) -> dict[str, int]:
        """Every node running tasks of service, with how many (O(those nodes), not all)."""
        merged = dict(self.state.by_service.get(service, {}))
        for node, added in self._added.get(service, {}).items():
            merged[node] = merged.get(node, 0) + added
        return merged

    def groups(self, attr: str | None) -> dict[str, list[tuple[float, str]]]:
        """Eligible nodes by value of attr, each list in tiebreak order (computed once)."""
        cached = self._groups.get(attr)
        if cached is None:
            cached = {}
            for node in self.state.nodes.values():
                if node.eligible:
                    value = node.attrs.get(attr, "") if attr is not None else ""
                    cached.setdefault(value, []).append((self.tiebreak[node.name], node.name))
            for members in cached.values():
                members.sort()
            self._groups[attr] = cached
        return cached

    # ---- checkers: each answers one question about one node --------------------------------
    def free_cpu(self, node: NodeInfo) -> int:
        return node.cpu - self.cpu[node.name]

    def free_mem(self, node: NodeInfo) -> int:
        return node.memory - self.mem[node.name]

    def ports(self, name: str) -> set[int] | frozenset[int]:
        return self._ports.get(name) or self.state.ports_used[name]

    def static_ports_free(self, node: NodeInfo, ask: Ask) -> bool:
        used = self.ports(node.name)
        return all(p.host is None or p.host not in used for p in ask.ports)

    def dynamic_ports_left(self, node: NodeInfo) -> int:
        low, high = node.port_range
        used = self._dynamic_used.get(node.name)
        if used is None:
            used = sum(1 for p in self.ports(node.name) if low <= p <= high)
            self._dynamic_used[node.name] = used
        return (high - low + 1) - used

    def capacity(self, node: NodeInfo, ask: Ask) -> int:
        """How many more tasks of ask fit on node (resources and ports; not constraints)."""
        fit = min(self.free_mem(node) // ask.memory, self.free_cpu(node) // max(ask.cpu, 1))
        if any(p.host is not None for p in ask.ports):
            fit = min(fit, 1 if self.static_ports_free(node, ask) else 0)
        dynamic = sum(1 for p in ask.ports if p.host is None)
        if dynamic:
            low, high = node.port_range  # a static port inside the range takes a slot too
            pinned = sum(1 for p in ask.ports if p.host is not None and low <= p.host <= high)
            fit = min(fit, (self.dynamic_ports_left(node) - pinned) // dynamic)
        if any(c.op == "distinct_hosts" for c in ask.constraints):
            fit = min(fit, 0 if self.count(node.name, ask.service) else 1)
        return max(fit, 0)

    # ---- committing one task ---------------------------------------------------------------
    def commit(self, node: NodeInfo, ask: Ask) -> Placed:
        self.cpu[node.name] += ask.cpu
        self.mem[node.name] += ask.memory
        added = self._added.setdefault(ask.service, {})
        added[node.name] = added.get(node.name, 0) + 1
        ports: dict[str, int] = {}
        if ask.ports:
            used = self._ports.get(node.name)
            if used is None:
                used = self._ports[node.name] = set(self.state.ports_used[node.name])
            low, high = node.port_range
            # Static ports first, so that no dynamic port of this task can take one of them.
            for spec in sorted(ask.ports, key=lambda spec: spec.host is None):
                port = spec.host if spec.host is not None else self._next_port(node, used)
                if port not in used and low <= port <= high and node.name in self._dynamic_used:
                    self._dynamic_used[node.name] += 1
                used.add(port)
                ports[spec.name] = port
            ports = {spec.name: ports[spec.name] for spec in ask.ports}
        return Placed(node.name, ports)

    def _next_port(self, node: NodeInfo, used: set[int]) -> int:
        low, high = node.port_range
        size = high - low + 1
        cursor = self._cursor.get(node.name)
        if cursor is None:
            cursor = self.rng.randrange(size)
        for step in range(size):
            port = low + (cursor + step) % size
            if port not in used:
                self._cursor[node.name] = (cursor + step + 1) % size
                return port
        raise AssertionError("capacity() promised a free port")

    # ---- the binpack index -----------------------------------------------------------------
    def index(self) -> list[IndexKey]:
        """Eligible nodes that can still take the plan's smallest ask, by free (memory, cpu)."""
        if self._index is None:
            keys = (self._key(n) for n in self.state.nodes.values() if n.eligible)
            self._index = sorted(key for key in keys if self._usable(key))
        return self._index

    def _key(self, node: NodeInfo) -> IndexKey:
        return (self.free_mem(node), self.free_cpu(node), self.tiebreak[node.name], node.name)

    def _usable(self, key: IndexKey) -> bool:
        return key[0] >= self.min_mem and key[1] >= self.min_cpu

    def reindex(self, position: int, node: NodeInfo) -> None:
        """The node at position took tasks: move it to its new place, or out when spent."""
        index = self.index()
        del index[position]
        key = self._key(node)
        if self._usable(key):
            bisect.insort(index, key)


ROUNDS = 8  # binpack asks placed together are interleaved in this many slices each


def place(state: ClusterState, asks: Sequence[Ask], seed: int = 0) -> PlaceResult:
    """Place every ask; later asks see earlier placements. `state` is not mutated.

    Spread asks and asks with a preference go in order. Plain binpack asks placed together are
    interleaved, a slice of each in turn, so services that need different resources (one
    cpu-heavy, one memory-heavy) end up sharing nodes instead of each exhausting one resource
    of its own set of nodes.
    """
    work = Work(state, seed, asks)
    plan = PlaceResult()
    placed: dict[int, list[Placed]] = {}
    services = Counter(a.service for a in asks)
    interleaved = [
        i
        for i, a in enumerate(asks)
        if a.count > 0
        and a.strategy == "binpack"
        and a.prefer is None
        and services[a.service] == 1  # one ask per service: no cross-ask constraints
        and not any(c.op == "distinct_hosts" for c in a.constraints)
        and not any(p.host is not None for p in a.ports)
    ]
    for position, ask in enumerate(asks):
        if ask.count > 0 and position not in interleaved:
            placed[position] = _preferred_first(work, ask)
    if len(interleaved) == 1:
        placed[interleaved[0]] = _binpack(work, asks[interleaved[0]])
    elif interleaved:
        left = {i: asks[i].count for i in interleaved}
        slices = {i: max(1, math.ceil(asks[i].count / ROUNDS)) for i in interleaved}
        while left:
            for position in list(left):
                ask = asks[position]
                got = _binpack(work, replace(ask, count=min(slices[position], left[position])))
                placed.setdefault(position, []).extend(got)
                left[position] -= len(got)
                if not got or left[position] <= 0:
                    del left[position]  # done, or nothing more fits: the rest is unplaced
    for position, ask in enumerate(asks):
        got = placed.get(position, [])
        if got:
            plan.placements[position] = got
        if ask.count > 0 and len(got) < ask.count:
            plan.unplaced[position] = Unplaced(ask.count - len(got), explain(work, ask))
    return plan


def _preferred_first(work: Work, ask: Ask) -> list[Placed]:
    """With a preference, fill the preferred nodes first, then place the rest anywhere."""
    strategy = _spread if ask.strategy == "spread" else _binpack
    if ask.prefer is None:
        return strategy(work, ask)
    first = strategy(work, replace(ask, constraints=(*ask.constraints, ask.prefer), prefer=None))
    if len(first) == ask.count:
        return first
    rest = strategy(work, replace(ask, count=ask.count - len(first), prefer=None))
    return first + rest


def _binpack(work: Work, ask: Ask) -> list[Placed]:
    """Tightest fit: the node with the least free memory (then cpu) that still fits."""
    nodes = work.state.nodes
    index = work.index()
    placed: list[Placed] = []
    position = bisect.bisect_left(index, (ask.memory,))
    allowed: dict[str, bool] = {}
    while position < len(index) and len(placed) < ask.count:
        _mem, free_cpu, _tb, name = index[position]
        node = nodes[name]
        if free_cpu < ask.cpu:
            position += 1
            continue
        ok = allowed.get(name)
        if ok is None:
            ok = allowed[name] = constraints_ok(node, ask)
        fit = work.capacity(node, ask) if ok else 0
        if fit <= 0:
            position += 1
            continue
        for _ in range(min(fit, ask.count - len(placed))):
            placed.append(work.commit(node, ask))
        # It moved below `position` (or out, spent): the next candidate is here.
        work.reindex(position, node)
        if position < len(index) and index[position][3] == name:
            position += 1
    return placed


def _spread(work: Work, ask: Ask) -> list[Placed]:
    """Fewest tasks of the service per attribute value, then per node.

    Per value, the nodes without a task of the service come first (in tiebreak order, from a
    list computed once per plan); the nodes with some sit in a small heap by count. Only the
    chosen value's count changes per placement, so nothing goes stale: a placement costs
    O(log values + log nodes), and an ask costs O(values + nodes already running the service),
    not O(all nodes).
    """
    filtered = (
        bool(ask.drivers)
        or bool(ask.host_paths)
        or ask.privileged
        or any(c.op != "distinct_hosts" for c in ask.constraints)
    )
    nodes = work.state.nodes
    running = work.service_nodes(ask.service)

    def allowed(name: str) -> bool:
        return not filtered or constraints_ok(nodes[name], ask)

    groups = work.groups(ask.spread_attr)
    busy: dict[str, list[tuple[int, float, str]]] = {value: [] for value in groups}
    per_value = dict.fromkeys(groups, 0)
    for name, count in running.items():
        node = nodes.get(name)
        if node is None or not node.eligible or not allowed(name):
            continue
        value = node.attrs.get(ask.spread_attr, "") if ask.spread_attr is not None else ""
        busy[value].append((count, work.tiebreak[name], name))
        per_value[value] += count
    for heap in busy.values():
        heapq.heapify(heap)
    cursor = dict.fromkeys(groups, 0)
    values = [(count, value) for value, count in per_value.items()]
    heapq.heapify(values)
    placed: list[Placed] = []
    while values and len(placed) < ask.count:
        count, value = heapq.heappop(values)
        chosen = _next_in_value(
            work, ask, groups[value], cursor, value, busy[value], running, allowed
        )
        if chosen is None:
            continue  # nothing left in this value: drop it
        placed.append(work.commit(nodes[chosen[2]], ask))
        heapq.heappush(busy[value], (chosen[0] + 1, chosen[1], chosen[2]))
        heapq.heappush(values, (count + 1, value))
    return placed


def _next_in_value(
    work: Work,
    ask: Ask,
    members: list[tuple[float, str]],
    cursor: dict[str, int],
    value: str,
    busy: list[tuple[int, float, str]],
    running: dict[str, int],
    allowed: Callable[[str], bool],
) -> tuple[int, float, str] | None:
    """The node of one attribute value with the fewest tasks of the service that fits one more."""
    nodes = work.state.nodes
    while cursor[value] < len(members):  # nodes without a task of the service come first
        tiebreak, name = members[cursor[value]]
        cursor[value] += 1
        if name in running or not allowed(name) or work.capacity(nodes[name], ask) <= 0:
            continue
        return (0, tiebreak, name)
    while busy:
        entry = heapq.heappop(busy)
        if work.capacity(nodes[entry[2]], ask) > 0:
            return entry
    return None
