"""DNS throughput and latency: moorage's DNS beside dnsmasq serving the same records, same run.

    moorage  a real `moorage server` and five real agents (n1..n5 advertising 127.0.0.1..5);
             services web, api and db, 5 instances each (`sleep` processes with a port and
             `discovery: {}`), spread one per node: A answers hold 5 addresses, SRV answers 5
             records plus 5 target addresses
    dnsmasq  Debian's dnsmasq-base on a loopback port (`--no-daemon --no-resolv --no-hosts`),
             given the very records moorage answers (read from moorage first) as
             `--host-record` / `--srv-host` lines

Both are driven by Debian's dnsperf with the same query file (A and SRV of the three services),
UDP, dnsperf's defaults otherwise (one client, 100 queries in flight). The servers take turns
(`--rounds`, alternating, so drift hits both alike). dnsperf's `-v` prints every query's latency:
the p99 comes from those. Prints one JSON line per figure: dns_qps and dns_p99_ms for each
server; moorage's lines carry dnsmasq as their peer, the ratio and the goal (qps at least dnsmasq's,
p99 ≤ 2 ms). The p99 is given twice: at saturation (`load: saturated`, where it is mostly the
queue of 100 queries in flight) and at a fixed offered load below both servers' capacity
(`load: "20000 qps"`, dnsperf `-Q`), where it is the server's own latency.

Run: `python benchmarks/dns.py [--seconds 20] [--rounds 2] [--paced-qps 20000]
[--paced-seconds 10]` (seconds per server, all rounds together; `--paced-qps 0` skips the
paced phase). Needs dnsperf, dnsmasq and dig (Debian: dnsperf, dnsmasq-base, dnsutils).
"""

from __future__ import annotations

import argparse
import json
import os
import re
import shutil
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

REPO = Path(__file__).resolve().parent.parent
# This file is named dns.py: its directory must not shadow dnspython's `dns` package.
sys.path = [p for p in sys.path if Path(p or ".").resolve() != REPO / "benchmarks"]
sys.path.insert(0, str(REPO))

import dns.message  # noqa: E402
import dns.query  # noqa: E402
import psutil  # noqa: E402

from moorage.testing.cluster import AgentSpec, Cluster, free_port, wait_for  # noqa: E402

SERVICES = ["web", "api", "db"]
INSTANCES = 5
GOALS = {"ratio": 1.0, "p99_ms": 2.0}
BUCKET_US = 10  # latency histogram resolution


def emit(metric: str, value: float, unit: str, params: dict[str, Any], **extra: Any) -> None:
    line: dict[str, Any] = {"bench": "dns", "metric": metric, "value": round(value, 4)}
    line |= {"unit": unit, "params": params, **extra}
    print(json.dumps(line), flush=True)


def spec(name: str) -> str:
    return (
        f"service: {name}\ncount: {INSTANCES}\ndiscovery: {{}}\n"
        "placement: {strategy: spread, constraints: [distinct_hosts]}\n"
        "deployment: {min_healthy_time: 0s}\n"
        "containers:\n"
        '  - {name: app, command: ["sleep", "86400"], cpu: 5, memory: 8, '
        "ports: [{name: p}], stop_timeout: 1s}\n"
    )


def records(port: int, name: str, rdtype: str) -> list[tuple[str, str, str]]:
    """(section, owner, rdata) of moorage's answer, over TCP (whole)."""
    msg = dns.query.tcp(dns.message.make_query(name, rdtype), "127.0.0.1", timeout=5, port=port)
    out = []
    for section, rrsets in (("answer", msg.answer), ("additional", msg.additional)):
        for rrset in rrsets:
            for rdata in rrset:
                out.append((section, rrset.name.to_text(), rdata.to_text()))
    return sorted(out)


class Dnsmasq:
    """dnsmasq on a loopback port with the same A, SRV and target records as moorage."""

    def __init__(self, root: Path, moorage_port: int) -> None:
        self.port = free_port()
        args = [
            shutil.which("dnsmasq") or "/usr/sbin/dnsmasq",
            "--no-daemon",
            "--no-resolv",
            "--no-hosts",
            "--bind-interfaces",
            "--listen-address=127.0.0.1",
            f"--port={self.port}",
            "--log-facility=/dev/null",
            f"--pid-file={root / 'dnsmasq.pid'}",
        ]
        self.expected: dict[tuple[str, str], list[tuple[str, str, str]]] = {}
        targets: set[tuple[str, str]] = set()
        for service in SERVICES:
            name = f"{service}.service.moorage"
            for rdtype in ("A", "SRV"):
                found = records(moorage_port, name, rdtype)
                self.expected[name, rdtype] = found
                for section, owner, rdata in found:
                    if section == "answer" and rdtype == "A":
                        args.append(f"--host-record={name},{rdata}")
                    elif section == "answer":  # SRV: priority weight port target
                        priority, weight, port, target = rdata.split()
                        args.append(f"--srv-host={name},{target[:-1]},{port},{priority},{weight}")
                    else:
                        targets.add((owner[:-1], rdata))
        args += [f"--host-record={owner},{address}" for owner, address in sorted(targets)]
        self.proc = subprocess.Popen(args, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE)
        wait_for(lambda: self._answers() == self.expected, 10, 0.1, "dnsmasq answering")

    def _answers(self) -> dict[tuple[str, str], list[tuple[str, str, str]]]:
        if self.proc.poll() is not None:
            assert self.proc.stderr is not None
            raise SystemExit(f"dnsmasq exited: {self.proc.stderr.read().decode()}")
        try:
            return {key: records(self.port, *key) for key in self.expected}
        except Exception:
            return {}

    def close(self) -> None:
        self.proc.terminate()
        self.proc.wait(10)


