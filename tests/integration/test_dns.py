"""The DNS interface of a real `moorage server`, asked with the real `dig`: instances follow their
health checks, truncation over UDP and the whole answer over TCP, NXDOMAIN / no data / flags,
forwarding to a recursor, and a fuzz run that must not hurt the server."""

from __future__ import annotations

import contextlib
import os
import random
import shutil
import socket
import struct
import subprocess
import sys
import time
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path

import dns.exception
import dns.message
import dns.query
import dns.rcode
import psutil
import pytest

from .cluster import AgentSpec, Cluster, free_port, http_spec, wait_for

pytestmark = [
    pytest.mark.integration,
    pytest.mark.skipif(shutil.which("dig") is None, reason="needs dig (Debian's dnsutils)"),
]

CHECK = "health: {http: /health, port: http, interval: 1s, timeout: 1s, retries: 1}"
N2 = "127.0.0.2"  # node n2 advertises a second loopback address: A records tell nodes apart


@dataclass
class Dig:
    status: str = ""
    flags: set[str] = field(default_factory=set)
    sections: dict[str, list[list[str]]] = field(default_factory=dict)
    size: int = 0
    output: str = ""

    def records(self, section: str = "ANSWER", rtype: str | None = None) -> list[list[str]]:
        return [r for r in self.sections.get(section, []) if rtype is None or r[3] == rtype]

    @property
    def srv(self) -> list[tuple[int, str]]:
        """(port, target) of each SRV record of the answer, sorted."""
        return sorted((int(r[6]), r[7]) for r in self.records(rtype="SRV"))

    @property
    def a(self) -> list[str]:
        return sorted(r[4] for r in self.records(rtype="A"))


def dig(port: int, *args: str, answered: bool = True) -> Dig:
    """`dig @127.0.0.1 -p PORT ARGS`, its header, flags and sections parsed; with `answered`
    (the default) a server that did not answer fails the test."""
    out = subprocess.run(
        ["dig", "@127.0.0.1", "-p", str(port), "+tries=1", "+time=3", *args],
        capture_output=True,
        text=True,
        timeout=20,
    ).stdout
    result = Dig(output=out)
    section = ""
    for line in out.splitlines():
        if line.startswith(";; ->>HEADER<<-"):
            result.status = line.split("status: ")[1].split(",")[0]
        elif line.startswith(";; flags:"):
            result.flags = set(line.split(";")[2].split(":")[1].split())
        elif line.startswith(";; MSG SIZE"):
            result.size = int(line.split()[-1])
        elif line.startswith(";; ") and line.endswith("SECTION:"):
            section = line[3:].split()[0]
            result.sections[section] = []
        elif not line.strip():
            section = ""
        elif section and section not in ("QUESTION", "OPT") and not line.startswith(";"):
            result.sections[section].append(line.split())
    assert result.status or not answered, out
    return result


def spec(name: str, count: int, node: str, tags: str, container: str = CHECK) -> str:
    extra = (
        f"discovery: {{name: web, tags: [{tags}]}}\n"
        f'placement: {{constraints: ["node.name == {node}"]}}\n'
        "deployment: {min_healthy_time: 1s}\n"
    )
    return http_spec(name, count=count, container=container, extra=extra)


@pytest.fixture(scope="module")
def two_nodes(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Cluster]:
    """A server and two agents: n1 at 127.0.0.1, n2 at 127.0.0.2."""
    agents = [
        AgentSpec("n1", {"zone": "a"}),
        AgentSpec("n2", {"zone": "b"}, args=["--advertise", N2]),
    ]
    with Cluster(tmp_path_factory.mktemp("dns"), agents=agents) as cluster:
        yield cluster


