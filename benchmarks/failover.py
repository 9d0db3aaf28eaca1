"""Failover: how long a service takes to be whole again after one of its nodes dies.

A 3-node cluster from `moorage.testing.cluster`, each agent in its own network namespace (zones
a, b, c), runs a 6-task web service spread by zone (2 + 2 + 2) with an HTTP health check every
second. The agent of n3 is SIGKILLed; the clock runs from the kill until 6 tasks are healthy
again, none on n3. Everything else is moorage's defaults (5 s heartbeat TTL + 2 s grace).
Five runs, each on a fresh cluster; prints the p50 as metric `failover_s` (goal ≤ 10 s), with
its parts: `detect_s` (kill → node marked down) and the runs. Published defaults of the peers
for the same event: Docker Swarm ≈ 15 s, Nomad ≈ 20 s, Kubernetes ≈ 350 s.

Needs root (network namespaces). Run: `sudo python benchmarks/failover.py [--runs 5]`.
"""

from __future__ import annotations

import argparse
import json
import statistics
import sys
import tempfile
import time
from pathlib import Path

from moorage.testing.cluster import Cluster, netns_supported, wait_for

GOAL = 10.0
SPEC = """
service: web
count: 6
placement: {strategy: spread, spread_attr: zone}
containers:
  - name: app
    command: ["PYTHON", "-m", "http.server", "${PORT}", "--bind", "${MOORAGE_NODE_IP}"]
    cpu: 50
    memory: 64
    ports: [{name: http}]
    health: {http: /, port: http, interval: 1s, timeout: 1s}
""".replace("PYTHON", sys.executable)


def healthy_off(cluster: Cluster, node: str) -> bool:
    healthy = [t for t in cluster.healthy("web") if t["node"] != node]
    live = [t for t in cluster.tasks("web") if t["desired"] == "run"]
    return len(healthy) == 6 and len(live) == 6


def one_run(root: Path) -> tuple[float, float]:
    with Cluster(root, agents=3, netns=True) as cluster:
        cluster.deploy(SPEC)
        wait_for(lambda: len(cluster.healthy("web")) == 6, 60, 0.1, "6 healthy tasks")
        on_n3 = [t for t in cluster.running("web") if t["node"] == "n3"]
        assert len(on_n3) == 2, cluster.running("web")
        time.sleep(2.0)  # a steady cluster: heartbeats at their normal pace
        cluster.kill("n3")
        killed = time.monotonic()
        detected: float | None = None
        while time.monotonic() - killed < 120:
            if detected is None and cluster.nodes()["n3"] == "down":
                detected = time.monotonic() - killed
            if healthy_off(cluster, "n3"):
                return time.monotonic() - killed, detected or time.monotonic() - killed
            time.sleep(0.05)
        raise SystemExit("the service was not whole again within 120 s")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--runs", type=int, default=5)
    args = parser.parse_args()
    why = netns_supported()
    if why is not None:
        print(json.dumps({"bench": "failover", "skipped": why}), flush=True)
        return
    runs: list[float] = []
    detects: list[float] = []
    for i in range(args.runs):
        with tempfile.TemporaryDirectory(prefix="moorage-failover-") as tmp:
            took, detect = one_run(Path(tmp) / f"run{i}")
        runs.append(took)
        detects.append(detect)
    p50 = statistics.median(runs)
    line = {
        "bench": "failover",
        "metric": "failover_s",
        "value": round(p50, 3),
        "unit": "s",
        "params": {"nodes": 3, "tasks": 6, "killed": "n3 (2 tasks)", "runs": args.runs},
        "goal": GOAL,
        "meets_goal": p50 <= GOAL,
        "detect_s": round(statistics.median(detects), 3),
        "runs_s": [round(r, 3) for r in runs],
        "peer_defaults_s": {"docker_swarm": 15, "nomad": 20, "kubernetes": 350},
    }
    print(json.dumps(line), flush=True)


if __name__ == "__main__":
    main()
