"""Agent footprint: the agent process's memory and CPU while it runs 50 process tasks.

A server and one agent (separate processes, `moorage.testing.cluster`, metrics collection on at
its default 10 s interval) run 50 `sleep` process tasks. Once all are running and the agent has
settled, its RSS and CPU time are sampled for 60 s: `agent_rss_mb` (the mean RSS of the agent
process; its executors and the tasks are not counted: they are the workload's) and
`agent_cpu_percent` (CPU time over wall time, percent of one core). Goals: ≤ 40 MB and ≤ 1 %.
Published for comparison: k3s's agent 275 MB; ECS reserves 32 MiB for its agent and the
system's processes.

Beside the RSS, the same line carries the means of the agent's USS (pages only it maps), PSS
(its share of every page it maps) and RSS split into anonymous and file-backed pages
(`/proc/<pid>/status`): the file-backed part is mostly libpython, OpenSSL and pydantic-core,
shared with every other Python process on the node, the server's included.

Run: `python benchmarks/agent_footprint.py [--tasks 50] [--seconds 60] [--metrics-interval 10s]`.
"""

from __future__ import annotations

import argparse
import json
import statistics
import sys
import tempfile
import time
from pathlib import Path

import psutil

from moorage.testing.cluster import AgentSpec, Cluster, wait_for

RSS_GOAL_MB = 40.0
CPU_GOAL_PERCENT = 1.0
SPEC = """
service: idle
count: {count}
containers:
  - name: app
    command: ["sleep", "86400"]
    cpu: 10
    memory: 16
"""


def running(cluster: Cluster, count: int) -> bool:
    return len(cluster.running("idle")) == count


def memory(proc: psutil.Process) -> dict[str, float]:
    """One sample (MB): rss, uss, pss, and the RSS's anonymous and file-backed parts."""
    full = proc.memory_full_info()
    sample = {"rss": full.rss / 1e6, "uss": full.uss / 1e6, "pss": full.pss / 1e6}
    with open(f"/proc/{proc.pid}/status") as status:
        for line in status:
            key, _, value = line.partition(":")
            if key in ("RssAnon", "RssFile"):
                sample[key[3:].lower()] = int(value.split()[0]) * 1024 / 1e6
    return sample


def measure(proc: psutil.Process, seconds: float) -> tuple[dict[str, list[float]], float]:
    """Memory samples (MB, by kind) once a second, and CPU % over the whole window."""
    samples: dict[str, list[float]] = {}
    times = proc.cpu_times()
    cpu_start, wall_start = times.user + times.system, time.monotonic()
    while time.monotonic() - wall_start < seconds:
        for kind, value in memory(proc).items():
            samples.setdefault(kind, []).append(value)
        time.sleep(1.0)
    times = proc.cpu_times()
    cpu = (times.user + times.system - cpu_start) / (time.monotonic() - wall_start) * 100
    return samples, cpu


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--tasks", type=int, default=50)
    parser.add_argument("--seconds", type=float, default=60.0)
    parser.add_argument("--settle", type=float, default=15.0, help="Wait before measuring.")
    parser.add_argument("--metrics-interval", default="10s")
    args = parser.parse_args()
    agent = AgentSpec("n1", {"zone": "a"}, args=["--metrics-interval", args.metrics_interval])
    with (
        tempfile.TemporaryDirectory(prefix="moorage-footprint-") as tmp,
        Cluster(Path(tmp), agents=[agent]) as cluster,
    ):
        cluster.deploy(SPEC.format(count=args.tasks))
        wait_for(lambda: running(cluster, args.tasks), 180, 0.5, f"{args.tasks} running tasks")
        time.sleep(args.settle)
        samples, cpu = measure(psutil.Process(cluster.agent.pid), args.seconds)
        peak = max(samples["rss"])
        ingested = _ingested(cluster)
    params = {
        "tasks": args.tasks,
        "seconds": args.seconds,
        "metrics_interval": args.metrics_interval,
        "python": sys.version.split()[0],
    }
    mean = statistics.fmean(samples["rss"])
    means = {kind: round(statistics.fmean(values), 1) for kind, values in samples.items()}
    lines = [
        {
            "bench": "agent_footprint",
            "metric": "agent_rss_mb",
            "value": round(mean, 1),
            "unit": "MB",
            "params": params,
            "goal": RSS_GOAL_MB,
            "meets_goal": mean <= RSS_GOAL_MB,
            "peak_mb": round(peak, 1),
            "uss_mb": means["uss"],
            "pss_mb": means["pss"],
            "rss_anon_mb": means.get("anon"),
            "rss_file_mb": means.get("file"),
            "peer_published_mb": {"k3s_agent": 275, "ecs_agent_and_system_reserved": 33.6},
        },
        {
            "bench": "agent_footprint",
            "metric": "agent_cpu_percent",
            "value": round(cpu, 2),
            "unit": "% of one core",
            "params": params,
            "goal": CPU_GOAL_PERCENT,
            "meets_goal": cpu <= CPU_GOAL_PERCENT,
            "metrics_series_seen": ingested,
        },
    ]
    for line in lines:
        print(json.dumps(line), flush=True)


def _ingested(cluster: Cluster) -> int | None:
    """How many task series the server holds for the service (collection did run)."""
    response = cluster.http.get("/v1/metrics/series", params={"metric": "task_memory_rss_bytes"})
    if response.status_code != 200:
        return None
    body = response.json()
    found = body["series"] if isinstance(body, dict) else body
    return sum(1 for s in found if s.get("labels", {}).get("service") == "idle")


if __name__ == "__main__":
    main()