@pytest.fixture(scope="module")
def web(two_nodes: Cluster, tmp_path_factory: pytest.TempPathFactory) -> tuple[Cluster, Path]:
    """`web` = web-a (2 instances on n1, tag v1) + web-b (1 on n2, tag v2, whose /health fails
    while the returned flag file exists). Both deployments are over (a check failing during a
    deployment would roll it back; after, it only makes the instance critical)."""
    where = tmp_path_factory.mktemp("web")
    flag = where / "fail"
    cluster = two_nodes
    for name, body in (
        ("web-a", spec("web-a", 2, "n1", "v1")),
        ("web-b", spec("web-b", 1, "n2", "v2", f"{CHECK}\nenv: {{FAIL_FILE: {flag}}}")),
    ):
        (where / f"{name}.yaml").write_text(body)
        deployed = cluster.cli("deploy", "-f", str(where / f"{name}.yaml"), "--timeout", "60")
        assert "successful" in deployed.stdout, deployed.stdout
    return cluster, flag


def ports(cluster: Cluster, service: str) -> list[int]:
    return [t["ports"]["http"] for t in cluster.running(service)]


def test_srv_and_a_list_exactly_the_healthy_instances_and_follow_their_checks(
    web: tuple[Cluster, Path],
) -> None:
    cluster, flag = web
    port = cluster.dns_port
    on_n1 = [(p, "n1.node.moorage.") for p in ports(cluster, "web-a")]
    on_n2 = [(p, "n2.node.moorage.") for p in ports(cluster, "web-b")]
    everyone = sorted(on_n1 + on_n2)
    srv = dig(port, "web.service.moorage", "SRV")
    assert srv.status == "NOERROR" and srv.srv == everyone
    assert {"qr", "aa"} <= srv.flags and "ra" not in srv.flags
    assert sorted(r[4] for r in srv.records("ADDITIONAL", "A")) == ["127.0.0.1", N2]
    assert dig(port, "web.service.moorage", "A").a == ["127.0.0.1", N2]
    assert dig(port, "_web._tcp.service.moorage", "SRV").srv == everyone  # RFC 2782
    assert dig(port, "v1.web.service.moorage", "SRV").srv == sorted(on_n1)
    assert dig(port, "_web._v2.service.moorage", "SRV").srv == sorted(on_n2)
    assert dig(port, "n2.node.moorage", "A").a == [N2]

    flag.touch()  # web-b's check fails from its next run on (interval 1s)
    try:
        started = time.monotonic()
        wait_for(
            lambda: dig(port, "web.service.moorage", "SRV").srv == sorted(on_n1),
            10,
            0.1,
            "the critical instance gone from SRV",
        )
        gone = time.monotonic() - started
        assert dig(port, "web.service.moorage", "A").a == ["127.0.0.1"]
        assert dig(port, "v2.web.service.moorage", "A").status == "NXDOMAIN"
        assert gone < 3.0, f"left the answers {gone:.1f}s after its check started failing"
    finally:
        flag.unlink()
    started = time.monotonic()
    wait_for(
        lambda: dig(port, "web.service.moorage", "SRV").srv == everyone,
        10,
        0.1,
        "the instance back once passing",
    )
    back = time.monotonic() - started
    print(f"critical instance: out of DNS in {gone:.2f}s, back in {back:.2f}s", file=sys.stderr)
    assert dig(port, "web.service.moorage", "A").a == ["127.0.0.1", N2]
    assert back < 3.0, f"back in the answers {back:.1f}s after its check passed again"


def test_missing_names_empty_answers_and_header_flags(web: tuple[Cluster, Path]) -> None:
    cluster, _ = web
    port = cluster.dns_port
    missing = dig(port, "nope.service.moorage", "A")
    assert missing.status == "NXDOMAIN" and not missing.records()
    assert "aa" in missing.flags and "ra" not in missing.flags
    (soa,) = missing.records("AUTHORITY")
    assert soa[0] == "moorage." and soa[3] == "SOA" and soa[4] == "ns.moorage."
    for name, rtype in (("web.service.moorage", "AAAA"), ("web.service.moorage", "TXT")):
        empty = dig(port, name, rtype)
        assert empty.status == "NOERROR" and not empty.records(), empty.output
        assert [r[3] for r in empty.records("AUTHORITY")] == ["SOA"]
        assert "aa" in empty.flags
    assert dig(port, "WEB.Service.MOORAGE", "A").a == ["127.0.0.1", N2]  # any case
    refused = dig(port, "example.com", "A")
    assert refused.status == "REFUSED" and "aa" not in refused.flags
    assert dig(port, "n1.node.moorage", "AAAA").status == "NOERROR"
    assert dig(port, "n9.node.moorage", "A").status == "NXDOMAIN"
    tcp = dig(port, "+tcp", "web.service.moorage", "SRV")
    assert len(tcp.srv) == 3 and "aa" in tcp.flags


