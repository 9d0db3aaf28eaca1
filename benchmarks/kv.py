"""KV throughput: moorage's `/v1/kv` beside a single-node etcd, same client, same run.

    moorage  `moorage server` (SQLite, synchronous=FULL)  PUT / GET /v1/kv/bench/<k>
    etcd     `/usr/bin/etcd` (3.4, one member, WAL fsync) POST /v3/kv/put, /v3/kv/range (its
             HTTP JSON gateway, base64 keys and values; reads are etcd's default: linearizable)

Both are started here, in a temp dir, on loopback ports. For 1, 16 and 64 concurrent clients
(one aiohttp session, one connection per client) the script writes 256-byte values to 1,000 keys,
then reads them, for a few seconds per point; every write is durable when acknowledged, on
both sides. Prints one JSON line per figure: `kv_writes_per_s` and `kv_reads_per_s` with
params `{"clients": n}`, the etcd figure (`peer_value`) and `ratio` (moorage / etcd; goal ≥ 1):
the median of `--rounds` alternating rounds (all listed in `rounds`), with each server's CPU
time per operation and the load average (the machine may be shared: look at both).

Run: `python benchmarks/kv.py [--seconds 3] [--rounds 3] [--clients 1,16,64]`. Needs
etcd-server (Debian); without /usr/bin/etcd the etcd figures are skipped, and said so.
"""

from __future__ import annotations

import argparse
import asyncio
import base64
import json
import os
import random
import shutil
import signal
import socket
import statistics
import subprocess
import sys
import tempfile
import time
from collections.abc import Awaitable, Callable
from pathlib import Path
from typing import Any

import aiohttp

REPO = Path(__file__).resolve().parent.parent
ETCD = shutil.which("etcd") or "/usr/bin/etcd"
KEYS = 1000
VALUE_SIZE = 256
GOAL = 1.0


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def wait_ready(proc: subprocess.Popen[bytes], log: Path, ready: Callable[[], bool]) -> None:
    deadline = time.monotonic() + 30
    while not ready():
        if proc.poll() is not None or time.monotonic() > deadline:
            raise SystemExit(f"{proc.args} did not start:\n{log.read_text(errors='replace')}")
        time.sleep(0.1)


def stop(proc: subprocess.Popen[bytes]) -> None:
    proc.send_signal(signal.SIGINT)
    try:
        proc.wait(30)
    except subprocess.TimeoutExpired:
        proc.kill()
        proc.wait()


def start_moorage(root: Path) -> tuple[subprocess.Popen[bytes], str]:
    port = free_port()
    log = root / "moorage.log"
    proc = subprocess.Popen(
        [
            sys.executable,
            "-m",
            "moorage",
            "server",
            "--data-dir",
            str(root / "moorage"),
            "--http-addr",
            f"127.0.0.1:{port}",
            "--dns-addr",
            f"127.0.0.1:{free_port()}",
        ],
        stdout=log.open("wb"),
        stderr=subprocess.STDOUT,
        env={**os.environ, "PYTHONUNBUFFERED": "1"},
    )
    wait_ready(proc, log, lambda: b"\nready\n" in b"\n" + log.read_bytes())
    return proc, f"http://127.0.0.1:{port}"


def start_etcd(root: Path) -> tuple[subprocess.Popen[bytes], str]:
    client, peer = free_port(), free_port()
    url, peer_url = f"http://127.0.0.1:{client}", f"http://127.0.0.1:{peer}"
    log = root / "etcd.log"
    proc = subprocess.Popen(
        [
            ETCD,
            "--name",
            "bench",
            "--data-dir",
            str(root / "etcd"),
            "--listen-client-urls",
            url,
            "--advertise-client-urls",
            url,
            "--listen-peer-urls",
            peer_url,
            "--initial-advertise-peer-urls",
            peer_url,
            "--initial-cluster",
            f"bench={peer_url}",
            "--log-level",
            "error",
        ],
        stdout=log.open("wb"),
        stderr=subprocess.STDOUT,
    )

    def healthy() -> bool:
        try:
            import urllib.request

            with urllib.request.urlopen(f"{url}/health", timeout=1) as answer:
                return bool(json.loads(answer.read()).get("health") == "true")
        except OSError:
            return False

    wait_ready(proc, log, healthy)
    return proc, url


def b64(text: str | bytes) -> str:
    return base64.b64encode(text.encode() if isinstance(text, str) else text).decode()


class Target:
    """How one system writes and reads a key over HTTP (the same aiohttp client for both)."""

    def __init__(self, name: str, url: str, pid: int) -> None:
        self.name = name
        self.url = url
        self.pid = pid

    def cpu_seconds(self) -> float:
        """CPU time the server process used so far (user + system)."""
        fields = Path(f"/proc/{self.pid}/stat").read_text().rsplit(")", 1)[1].split()
        return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")

    async def write(self, http: aiohttp.ClientSession, key: str, value: bytes) -> None:
        if self.name == "moorage":
            async with http.put(f"{self.url}/v1/kv/{key}", data=value) as answer:
                body = await answer.read()
                if answer.status != 200 or body != b"true":
                    raise RuntimeError(f"moorage put: {answer.status} {body[:200]!r}")
        else:
            payload = {"key": b64(key), "value": b64(value)}
            async with http.post(f"{self.url}/v3/kv/put", json=payload) as answer:
                body = await answer.read()
                if answer.status != 200:
                    raise RuntimeError(f"etcd put: {answer.status} {body[:200]!r}")

    async def read(self, http: aiohttp.ClientSession, key: str) -> None:
        if self.name == "moorage":
            async with http.get(f"{self.url}/v1/kv/{key}") as answer:
                body = await answer.read()
                if answer.status != 200:
                    raise RuntimeError(f"moorage get: {answer.status} {body[:200]!r}")
        else:
            async with http.post(f"{self.url}/v3/kv/range", json={"key": b64(key)}) as answer:
                body = await answer.read()
                if answer.status != 200 or b'"kvs"' not in body:
                    raise RuntimeError(f"etcd range: {answer.status} {body[:200]!r}")


