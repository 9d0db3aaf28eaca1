"""Place N tasks on M simulated nodes with the real scheduler and commit them to the SQLite store.

    decide (scheduler.place, main thread) ──▶ encode (Task JSON) ──▶ commit (SqliteStore.txn, its thread)
         └──────────── chunk i+1 is decided while chunk i is being committed ────────────┘

Every chunk is one durable transaction (WAL, synchronous=FULL): when the script prints a figure,
all N tasks are on disk. Prints one JSON line per figure (the contract in DESIGN.md):

    placements_per_s   tasks placed and committed per wall-clock second   params {tasks, nodes}
    decide_share       fraction of the wall time spent in the scheduler    params {tasks, nodes}

Run: `python benchmarks/scheduler.py` (the issue's sizes) or `--quick` (small sizes, seconds).
"""

from __future__ import annotations

import argparse
import asyncio
import json
import random
import sys
import tempfile
import time
from dataclasses import dataclass, field
from pathlib import Path

from moorage.model import Constraint, PortSpec, Task, TaskStatus
from moorage.scheduler import Ask, ClusterState, NodeInfo, place
from moorage.state import kinds
from moorage.store import Put
from moorage.store.sqlite import SqliteStore

GOAL = 16_700.0  # 1,000,000 tasks in 60 s
TASKS_PER_SERVICE = 100
CHUNK_TASKS = 5_000  # tasks decided together and committed in one transaction
SIZES = [(50, 64), (100, 128), (200, 256), (100, 192)]  # (cpu units, MiB) of the services
ZONES = ("a", "b", "c")


@dataclass
class Usage:
    """What the committed placements hold, kept incrementally (the cache does this in the server)."""

    cpu: dict[str, int]
    mem: dict[str, int]
    ports: dict[str, set[int]]
    frozen: dict[str, frozenset[int]]
    by_service: dict[str, dict[str, int]] = field(default_factory=dict)

    def state(self, nodes: dict[str, NodeInfo]) -> ClusterState:
        # The scheduler never mutates its snapshot, so the live dicts are handed over as they are.
        return ClusterState(nodes, self.cpu, self.mem, self.frozen, self.by_service)

    def apply(self, ask: Ask, node: str, ports: dict[str, int]) -> None:
        self.cpu[node] += ask.cpu
        self.mem[node] += ask.memory
        on = self.by_service.setdefault(ask.service, {})
        on[node] = on.get(node, 0) + 1
        if ports:
            self.ports[node].update(ports.values())

    def refreeze(self, touched: set[str]) -> None:
        for name in touched:
            self.frozen[name] = frozenset(self.ports[name])


def make_nodes(count: int, tasks: int) -> dict[str, NodeInfo]:
    """Nodes sized so the tasks use ~80% of the cluster: binpack has to pack, and all fits."""
    per_node = tasks / count
    avg_cpu = sum(c for c, _ in SIZES) / len(SIZES)
    avg_mem = sum(m for _, m in SIZES) / len(SIZES)
    cpu = int(per_node * avg_cpu / 0.8)
    mem = int(per_node * avg_mem / 0.8)
    return {
        f"node-{i:05d}": NodeInfo(
            name=f"node-{i:05d}",
            cpu=cpu,
            memory=mem,
            attrs={"zone": ZONES[i % len(ZONES)], "node.name": f"node-{i:05d}"},
        )
        for i in range(count)
    }