def test_two_hundred_instances_truncate_over_udp_and_come_whole_over_tcp(
    two_nodes: Cluster,
) -> None:
    """200 real (cheap) instances on two nodes: more SRV records than any UDP answer holds."""
    cluster = two_nodes
    body = """
service: many
count: 200
discovery: {}
placement: {strategy: spread}
containers:
  - name: app
    command: ["sleep", "3600"]
    cpu: 5
    memory: 8
    ports: [{name: p}]
    stop_timeout: 1s
"""
    cluster.deploy(body)
    try:
        tasks = cluster.wait_running("many", 200, timeout=120)
        expected = sorted((t["ports"]["p"], f"{t['node']}.node.moorage.") for t in tasks)
        port = cluster.dns_port
        for args, limit in ((["+noedns"], 512), ([], 1232), (["+bufsize=4096"], 4096)):
            udp = dig(port, "+ignore", *args, "many.service.moorage", "SRV")  # no TCP retry
            assert udp.status == "NOERROR" and "tc" in udp.flags, udp.output
            assert 0 < len(udp.srv) < 200 and udp.size <= limit
            assert set(udp.srv) <= set(expected)
        whole = dig(port, "+tcp", "many.service.moorage", "SRV")
        assert "tc" not in whole.flags and whole.srv == expected
        assert len(whole.records("ADDITIONAL", "A")) == 2
        retried = dig(port, "many.service.moorage", "SRV")  # dig retries over TCP on TC
        assert retried.srv == expected
    finally:
        cluster.cli("stop", "many")


def test_names_outside_our_domains_go_to_the_recursor(tmp_path: Path) -> None:
    dnsmasq = shutil.which("dnsmasq") or (
        "/usr/sbin/dnsmasq" if os.path.exists("/usr/sbin/dnsmasq") else None
    )
    if dnsmasq is None:
        pytest.skip("needs dnsmasq (Debian's dnsmasq-base) as the upstream resolver")
    upstream_port = free_port()
    upstream = subprocess.Popen(
        [
            dnsmasq,
            "--no-daemon",
            "--no-resolv",
            "--no-hosts",
            "--bind-interfaces",
            "--listen-address=127.0.0.1",
            f"--port={upstream_port}",
            "--host-record=example.test,10.9.8.7",
            f"--pid-file={tmp_path / 'dnsmasq.pid'}",
        ],
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
    )
    try:
        # dnsmasq binds its port a moment after it starts: until then dig gets no answer
        wait_for(
            lambda: dig(upstream_port, "example.test", answered=False).a == ["10.9.8.7"], 10, 0.1
        )
        args = [
            "--dns-recursor",
            f"127.0.0.1:{upstream_port}",
            "--dns-alt-domain",
            "consul",
            "--dns-ttl",
            "30",
        ]
        with Cluster(tmp_path / "c", server_args=args) as cluster:
            port = cluster.dns_port
            for extra in ([], ["+tcp"]):
                forwarded = dig(port, *extra, "example.test", "A")
                assert forwarded.a == ["10.9.8.7"] and "ra" in forwarded.flags
            node = dig(port, "n1.node.consul", "A")
            assert node.a == ["127.0.0.1"] and {"aa", "ra"} <= node.flags
            assert node.records()[0][1] == "30"  # the TTL
            assert dig(port, "n1.node.moorage", "A").a == ["127.0.0.1"]
    finally:
        upstream.terminate()
        upstream.wait(10)


