"""Deploy → running latency of 20 tasks, beside the same work done raw, in the same run.

    docker   moorage (deploy 20 tasks of a tiny image)  vs  20 concurrent `docker run -d` (API)
    process  moorage (deploy 20 `sleep` tasks)          vs  20 concurrent raw subprocess spawns

A task's latency is its `started_at` (stamped by the agent when its driver returned) minus the
moment the deploy request was sent; a raw start's is the moment it returned minus when it was
asked. Prints one JSON line per figure: start_p50_s and start_p95_s per driver, with the peer's
value and the ratio, and process_overhead_ms (moorage's p50 minus the raw spawn's p50).

Run: `python benchmarks/start_latency.py [--rounds 3] [--tasks 20]`. Needs a Docker engine for
the docker figures (they are skipped, and said so, without one) and busybox-static for the image.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import signal
import socket
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

import httpx

REPO = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(REPO))

GOALS = {"docker": 1.2, "process_overhead_ms": 50.0}


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def quantile(values: list[float], q: float) -> float:
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, max(0, round(q * (len(ordered) - 1))))]


class Moorage:
    """`moorage dev` in a temporary data dir (server + agent + SQLite in one process)."""

    def __init__(self, root: Path) -> None:
        self.http_port, agent_port = free_port(), free_port()
        self.url = f"http://127.0.0.1:{self.http_port}"
        self.log = (root / "dev.log").open("wb")
        self.proc = subprocess.Popen(
            [
                sys.executable,
                "-m",
                "moorage",
                "dev",
                "--data-dir",
                str(root / "data"),
                "--http-addr",
                f"127.0.0.1:{self.http_port}",
                "--agent-addr",
                f"127.0.0.1:{agent_port}",
                "--dns-addr",
                f"127.0.0.1:{free_port()}",
                "--cluster-addr",
                f"127.0.0.1:{free_port()}",
            ],
            stdout=self.log,
            stderr=subprocess.STDOUT,
            env={**os.environ, "PYTHONUNBUFFERED": "1"},
        )
        self.http = httpx.Client(base_url=self.url, timeout=30)
        deadline = time.monotonic() + 30
        while b"\nready\n" not in b"\n" + (root / "dev.log").read_bytes():
            if self.proc.poll() is not None or time.monotonic() > deadline:
                raise SystemExit((root / "dev.log").read_text())
            time.sleep(0.1)

    def round(self, name: str, container: str, count: int) -> list[float]:
        spec = f"service: {name}\ncount: {count}\ncontainers: [{container}]\n"
        spec += "deployment: {min_healthy_time: 0s}\n"
        began = time.time()
        response = self.http.post(
            "/v1/services", content=spec, headers={"Content-Type": "application/yaml"}
        )
        response.raise_for_status()
        deadline = time.monotonic() + 120
        while True:
            tasks = self.http.get("/v1/tasks", params={"service": name}).json()
            live = [t for t in tasks if t["desired"] == "run"]
            if len(live) == count and all(t["status"] == "running" for t in live):
                break
            if time.monotonic() > deadline:
                raise SystemExit(f"{name}: tasks did not all start: {live}")
            time.sleep(0.05)
        latencies = [t["started_at"] - began for t in live]
        self.http.post(f"/v1/services/{name}/stop").raise_for_status()
        while any(
            t["status"] not in ("stopped", "failed", "exited")
            for t in self.http.get("/v1/tasks", params={"service": name}).json()
        ):
            time.sleep(0.1)
        return latencies

    def close(self) -> None:
        self.http.close()
        self.proc.send_signal(signal.SIGINT)
        try:
            self.proc.wait(60)
        except subprocess.TimeoutExpired:
            self.proc.kill()
        self.log.close()


async def raw_docker(image: str, count: int) -> list[float]:
    import aiodocker

    docker = aiodocker.Docker()
    created: list[Any] = []

    async def one() -> float:
        asked = time.monotonic()
        container = await docker.containers.create(
            {"Image": image, "Cmd": ["sleep", "300"], "HostConfig": {"Init": True}}
        )
        created.append(container)
        await container.start()
        return time.monotonic() - asked

    try:
        return list(await asyncio.gather(*(one() for _ in range(count))))
    finally:
        await asyncio.gather(*(c.delete(force=True) for c in created), return_exceptions=True)
        await docker.close()


async def raw_spawn(count: int) -> list[float]:
    processes = []

    async def one() -> float:
        asked = time.monotonic()
        process = await asyncio.create_subprocess_exec(
            "sleep", "300", stdout=asyncio.subprocess.DEVNULL, stderr=asyncio.subprocess.DEVNULL
        )
        processes.append(process)
        return time.monotonic() - asked

    try:
        return list(await asyncio.gather(*(one() for _ in range(count))))
    finally:
        for process in processes:
            process.kill()
            await process.wait()


def emit(metric: str, value: float, unit: str, params: dict[str, Any], **extra: Any) -> None:
    line: dict[str, Any] = {"bench": "start_latency", "metric": metric, "value": round(value, 4)}
    line |= {"unit": unit, "params": params, **extra}
    print(json.dumps(line), flush=True)


def report(driver: str, tasks: int, ours: list[float], peer_name: str, peer: list[float]) -> None:
    params = {"driver": driver, "tasks": tasks}
    for q, metric in ((0.5, "start_p50_s"), (0.95, "start_p95_s")):
        mine, theirs = quantile(ours, q), quantile(peer, q)
        extra: dict[str, Any] = {
            "peer": {"name": peer_name, "value": round(theirs, 4)},
            "ratio": round(mine / theirs, 2) if theirs else None,
            "samples": len(ours),
        }
        if driver == "docker":
            extra["goal"] = {"ratio": GOALS["docker"]}
        emit(metric, mine, "s", params, **extra)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--tasks", type=int, default=20)
    parser.add_argument("--rounds", type=int, default=3)
    args = parser.parse_args()
    from tests.fixtures.images import docker_ready, ensure_image

    with tempfile.TemporaryDirectory(prefix="moorage-bench-") as tmp:
        moorage = Moorage(Path(tmp))
        try:
            ours: list[float] = []
            peer: list[float] = []
            for number in range(args.rounds):
                ours += moorage.round(
                    f"p{number}",
                    "{name: app, command: [sleep, '300'], memory: 16, cpu: 10}",
                    args.tasks,
                )
                peer += asyncio.run(raw_spawn(args.tasks))
            report("process", args.tasks, ours, "raw subprocess spawn", peer)
            overhead = (statistics.median(ours) - statistics.median(peer)) * 1000
            emit(
                "process_overhead_ms",
                overhead,
                "ms",
                {"driver": "process", "tasks": args.tasks},
                goal=GOALS["process_overhead_ms"],
            )
            if not docker_ready():
                print(json.dumps({"bench": "start_latency", "skipped": "docker: no engine here"}))
                return
            image = ensure_image()
            ours, peer = [], []
            container = (
                f'{{name: app, image: "{image}", command: [sleep, "300"], memory: 16, cpu: 10}}'
            )
            for number in range(args.rounds):
                ours += moorage.round(f"d{number}", container, args.tasks)
                peer += asyncio.run(raw_docker(image, args.tasks))
            report("docker", args.tasks, ours, "docker run -d (engine API, same image)", peer)
        finally:
            moorage.close()


if __name__ == "__main__":
    main()