async def run_point(
    target: Target, op: str, clients: int, seconds: float, warmup: float = 0.5
) -> tuple[float, float]:
    """Operations per second of `clients` concurrent loops over `seconds` (after a warmup), and
    the server's CPU time per operation (µs)."""
    connector = aiohttp.TCPConnector(limit=clients, force_close=False)
    async with aiohttp.ClientSession(connector=connector) as http:
        value = os.urandom(VALUE_SIZE // 2).hex().encode()
        done = 0
        counting = False
        stop_at = time.monotonic() + warmup + seconds

        async def loop(number: int) -> None:
            nonlocal done
            rng = random.Random(number)
            call: Callable[[str], Awaitable[None]]
            if op == "write":

                async def call(key: str) -> None:
                    await target.write(http, key, value)
            else:

                async def call(key: str) -> None:
                    await target.read(http, key)

            while time.monotonic() < stop_at:
                await call(f"bench/{rng.randrange(KEYS):04d}")
                if counting:
                    done += 1

        loops = [asyncio.create_task(loop(n)) for n in range(clients)]
        await asyncio.sleep(warmup)
        counting, began, cpu = True, time.monotonic(), target.cpu_seconds()
        await asyncio.gather(*loops)
        cpu = target.cpu_seconds() - cpu
        return done / (time.monotonic() - began), cpu / max(done, 1) * 1e6


async def fill(target: Target) -> None:
    connector = aiohttp.TCPConnector(limit=32)
    async with aiohttp.ClientSession(connector=connector) as http:
        value = b"v" * VALUE_SIZE
        for start in range(0, KEYS, 32):
            await asyncio.gather(
                *(
                    target.write(http, f"bench/{i:04d}", value)
                    for i in range(start, min(start + 32, KEYS))
                )
            )


def emit(metric: str, clients: int, ours: float, peer: float | None, **extra: Any) -> None:
    line: dict[str, Any] = {
        "bench": "kv",
        "metric": metric,
        "value": round(ours, 1),
        "unit": "ops/s",
        "params": {"clients": clients},
        "peer": "etcd",
        "peer_value": round(peer, 1) if peer is not None else None,
        "ratio": round(ours / peer, 2) if peer else None,
        "goal": {"ratio": GOAL},
        "value_bytes": VALUE_SIZE,
        **extra,
    }
    print(json.dumps(line), flush=True)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--seconds", type=float, default=3.0, help="measured seconds per point")
    parser.add_argument("--clients", default="1,16,64", help="concurrency levels")
    parser.add_argument("--rounds", type=int, default=3, help="alternating rounds per point")
    parser.add_argument("--only", choices=["moorage", "etcd"], help="measure one system only")
    parser.add_argument("--ops", choices=["both", "write", "read"], default="both")
    args = parser.parse_args()
    levels = [int(n) for n in args.clients.split(",")]
    have_etcd = os.access(ETCD, os.X_OK) and args.only != "moorage"
    if not have_etcd and args.only != "moorage":
        print(f"# etcd figures skipped: no etcd at {ETCD} (apt install etcd-server)", flush=True)
    with tempfile.TemporaryDirectory(prefix="moorage-bench-kv-") as tmp:
        root = Path(tmp)
        procs: list[subprocess.Popen[bytes]] = []
        try:
            targets: list[Target] = []
            if args.only != "etcd":
                proc, url = start_moorage(root)
                procs.append(proc)
                targets.append(Target("moorage", url, proc.pid))
            if have_etcd:
                proc, url = start_etcd(root)
                procs.append(proc)
                targets.append(Target("etcd", url, proc.pid))
            for target in targets:
                asyncio.run(fill(target))
            for op, metric in (("write", "kv_writes_per_s"), ("read", "kv_reads_per_s")):
                if args.ops != "both" and op != args.ops:
                    continue
                for clients in levels:
                    # Interleaved per point (A B, then B A...), so both see the same machine at
                    # nearly the same moment; each figure is the median of its rounds.
                    runs: dict[str, list[float]] = {t.name: [] for t in targets}
                    cpus: dict[str, list[float]] = {t.name: [] for t in targets}
                    for number in range(args.rounds):
                        for t in targets if number % 2 == 0 else targets[::-1]:
                            rate, cpu = asyncio.run(run_point(t, op, clients, args.seconds))
                            runs[t.name].append(rate)
                            cpus[t.name].append(cpu)
                    rates = {name: statistics.median(values) for name, values in runs.items()}
                    cpu_per_op = {n: round(statistics.median(v), 1) for n, v in cpus.items()}
                    if "moorage" in rates:
                        rounds = {n: [round(v, 1) for v in values] for n, values in runs.items()}
                        emit(
                            metric,
                            clients,
                            rates["moorage"],
                            rates.get("etcd"),
                            rounds=rounds,
                            server_cpu_us_per_op=cpu_per_op,
                            loadavg=round(os.getloadavg()[0], 2),
                        )
                    else:
                        print(
                            json.dumps(
                                {
                                    "bench": "kv",
                                    "metric": metric,
                                    "system": "etcd",
                                    "value": round(rates["etcd"], 1),
                                    "server_cpu_us_per_op": cpu_per_op["etcd"],
                                    "params": {"clients": clients},
                                }
                            ),
                            flush=True,
                        )
        finally:
            for proc in procs:
                stop(proc)


if __name__ == "__main__":
    main()