# ---- fuzzing ---------------------------------------------------------------------------------
FUZZ_SECONDS = float(os.environ.get("MOORAGE_DNS_FUZZ_SECONDS", "60"))
NAMES = [
    "fz.service.moorage",
    "FZ.Service.Moorage",
    "v1.fz.service.moorage",
    "_fz._tcp.service.moorage",
    "n1.node.moorage",
    "nope.service.moorage",
    "moorage",
    "example.com",
]
TYPES = ["A", "AAAA", "SRV", "TXT", "ANY", "SOA", "MX"]


def valid_queries() -> list[bytes]:
    out = []
    for name in NAMES:
        for rtype in TYPES:
            for edns in (False, 0):
                out.append(dns.message.make_query(name, rtype, use_edns=edns).to_wire())
    return out


def mutate(rng: random.Random, seeds: list[bytes]) -> bytes:
    """One hostile packet: random bytes, or a valid query damaged in one of several ways."""
    base = bytearray(rng.choice(seeds))
    kind = rng.randrange(10)
    if kind == 0:
        return rng.randbytes(rng.randrange(0, 700))
    if kind == 1:  # bit flips
        for _ in range(rng.randrange(1, 8)):
            i = rng.randrange(len(base))
            base[i] ^= 1 << rng.randrange(8)
        return bytes(base)
    if kind == 2:  # cut short
        return bytes(base[: rng.randrange(len(base))])
    if kind == 3:  # trailing junk
        return bytes(base) + rng.randbytes(rng.randrange(1, 300))
    if kind == 4:  # huge label counts (over 255 bytes, or just under)
        labels = b"\x01a" * rng.choice([100, 126, 127, 128, 200, 1000])
        return bytes(base[:12]) + labels + b"\x00\x00\x01\x00\x01"
    if kind == 5:  # compression loops and forward pointers
        pointer = rng.choice([b"\xc0\x0c", b"\xc0\x0e", b"\x01a\xc0\x0c", b"\xc0\xff", b"\xff\xff"])
        return bytes(base[:12]) + pointer + b"\x00\x01\x00\x01"
    if kind == 6:  # lying counts
        struct.pack_into("!HHHH", base, 4, *(rng.choice([0, 1, 2, 65535]) for _ in range(4)))
        return bytes(base)
    if kind == 7:  # random type/class on a valid name (fills the answer cache)
        name = f"x{rng.randrange(10**9)}.service.moorage"
        wire = dns.message.make_query(name, "A").to_wire()
        return wire[:-4] + rng.randbytes(4)
    if kind == 8:  # EDNS with a bogus option length or payload
        wire = bytearray(dns.message.make_query("fz.service.moorage", "A", use_edns=0).to_wire())
        wire[-2:] = rng.randbytes(2)
        wire[-8:-6] = rng.randbytes(2)
        return bytes(wire) + rng.randbytes(rng.randrange(0, 8))
    base[2] = rng.randrange(256)  # any opcode and flags
    return bytes(base)


class Checker:
    """Asks valid questions between the hostile ones: each must be answered right, promptly."""

    def __init__(self, port: int, expected_ports: list[int]) -> None:
        self.port = port
        self.expected = sorted(expected_ports)
        self.asked = 0
        self.slowest = 0.0

    def check(self, tcp: bool) -> None:
        q = dns.message.make_query("fz.service.moorage", "SRV")
        started = time.monotonic()
        for attempt in range(3):  # UDP may drop under the flood; three strikes fail
            try:
                if tcp:
                    msg = dns.query.tcp(q, "127.0.0.1", timeout=2, port=self.port)
                else:
                    msg = dns.query.udp(q, "127.0.0.1", timeout=1, port=self.port)
                break
            except (dns.exception.Timeout, OSError):
                if attempt == 2:
                    raise
        assert msg.rcode() == dns.rcode.NOERROR
        got = sorted(rdata.port for rrset in msg.answer for rdata in rrset)
        assert got == self.expected
        self.asked += 1
        self.slowest = max(self.slowest, time.monotonic() - started)


