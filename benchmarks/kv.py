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

With `--tls on` both serve HTTPS from the same CA (moorage's cluster CA: `--tls on` on the
server; etcd gets a certificate that CA signs, `--cert-file`); with `--tls both` (what `make
bench` runs) all four run in the same rounds and two more lines say what TLS costs each:
`kv_tls_cost` = the HTTPS figure / the plain one (goal ≥ 0.9), for moorage and for etcd.

Run: `python benchmarks/kv.py [--seconds 3] [--rounds 3] [--clients 1,16,64] [--tls off|on|both]`.
Needs etcd-server (Debian); without /usr/bin/etcd the etcd figures are skipped, and said so.
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
import ssl
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


def start_moorage(root: Path, tls: bool = False) -> tuple[subprocess.Popen[bytes], str]:
    port = free_port()
    log = root / "moorage.log"
    root.mkdir(parents=True, exist_ok=True)
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
            "--cluster-addr",
            f"127.0.0.1:{free_port()}",
            "--tls",
            "on" if tls else "off",
        ],
        stdout=log.open("wb"),
        stderr=subprocess.STDOUT,
        env={**os.environ, "PYTHONUNBUFFERED": "1"},
    )
    wait_ready(proc, log, lambda: b"\nready\n" in b"\n" + log.read_bytes())
    return proc, f"{'https' if tls else 'http'}://127.0.0.1:{port}"


def etcd_certificate(ca_dir: Path, root: Path) -> tuple[Path, Path]:
    """A server certificate for 127.0.0.1 from moorage's cluster CA (the same CA both use)."""
    from moorage.pki import key_and_csr, load_or_create_authority

    key, csr = key_and_csr("server", "etcd", ["127.0.0.1"])
    cert = load_or_create_authority(ca_dir).sign(csr, "server", "etcd", 30)
    (root / "etcd.key").write_bytes(key)
    (root / "etcd.pem").write_bytes(cert)
    return root / "etcd.pem", root / "etcd.key"


def start_etcd(
    root: Path, tls: tuple[Path, Path] | None = None, ca: Path | None = None
) -> tuple[subprocess.Popen[bytes], str]:
    client, peer = free_port(), free_port()
    scheme = "https" if tls else "http"
    url, peer_url = f"{scheme}://127.0.0.1:{client}", f"http://127.0.0.1:{peer}"
    root.mkdir(parents=True, exist_ok=True)
    log = root / "etcd.log"
    served = ["--cert-file", str(tls[0]), "--key-file", str(tls[1])] if tls else []
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
            *served,
        ],
        stdout=log.open("wb"),
        stderr=subprocess.STDOUT,
    )
    context = ssl.create_default_context(cafile=str(ca)) if ca else None

    def healthy() -> bool:
        try:
            import urllib.request

            with urllib.request.urlopen(f"{url}/health", timeout=1, context=context) as answer:
                return bool(json.loads(answer.read()).get("health") == "true")
        except OSError:
            return False

    wait_ready(proc, log, healthy)
    return proc, url


def b64(text: str | bytes) -> str:
    return base64.b64encode(text.encode() if isinstance(text, str) else text).decode()


class Target:
    """How one system writes and reads a key over HTTP (the same aiohttp client for both)."""

    def __init__(self, kind: str, url: str, pid: int, ca: Path | None = None) -> None:
        self.kind = kind  # moorage | etcd
        self.name = kind + ("-tls" if ca else "")
        self.url = url
        self.pid = pid
        self.ca = ca

    def connector(self, limit: int) -> aiohttp.TCPConnector:
        context = ssl.create_default_context(cafile=str(self.ca)) if self.ca else False
        return aiohttp.TCPConnector(limit=limit, force_close=False, ssl=context)

    def cpu_seconds(self) -> float:
        """CPU time the server process used so far (user + system)."""
        fields = Path(f"/proc/{self.pid}/stat").read_text().rsplit(")", 1)[1].split()
        return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")

    async def write(self, http: aiohttp.ClientSession, key: str, value: bytes) -> None:
        if self.kind == "moorage":
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
        if self.kind == "moorage":
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
    async with aiohttp.ClientSession(connector=target.connector(clients)) as http:
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
    async with aiohttp.ClientSession(connector=target.connector(32)) as http:
        value = b"v" * VALUE_SIZE
        for start in range(0, KEYS, 32):
            await asyncio.gather(
                *(
                    target.write(http, f"bench/{i:04d}", value)
                    for i in range(start, min(start + 32, KEYS))
                )
            )


