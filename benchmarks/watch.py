"""Blocking-query fan-out: 10,000 KV watchers over 1,000 keys; one write wakes only its key's.

Watchers are real HTTP long polls (`GET /v1/kv/w/<k>?index=N&wait=5m`, 10 per key) held by
client processes (aiohttp, one connection per watcher) against a `moorage server`. Once every
watcher is blocked, the script writes one key at a time (`--writes` of them, a distinct key
each, 100 ms apart) and records, for every answer a watcher gets:

    notify latency   the answer's arrival minus the moment the write was sent (the write's own
                     durable commit included), for the 10 watchers of the written key
    spurious wakeup  an answer to a watcher whose key was not written (or whose index did not
                     move): Consul's global index would wake all 10,000 on every write

Prints one JSON line per figure: `watch_notify_p99_ms` (goal ≤ 100; p50 and max beside it)
and `watch_spurious_wakeups` (goal 0), with `params` {watchers, keys, writes}.

With `--tls on` the server's API is HTTPS (`--tls on`; the watchers check it against its
cluster CA); `--tls both` (what `make bench` runs) measures plain HTTP, then HTTPS, in the same
run, and adds `watch_tls_cost`: the HTTPS p99 / the plain p99 (goal ≤ 1.1).

Run: `python benchmarks/watch.py [--watchers 10000] [--keys 1000] [--writes 50] [--clients 2]
[--tls off|on|both]`.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import multiprocessing as mp
import os
import queue
import resource
import signal
import socket
import ssl
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

import aiohttp

GOAL_P99_MS = 100.0
WAIT = "5m"


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def key_name(number: int) -> str:
    return f"w/{number:04d}"


def start_server(root: Path, tls: bool = False) -> tuple[subprocess.Popen[bytes], str]:
    port = free_port()
    log = root / "server.log"
    proc = subprocess.Popen(
        [
            sys.executable,
            "-m",
            "moorage",
            "server",
            "--data-dir",
            str(root / "data"),
            "--http-addr",
            f"127.0.0.1:{port}",
            "--dns-addr",
            f"127.0.0.1:{free_port()}",
            "--cluster-addr",
            f"127.0.0.1:{free_port()}",
            "--tls",
            "on" if tls else "off",
        ],
        stdout=log.open("wb"),
        stderr=subprocess.STDOUT,
        env={**os.environ, "PYTHONUNBUFFERED": "1"},
    )
    deadline = time.monotonic() + 30
    while b"\nready\n" not in b"\n" + log.read_bytes():
        if proc.poll() is not None or time.monotonic() > deadline:
            raise SystemExit(f"server did not start:\n{log.read_text(errors='replace')}")
        time.sleep(0.1)
    return proc, f"{'https' if tls else 'http'}://127.0.0.1:{port}"


def connector(ca: str | None, limit: int) -> aiohttp.TCPConnector:
    context = ssl.create_default_context(cafile=ca) if ca else False
    return aiohttp.TCPConnector(limit=limit, force_close=False, ssl=context)


# ---- a client process: its share of the watchers ------------------------------------------
def client_main(
    url: str, ca: str | None, keys: list[str], per_key: int, out: Any, control: Any
) -> None:
    asyncio.run(watch_keys(url, ca, keys, per_key, out, control))


async def watch_keys(
    url: str, ca: str | None, keys: list[str], per_key: int, out: Any, control: Any
) -> None:
    timeout = aiohttp.ClientTimeout(total=None, sock_read=None)
    opening = asyncio.Semaphore(100)  # the server's listen backlog is small: connect in waves
    armed = 0
    async with aiohttp.ClientSession(connector=connector(ca, 0), timeout=timeout) as http:

        async def watcher(key: str) -> None:
            nonlocal armed
            async with opening, http.get(f"{url}/v1/kv/{key}") as answer:
                await answer.read()
                index = int(answer.headers["X-Consul-Index"])
            armed += 1
            while True:
                params = {"index": str(index), "wait": WAIT}
                async with http.get(f"{url}/v1/kv/{key}", params=params) as answer:
                    await answer.read()
                    arrived = time.monotonic()
                    new = int(answer.headers["X-Consul-Index"])
                out.put((key, arrived, index, new, answer.status))
                index = new

        tasks = [asyncio.create_task(watcher(k)) for k in keys for _ in range(per_key)]
        while armed < len(tasks):
            await asyncio.sleep(0.05)
        out.put(("armed", len(tasks)))
        await asyncio.get_running_loop().run_in_executor(None, control.wait)
        for task in tasks:
            task.cancel()
        await asyncio.gather(*tasks, return_exceptions=True)


# ---- the coordinator ----------------------------------------------------------------------
async def write(http: aiohttp.ClientSession, url: str, key: str, value: bytes) -> float:
    sent = time.monotonic()
    async with http.put(f"{url}/v1/kv/{key}", data=value) as answer:
        assert answer.status == 200 and await answer.read() == b"true"
    return sent


def quantile(values: list[float], q: float) -> float:
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, max(0, round(q * (len(ordered) - 1))))]


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--watchers", type=int, default=10_000)
    parser.add_argument("--keys", type=int, default=1_000)
    parser.add_argument("--writes", type=int, default=50)
    parser.add_argument("--clients", type=int, default=2, help="client processes")
    parser.add_argument("--tls", choices=["off", "on", "both"], default="both")
    args = parser.parse_args()
    per_key = args.watchers // args.keys
    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    need = args.watchers + 1000
    if hard < need:
        raise SystemExit(f"needs {need} file descriptors (ulimit -Hn is {hard})")
    resource.setrlimit(resource.RLIMIT_NOFILE, (max(soft, need), hard))  # the server inherits it

    modes = {"off": [False], "on": [True], "both": [False, True]}[args.tls]
    p99: dict[bool, float] = {}
    for tls in modes:
        latencies, spurious, missing = measure(args, per_key, tls)
        p99[tls] = quantile(latencies, 0.99) * 1000
        params = {
            "watchers": per_key * args.keys,
            "keys": args.keys,
            "writes": args.writes,
            "tls": tls,
        }
        transport = "https long poll" if tls else "http long poll"
        common = {"bench": "watch", "params": params, "transport": transport}
        print(
            json.dumps(
                {
                    **common,
                    "metric": "watch_notify_p99_ms",
                    "value": round(p99[tls], 2),
                    "unit": "ms",
                    "p50_ms": round(quantile(latencies, 0.5) * 1000, 2),
                    "max_ms": round(max(latencies) * 1000, 2),
                    "samples": len(latencies),
                    "missed": missing,
                    "goal": {"max": GOAL_P99_MS},
                }
            ),
            flush=True,
        )
        print(
            json.dumps(
                {
                    **common,
                    "metric": "watch_spurious_wakeups",
                    "value": spurious,
                    "unit": "count",
                    "goal": {"max": 0},
                }
            ),
            flush=True,
        )
    if len(p99) == 2:
        cost = {
            "bench": "watch",
            "metric": "watch_tls_cost",
            "value": round(p99[True] / p99[False], 2),
            "unit": "HTTPS p99 / plain HTTP p99",
            "goal": {"max": 1.1},
        }
        print(json.dumps(cost), flush=True)


def measure(args: argparse.Namespace, per_key: int, tls: bool) -> tuple[list[float], int, int]:
    with tempfile.TemporaryDirectory(prefix="moorage-bench-watch-") as tmp:
        server, url = start_server(Path(tmp), tls)
        ca = str(Path(tmp) / "data" / "tls" / "ca.pem") if tls else None
        ctx = mp.get_context("spawn")
        out = ctx.Queue()
        control = ctx.Event()
        procs = []
        try:
            keys = [key_name(n) for n in range(args.keys)]
            asyncio.run(fill(url, ca, keys))
            shares = [keys[i :: args.clients] for i in range(args.clients)]
            for share in shares:
                proc = ctx.Process(target=client_main, args=(url, ca, share, per_key, out, control))
                proc.start()
                procs.append(proc)
            armed = 0
            deadline = time.monotonic() + 300
            while armed < per_key * args.keys:
                item = out.get(timeout=max(1.0, deadline - time.monotonic()))
                if item[0] == "armed":
                    armed += item[1]
            time.sleep(1.0)  # the last requests are parsed and blocked on the server
            return asyncio.run(run_writes(url, ca, keys, per_key, args.writes, out))
        finally:
            control.set()
            for proc in procs:
                proc.join(10)
                if proc.is_alive():
                    proc.kill()
            server.send_signal(signal.SIGINT)
            try:
                server.wait(30)
            except subprocess.TimeoutExpired:
                server.kill()


async def fill(url: str, ca: str | None, keys: list[str]) -> None:
    async with aiohttp.ClientSession(connector=connector(ca, 32)) as http:
        for start in range(0, len(keys), 32):
            await asyncio.gather(*(write(http, url, k, b"0") for k in keys[start : start + 32]))


async def run_writes(
    url: str, ca: str | None, keys: list[str], per_key: int, writes: int, out: Any
) -> tuple[list[float], int, int]:
    """Write `writes` distinct keys one at a time; (latencies, spurious wakeups, missed)."""
    latencies: list[float] = []
    spurious = missing = 0
    step = max(1, len(keys) // writes)
    loop = asyncio.get_running_loop()
    async with aiohttp.ClientSession(connector=connector(ca, 4)) as http:
        for number in range(writes):
            key = keys[(number * step + 7) % len(keys)]
            sent = await write(http, url, key, f"v{number}".encode())
            woken = 0
            until = time.monotonic() + 0.1 if number < writes - 1 else time.monotonic() + 1.0
            while True:
                left = until - time.monotonic()
                if left <= 0 and woken >= per_key:
                    break
                try:
                    item = await loop.run_in_executor(None, out.get, True, max(left, 0.05))
                except queue.Empty:
                    if left <= 0:
                        break
                    continue
                answered, arrived, before, after, status = item
                if answered == key and after > before and status == 200:
                    latencies.append(arrived - sent)
                    woken += 1
                else:
                    spurious += 1
            missing += max(0, per_key - woken)
    return latencies, spurious, missing


if __name__ == "__main__":
    main()