def fuzz(port: int, seconds: float, checker: Checker, seed: int) -> dict[str, int]:
    rng = random.Random(seed)
    seeds = valid_queries()
    sent = {"udp": 0, "tcp": 0, "tcp_conns": 0}
    udp = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
    udp.setblocking(False)
    idle: list[socket.socket] = []  # connections left open, some mid-message
    deadline = time.monotonic() + seconds
    next_check = 0.0
    try:
        while time.monotonic() < deadline:
            for _ in range(200):
                with contextlib.suppress(BlockingIOError, ConnectionRefusedError):
                    udp.sendto(mutate(rng, seeds), ("127.0.0.1", port))
                    sent["udp"] += 1
            with contextlib.suppress(BlockingIOError, ConnectionRefusedError, InterruptedError):
                while udp.recv(65535):
                    pass
            if rng.random() < 0.3:
                conn = socket.create_connection(("127.0.0.1", port), timeout=2)
                sent["tcp_conns"] += 1
                with contextlib.suppress(OSError):
                    for _ in range(rng.randrange(1, 5)):
                        packet = mutate(rng, seeds)
                        size = rng.choice([len(packet), len(packet), rng.randrange(65536)])
                        conn.sendall(struct.pack("!H", size) + packet)
                        sent["tcp"] += 1
                if rng.random() < 0.5:
                    conn.setblocking(False)
                    idle.append(conn)
                    if len(idle) > 40:
                        idle.pop(0).close()
                else:
                    conn.close()
            now = time.monotonic()
            if now >= next_check:
                checker.check(tcp=rng.random() < 0.3)
                next_check = now + 0.25
    finally:
        udp.close()
        for conn in idle:
            conn.close()
    return sent


@pytest.mark.fuzz
def test_fuzzed_udp_and_tcp_packets_never_hurt_the_server(tmp_path: Path) -> None:
    seed = int(os.environ.get("MOORAGE_DNS_FUZZ_SEED", random.randrange(2**32)))
    print(f"fuzz seed {seed} (MOORAGE_DNS_FUZZ_SEED to replay)", file=sys.stderr)
    with Cluster(tmp_path) as cluster:
        cluster.deploy(
            "service: fz\ncount: 3\ndiscovery: {tags: [v1]}\ncontainers:\n"
            '  - {name: app, command: ["sleep", "3600"], cpu: 5, memory: 8, '
            "ports: [{name: p}], stop_timeout: 1s}\n"
        )
        tasks = cluster.wait_running("fz", 3)
        checker = Checker(cluster.dns_port, [t["ports"]["p"] for t in tasks])
        wait_for(lambda: dig(cluster.dns_port, "fz.service.moorage", "SRV").srv, 10, 0.2)
        server = psutil.Process(cluster.server.pid)
        fuzz(cluster.dns_port, min(5.0, FUZZ_SECONDS / 4), checker, seed)  # warm up the caches
        before = server.memory_info().rss
        started = time.monotonic()
        sent = fuzz(cluster.dns_port, FUZZ_SECONDS, checker, seed + 1)
        took = time.monotonic() - started
        after = server.memory_info().rss
        checker.check(tcp=False)
        checker.check(tcp=True)
        assert cluster.server.running, cluster.server.output()
        log = cluster.server.output()
        assert "failed to answer" not in log and "Traceback" not in log, log[-3000:]
        growth = (after - before) / 2**20
        print(
            f"fuzz: {sent} in {took:.0f}s, {checker.asked} valid queries answered "
            f"(slowest {checker.slowest * 1000:.0f} ms), RSS {before / 2**20:.1f} → "
            f"{after / 2**20:.1f} MiB",
            file=sys.stderr,
        )
        assert growth < 20, f"RSS grew by {growth:.1f} MiB"
        assert checker.asked >= FUZZ_SECONDS * 2  # a valid answer at least every 0.5 s
        assert checker.slowest < 2.0