def dnsperf(
    port: int, queries: Path, seconds: float, out: Path, rate: int | None = None
) -> dict[str, Any]:
    """One dnsperf run (at most `rate` queries/s when given): completed, lost, duration,
    rcodes, and the latency histogram."""
    with out.open("wb") as f:
        subprocess.run(
            [
                *("dnsperf", "-s", "127.0.0.1", "-p", str(port)),
                *("-d", str(queries), "-l", str(seconds), "-v"),
                *(("-Q", str(rate)) if rate else ()),
            ],
            stdout=f,
            stderr=subprocess.STDOUT,
            check=True,
        )
    histogram: dict[int, int] = {}
    summary: dict[str, Any] = {"rcodes": {}}
    with out.open() as f:
        for line in f:
            if line.startswith("> "):
                parts = line.split()
                summary["rcodes"][parts[1]] = summary["rcodes"].get(parts[1], 0) + 1
                bucket = int(float(parts[-1]) * 1e6) // BUCKET_US
                histogram[bucket] = histogram.get(bucket, 0) + 1
            elif "Queries completed:" in line:
                summary["completed"] = int(line.split()[2])
            elif "Queries lost:" in line:
                summary["lost"] = int(line.split()[2])
            elif "Run time (s):" in line:
                summary["seconds"] = float(line.split()[-1])
            elif "Average Latency" in line:
                summary["avg_ms"] = float(re.findall(r"[\d.]+", line)[0]) * 1000
    out.unlink()
    summary["histogram"] = histogram
    return summary


def percentile(histogram: dict[int, int], q: float) -> float:
    """The q-quantile of a latency histogram, in ms (upper edge of the bucket)."""
    total = sum(histogram.values())
    seen = 0
    for bucket in sorted(histogram):
        seen += histogram[bucket]
        if seen >= q * total:
            return (bucket + 1) * BUCKET_US / 1000
    return 0.0


def merged(results: list[dict[str, Any]]) -> dict[int, int]:
    """One latency histogram of several runs."""
    histogram: dict[int, int] = {}
    for result in results:
        for bucket, count in result["histogram"].items():
            histogram[bucket] = histogram.get(bucket, 0) + count
    return histogram


