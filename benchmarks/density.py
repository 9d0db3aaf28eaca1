"""How many nodes each placement strategy uses, beside the lower bound, for three workload mixes.

    lower bound = max over cpu and memory of ceil(sum of requests / node capacity)

Prints one JSON line per (mix, strategy): metric `nodes_over_lower_bound` (nodes used / lower
bound; binpack's goal is at most 1.05), with the node counts. Pure scheduler, no I/O: seconds.
Run: `python benchmarks/density.py`.
"""

from __future__ import annotations

import json
import math
from typing import Literal

from moorage.scheduler import Ask, ClusterState, NodeInfo, place

GOAL = 1.05
Strategy = Literal["binpack", "spread"]

# (node cpu units, node MiB), [(service, count, cpu, memory)]
MIXES: dict[str, tuple[tuple[int, int], list[tuple[str, int, int, int]]]] = {
    # seed 001: background workers with low reservations, plus a few web tasks
    "seed001": ((2048, 4096), [("worker", 75, 100, 200), ("web", 5, 512, 1024)]),
    # cpu-heavy and memory-heavy services side by side
    "mixed": (
        (4096, 8192),
        [("encode", 20, 1024, 256), ("cache", 20, 128, 2048), ("api", 10, 256, 512)],
    ),
    # many tiny tasks
    "tiny": ((2048, 4096), [(f"tiny{i}", 100, 10, 16) for i in range(10)]),
}


def lower_bound(node: tuple[int, int], services: list[tuple[str, int, int, int]]) -> int:
    cpu = sum(count * c for _, count, c, _ in services)
    memory = sum(count * m for _, count, _, m in services)
    return max(math.ceil(cpu / node[0]), math.ceil(memory / node[1]))


def nodes_used(
    node: tuple[int, int], services: list[tuple[str, int, int, int]], strategy: Strategy
) -> int:
    bound = lower_bound(node, services)
    pool = [NodeInfo(f"n{i:03d}", node[0], node[1]) for i in range(bound * 3)]
    asks = [
        Ask(name, count, cpu, memory, strategy=strategy) for name, count, cpu, memory in services
    ]
    plan = place(ClusterState.build(pool, []), asks, seed=7)
    if plan.unplaced:
        raise SystemExit(f"{strategy}: unplaced {plan.unplaced}")
    return len({spot.node for placed in plan.placements.values() for spot in placed})


def main() -> None:
    for mix, (node, services) in MIXES.items():
        bound = lower_bound(node, services)
        for strategy in ("binpack", "spread"):
            used = nodes_used(node, services, strategy)  # type: ignore[arg-type]
            line = {
                "bench": "density",
                "metric": "nodes_over_lower_bound",
                "value": round(used / bound, 3),
                "unit": "ratio",
                "params": {"mix": mix, "strategy": strategy},
                "nodes_used": used,
                "lower_bound": bound,
            }
            if strategy == "binpack":
                line["goal"] = GOAL
            print(json.dumps(line), flush=True)


if __name__ == "__main__":
    main()