def make_asks(tasks: int, rng: random.Random) -> list[Ask]:
    """Services of 100 tasks: mostly binpack, some spread over zone, some constrained."""
    asks = []
    for index in range(tasks // TASKS_PER_SERVICE):
        cpu, mem = rng.choice(SIZES)
        roll = rng.random()
        asks.append(
            Ask(
                service=f"svc-{index:05d}",
                count=TASKS_PER_SERVICE,
                cpu=cpu,
                memory=mem,
                ports=(PortSpec(name="http"),),
                constraints=(Constraint.parse("zone in [a, b]"),) if roll < 0.1 else (),
                strategy="spread" if 0.1 <= roll < 0.3 else "binpack",
                spread_attr="zone" if 0.1 <= roll < 0.3 else None,
            )
        )
    return asks


def encode_chunk(asks: list[Ask], plan_placements: dict[int, list], now: float) -> list[Put]:
    """The task records the reconciler writes for these placements, as store puts."""
    puts = []
    template = Task(id="x", service="x", family="x", revision=1, status=TaskStatus.ASSIGNED)
    for position, placed in plan_placements.items():
        ask = asks[position]
        for number, spot in enumerate(placed):
            task = template.model_copy(
                update={
                    "id": f"{ask.service}-{number:06x}",
                    "service": ask.service,
                    "family": ask.service,
                    "node": spot.node,
                    "ports": spot.ports,
                    "cpu": ask.cpu,
                    "memory": ask.memory,
                    "created_at": now,
                    "updated_at": now,
                }
            )
            puts.append(Put(kinds.TASK.key(task.id), task.model_dump_json().encode()))
    return puts


async def run_one(tasks: int, nodes_count: int, data_dir: Path, seed: int) -> dict[str, float]:
    rng = random.Random(seed)
    nodes = make_nodes(nodes_count, tasks)
    asks = make_asks(tasks, rng)
    usage = Usage(
        cpu=dict.fromkeys(nodes, 0),
        mem=dict.fromkeys(nodes, 0),
        ports={n: set() for n in nodes},
        frozen={n: frozenset() for n in nodes},
    )
    store = await SqliteStore.open(data_dir / f"bench-{tasks}-{nodes_count}.db")
    per_chunk = max(CHUNK_TASKS // TASKS_PER_SERVICE, 1)
    decide = encode = wait = 0.0
    placed_total = unplaced_total = 0
    pending: asyncio.Future[object] | None = None
    start = time.perf_counter()
    try:
        for first in range(0, len(asks), per_chunk):
            chunk = asks[first : first + per_chunk]
            t0 = time.perf_counter()
            plan = place(usage.state(nodes), chunk, seed=seed + first)
            t1 = time.perf_counter()
            touched: set[str] = set()
            for position, placed in plan.placements.items():
                for spot in placed:
                    usage.apply(chunk[position], spot.node, spot.ports)
                    touched.add(spot.node)
            usage.refreeze(touched)
            puts = encode_chunk(chunk, plan.placements, time.time())
            t2 = time.perf_counter()
            placed_total += len(puts)
            unplaced_total += sum(u.count for u in plan.unplaced.values())
            if pending is not None:
                await pending
            t3 = time.perf_counter()
            pending = asyncio.ensure_future(store.txn([], puts))
            await asyncio.sleep(0)  # hand the transaction to the store's thread
            decide += t1 - t0
            encode += t2 - t1
            wait += t3 - t2
        if pending is not None:
            t3 = time.perf_counter()
            await pending
            wait += time.perf_counter() - t3
        elapsed = time.perf_counter() - start
        kvs, _ = await store.range(kinds.TASK.prefix)
        committed = len(kvs)
    finally:
        await store.close()
    if committed != placed_total:
        raise SystemExit(f"committed {committed} tasks, placed {placed_total}")
    return {
        "elapsed": elapsed,
        "placed": placed_total,
        "unplaced": unplaced_total,
        "decide": decide,
        "encode": encode,
        "commit_wait": wait,
    }


def emit(metric: str, value: float, unit: str, params: dict[str, object], **extra: object) -> None:
    line = {"bench": "scheduler", "metric": metric, "value": round(value, 4), "unit": unit}
    line["params"] = params
    line.update(extra)
    print(json.dumps(line), flush=True)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--quick", action="store_true", help="small sizes (a smoke run)")
    parser.add_argument("--seed", type=int, default=1)
    parser.add_argument("--data-dir", type=Path, default=None)
    args = parser.parse_args()
    sizes = [(10_000, 100), (50_000, 500)] if args.quick else [(100_000, 1_000), (1_000_000, 5_000)]
    with tempfile.TemporaryDirectory(prefix="moorage-bench-", dir=args.data_dir) as tmp:
        for tasks, nodes in sizes:
            result = asyncio.run(run_one(tasks, nodes, Path(tmp), args.seed))
            params: dict[str, object] = {"tasks": tasks, "nodes": nodes}
            rate = result["placed"] / result["elapsed"]
            emit(
                "placements_per_s",
                rate,
                "1/s",
                params,
                goal=GOAL,
                seconds=round(result["elapsed"], 2),
                unplaced=result["unplaced"],
            )
            emit(
                "decide_share",
                result["decide"] / result["elapsed"],
                "ratio",
                params,
                decide_s=round(result["decide"], 2),
                encode_s=round(result["encode"], 2),
                commit_wait_s=round(result["commit_wait"], 2),
            )


if __name__ == "__main__":
    sys.exit(main())