def emit(
    metric: str, clients: int, ours: float, peer: float | None, tls: bool, **extra: Any
) -> None:
    line: dict[str, Any] = {
        "bench": "kv",
        "metric": metric,
        "value": round(ours, 1),
        "unit": "ops/s",
        "params": {"clients": clients, "tls": tls},
        "peer": "etcd (TLS, the same CA)" if tls else "etcd",
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
    parser.add_argument(
        "--tls", choices=["off", "on", "both"], default="both", help="HTTPS on both sides"
    )
    args = parser.parse_args()
    levels = [int(n) for n in args.clients.split(",")]
    have_etcd = os.access(ETCD, os.X_OK) and args.only != "moorage"
    if not have_etcd and args.only != "moorage":
        print(f"# etcd figures skipped: no etcd at {ETCD} (apt install etcd-server)", flush=True)
    modes = {"off": [False], "on": [True], "both": [False, True]}[args.tls]
    with tempfile.TemporaryDirectory(prefix="moorage-bench-kv-") as tmp:
        root = Path(tmp)
        procs: list[subprocess.Popen[bytes]] = []
        try:
            targets: list[Target] = []
            for tls in modes:
                where = root / ("tls" if tls else "plain")
                ca_dir = where / "moorage" / "tls"
                ca = ca_dir / "ca.pem" if tls else None
                if args.only != "etcd" or tls:  # the moorage server's CA serves etcd too
                    proc, url = start_moorage(where, tls)
                    procs.append(proc)
                    if args.only != "etcd":
                        targets.append(Target("moorage", url, proc.pid, ca))
                if have_etcd:
                    served = etcd_certificate(ca_dir, where) if tls else None
                    proc, url = start_etcd(where, served, ca)
                    procs.append(proc)
                    targets.append(Target("etcd", url, proc.pid, ca))
            for target in targets:
                asyncio.run(fill(target))
            for op, metric in (("write", "kv_writes_per_s"), ("read", "kv_reads_per_s")):
                if args.ops != "both" and op != args.ops:
                    continue
                for clients in levels:
                    # Interleaved per point (A B, then B A...), so all see the same machine at
                    # nearly the same moment; each figure is the median of its rounds.
                    runs: dict[str, list[float]] = {t.name: [] for t in targets}
                    cpus: dict[str, list[float]] = {t.name: [] for t in targets}
                    for number in range(args.rounds):
                        for t in targets if number % 2 == 0 else targets[::-1]:
                            rate, cpu = asyncio.run(run_point(t, op, clients, args.seconds))
                            runs[t.name].append(rate)
                            cpus[t.name].append(cpu)
                    report(metric, clients, runs, cpus, modes, args.only)
        finally:
            for proc in procs:
                stop(proc)


def report(
    metric: str,
    clients: int,
    runs: dict[str, list[float]],
    cpus: dict[str, list[float]],
    modes: list[bool],
    only: str | None,
) -> None:
    rates = {name: statistics.median(values) for name, values in runs.items()}
    cpu_per_op = {n: round(statistics.median(v), 1) for n, v in cpus.items()}
    rounds = {n: [round(v, 1) for v in values] for n, values in runs.items()}
    for tls in modes:
        suffix = "-tls" if tls else ""
        ours, peer = rates.get("moorage" + suffix), rates.get("etcd" + suffix)
        if ours is not None:
            emit(
                metric,
                clients,
                ours,
                peer,
                tls,
                rounds=rounds,
                server_cpu_us_per_op=cpu_per_op,
                loadavg=round(os.getloadavg()[0], 2),
            )
        elif peer is not None and only == "etcd":
            line = {
                "bench": "kv",
                "metric": metric,
                "system": "etcd" + suffix,
                "value": round(peer, 1),
                "server_cpu_us_per_op": cpu_per_op["etcd" + suffix],
                "params": {"clients": clients, "tls": tls},
            }
            print(json.dumps(line), flush=True)
    if len(modes) == 2:
        for kind in ("moorage", "etcd"):
            if kind in rates and kind + "-tls" in rates:
                line = {
                    "bench": "kv",
                    "metric": "kv_tls_cost",
                    "system": kind,
                    "op": metric,
                    "value": round(rates[kind + "-tls"] / rates[kind], 3),
                    "unit": "HTTPS / plain HTTP throughput",
                    "params": {"clients": clients},
                    "goal": 0.9,
                }
                print(json.dumps(line), flush=True)


if __name__ == "__main__":
    main()
