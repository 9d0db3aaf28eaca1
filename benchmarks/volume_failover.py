"""Volume failover: how long a task on a shared volume takes to write again after its node dies.

A 3-node cluster from `moorage.testing.cluster`, each agent in its own network namespace, runs
one writer task (tests/integration/fixtures/volume_writer.py) on a 64 MiB shared single-writer
volume (a loop-mounted ext4 image): it appends `<task> <epoch> <seq> <time>` to the volume 50
times a second. The agent of the writer's node is SIGKILLed; the clock runs from the kill until
the writer's first line with a new fencing epoch, written by the replacement on another node
(the line's own timestamp). In between: the node's TTL runs out and it is marked down, the
lease of the old claim runs out and the fence watchdog (which outlives the agent) kills the old
writer and unmounts the image, the server grants the volume to the replacement's agent, which
mounts it and starts the task. Everything is moorage's defaults (lease, heartbeat TTL, grace).
Five runs, each on a fresh cluster; prints the p50 as metric `volume_failover_s` (goal ≤ 30 s)
with its parts: `detect_s` (kill → node down) and `fenced_s` (kill → the old writer dead).
Peer: Kubernetes with a ReadWriteOnce volume on a dead node evicts the pod after 5 min and
force-detaches the volume 6 min after that: ≥ 6 min before the replacement can mount it.

Needs root (network namespaces, loop mounts). Run: `sudo python benchmarks/volume_failover.py
[--runs 5]`.
"""

from __future__ import annotations

import argparse
import contextlib
import json
import os
import statistics
import sys
import tempfile
import time
from pathlib import Path

import psutil

from moorage.testing.cluster import Cluster, netns_supported, wait_for

GOAL = 30.0
WRITER = Path(__file__).resolve().parents[1] / "tests" / "integration" / "fixtures"
WRITER = WRITER / "volume_writer.py"
SPEC = f"""
service: writer
count: 1
volumes:
  data: {{driver: shared, size: 64MiB, scope: shared, autoprovision: true}}
containers:
  - name: app
    command: ["{sys.executable}", "{WRITER}", "write", "/data"]
    cpu: 50
    memory: 64
    stop_timeout: 3s
    mounts: [{{volume: data, path: /data}}]
"""


def writers(root: Path) -> list[tuple[int, int]]:
    """(pid, epoch) of the live writer processes this cluster started."""
    found = []
    for proc in psutil.process_iter(["cmdline", "cwd"]):
        with contextlib.suppress(psutil.Error):
            if str(WRITER) not in (proc.info["cmdline"] or []):
                continue
            if not (proc.info["cwd"] or "").startswith(str(root) + os.sep):
                continue
            if proc.status() == psutil.STATUS_ZOMBIE:
                continue
            found.append((proc.pid, int(proc.environ().get("MOORAGE_VOLUME_DATA_EPOCH", "0"))))
    return found


def first_line_of(pid: int, epoch: int) -> float | None:
    """The time of the first line with `epoch` in the log, as writer `pid` sees it."""
    with contextlib.suppress(OSError):
        for line in Path(f"/proc/{pid}/root/data/writes.log").read_text().splitlines():
            words = line.split()
            if len(words) == 4 and words[1] == str(epoch):
                return float(words[3])
    return None


def one_run(root: Path) -> tuple[float, float, float]:
    with Cluster(root, agents=3, netns=True) as cluster:
        cluster.deploy(SPEC)
        [task] = cluster.wait_running("writer", 1, timeout=60)
        [(_, epoch)] = wait_for(lambda: writers(cluster.root), 30, 0.1, "the writer")
        time.sleep(2.0)  # a steady cluster: heartbeats and renewals at their normal pace
        cluster.kill(task["node"])
        killed = time.time()
        detected: float | None = None
        fenced: float | None = None
        while time.time() - killed < 180:
            if detected is None and cluster.nodes()[task["node"]] == "down":
                detected = time.time() - killed
            live = writers(cluster.root)
            if fenced is None and all(e != epoch for _, e in live):
                fenced = time.time() - killed
            for pid, new in live:
                first = first_line_of(pid, new) if new > epoch else None
                if first is not None:
                    return first - killed, detected or first - killed, fenced or first - killed
            time.sleep(0.05)
        raise SystemExit("the writer did not write again within 180 s")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--runs", type=int, default=5)
    args = parser.parse_args()
    why = netns_supported()
    if why is not None:
        print(json.dumps({"bench": "volume_failover", "skipped": why}), flush=True)
        return
    runs: list[float] = []
    detects: list[float] = []
    fences: list[float] = []
    for i in range(args.runs):
        with tempfile.TemporaryDirectory(prefix="moorage-volume-failover-") as tmp:
            took, detect, fenced = one_run(Path(tmp) / f"run{i}")
        runs.append(took)
        detects.append(detect)
        fences.append(fenced)
    p50 = statistics.median(runs)
    line = {
        "bench": "volume_failover",
        "metric": "volume_failover_s",
        "value": round(p50, 3),
        "unit": "s",
        "params": {
            "nodes": 3,
            "tasks": 1,
            "volume": "shared, single-writer, 64 MiB ext4 image",
            "killed": "the writer's node agent",
            "runs": args.runs,
        },
        "goal": GOAL,
        "meets_goal": p50 <= GOAL,
        "detect_s": round(statistics.median(detects), 3),
        "fenced_s": round(statistics.median(fences), 3),
        "runs_s": [round(r, 3) for r in runs],
        "peer_defaults_s": {"kubernetes": 360},
        "peer_note": "Kubernetes, ReadWriteOnce volume on a dead node: pod evicted after 300 s, "
        "volume force-detached 6 min later: >= 6 min",
    }
    print(json.dumps(line), flush=True)


if __name__ == "__main__":
    main()