def cpu_seconds(pid: int) -> float:
    times = psutil.Process(pid).cpu_times()
    return float(times.user + times.system)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--seconds", type=float, default=20.0, help="per server, all rounds")
    parser.add_argument("--rounds", type=int, default=2, help="turns per server (alternating)")
    parser.add_argument(
        "--paced-qps", type=int, default=20_000, help="offered load of the paced phase (0: none)"
    )
    parser.add_argument("--paced-seconds", type=float, default=10.0, help="per server")
    args = parser.parse_args()
    if args.paced_qps < 0:
        parser.error("--paced-qps: must be 0 (no paced phase) or a positive rate")
    if args.paced_qps and args.paced_seconds <= 0:
        parser.error("--paced-seconds: must be greater than 0")
    for tool in ("dnsperf", "dig"):
        if shutil.which(tool) is None:
            raise SystemExit(f"benchmarks/dns.py needs {tool} (Debian: dnsperf, dnsutils)")
    if shutil.which("dnsmasq") is None and not os.path.exists("/usr/sbin/dnsmasq"):
        raise SystemExit("benchmarks/dns.py needs dnsmasq (Debian: dnsmasq-base)")

    agents = [
        AgentSpec(f"n{i}", {"zone": "abc"[(i - 1) % 3]}, args=["--advertise", f"127.0.0.{i}"])
        for i in range(1, INSTANCES + 1)
    ]
    with tempfile.TemporaryDirectory(prefix="moorage-bench-dns-") as tmp:
        root = Path(tmp)
        with Cluster(root / "cluster", agents=agents) as cluster:
            for service in SERVICES:
                cluster.deploy(spec(service))
            for service in SERVICES:
                cluster.wait_running(service, INSTANCES, timeout=60)
            port = cluster.dns_port
            for service in SERVICES:
                wait_for(
                    lambda s=service: len(records(port, f"{s}.service.moorage", "A")) == INSTANCES,
                    20,
                    0.1,
                    f"{service}: {INSTANCES} addresses",
                )
            dnsmasq = Dnsmasq(root, port)
            try:
                queries = root / "queries.txt"
                queries.write_text(
                    "".join(f"{s}.service.moorage {t}\n" for s in SERVICES for t in ("A", "SRV"))
                )
                servers = {"dnsmasq": (dnsmasq.port, dnsmasq.proc.pid), "moorage": (port, 0)}
                servers["moorage"] = (port, cluster.server.pid)
                runs: dict[str, list[dict[str, Any]]] = {name: [] for name in servers}
                paced: dict[str, list[dict[str, Any]]] = {name: [] for name in servers}
                cpu = dict.fromkeys(servers, 0.0)
                for _ in range(args.rounds):
                    for name, (server_port, pid) in servers.items():
                        before = cpu_seconds(pid)
                        runs[name].append(
                            dnsperf(server_port, queries, args.seconds / args.rounds, root / "v")
                        )
                        cpu[name] += cpu_seconds(pid) - before
                        time.sleep(0.5)
                        if args.paced_qps:
                            seconds = args.paced_seconds / args.rounds
                            paced[name].append(
                                dnsperf(server_port, queries, seconds, root / "v", args.paced_qps)
                            )
                            time.sleep(0.5)
            finally:
                dnsmasq.close()

    figures: dict[str, dict[str, Any]] = {}
    for name, results in runs.items():
        histogram = merged(results)
        completed = sum(r["completed"] for r in results)
        seconds = sum(r["seconds"] for r in results)
        rcodes: dict[str, int] = {}
        for result in results:
            for rcode, count in result["rcodes"].items():
                rcodes[rcode] = rcodes.get(rcode, 0) + count
        figures[name] = {
            "qps": completed / seconds,
            "p99_ms": percentile(histogram, 0.99),
            "p50_ms": percentile(histogram, 0.50),
            "lost": sum(r["lost"] for r in results),
            "rcodes": rcodes,
            "cpu_s": cpu[name],
            "seconds": seconds,
        }
    params = {
        "services": len(SERVICES),
        "instances": INSTANCES,
        "queries": "A+SRV",
        "transport": "udp",
        "rounds": args.rounds,
        "load": "saturated",
    }
    peer = figures["dnsmasq"]
    for name in ("dnsmasq", "moorage"):
        fig = figures[name]
        common = {
            "seconds": round(fig["seconds"], 1),
            "lost": fig["lost"],
            "rcodes": fig["rcodes"],
            "server_cpu_s": round(fig["cpu_s"], 1),
        }
        qps_extra: dict[str, Any] = dict(common)
        p99_extra: dict[str, Any] = {"p50_ms": fig["p50_ms"]}
        if name == "moorage":
            qps_extra |= {
                "peer": {"name": "dnsmasq", "value": round(peer["qps"], 1)},
                "ratio": round(fig["qps"] / peer["qps"], 3),
                "goal": {"ratio": GOALS["ratio"]},
            }
            p99_extra |= {
                "peer": {"name": "dnsmasq", "value": peer["p99_ms"]},
                "ratio": round(fig["p99_ms"] / peer["p99_ms"], 2) if peer["p99_ms"] else None,
                "goal": {"max": GOALS["p99_ms"]},
            }
        emit("dns_qps", fig["qps"], "qps", {**params, "server": name}, **qps_extra)
        emit("dns_p99_ms", fig["p99_ms"], "ms", {**params, "server": name}, **p99_extra)
    if not args.paced_qps:
        return
    # The same queries at a fixed offered load, below both servers' capacity: latency that is
    # the server's own, not the queue dnsperf's 100 queries in flight build at saturation.
    at = {name: merged(results) for name, results in paced.items()}
    for name in ("dnsmasq", "moorage"):
        histogram = at[name]
        extra: dict[str, Any] = {
            "p50_ms": percentile(histogram, 0.50),
            "qps": round(
                sum(r["completed"] for r in paced[name]) / sum(r["seconds"] for r in paced[name]),
                1,
            ),
            "lost": sum(r["lost"] for r in paced[name]),
        }
        if name == "moorage":
            theirs = percentile(at["dnsmasq"], 0.99)
            extra |= {
                "peer": {"name": "dnsmasq", "value": theirs},
                "ratio": round(percentile(histogram, 0.99) / theirs, 2) if theirs else None,
                "goal": {"max": GOALS["p99_ms"]},
            }
        load = {"load": f"{args.paced_qps} qps"}
        line = {**params, **load, "server": name}
        emit("dns_p99_ms", percentile(histogram, 0.99), "ms", line, **extra)


if __name__ == "__main__":
    main()
