"""State for the DNS tests (nodes, services, tasks written as the server and agents write them)
and helpers that ask the DNS code questions without sockets."""

from __future__ import annotations

import struct

import dns.edns
import dns.message
import dns.rdatatype

from moorage.dns import DnsConfig, DnsServer
from moorage.model import CheckState, Discovery, Health, Node, Service, Task, TaskStatus
from moorage.model.node import NodeStatus
from moorage.state import StateCache, encode, kinds
from moorage.testing.memstore import MemoryStore


class World:
    """Writes state through the store (as the server would) and waits for the cache."""

    def __init__(self, store: MemoryStore, cache: StateCache) -> None:
        self.store = store
        self.cache = cache

    async def put(self, key: str, value: bytes) -> None:
        revision = await self.store.put(key, value)
        await self.cache.wait_revision(revision, timeout=5)

    async def node(self, name: str, address: str, status: NodeStatus = NodeStatus.READY) -> None:
        node = Node(name=name, address=address, cpu=4096, memory=8192, status=status)
        await self.put(kinds.NODE.key(name), encode(node))

    async def service(
        self, name: str, tags: list[str] | None = None, discovery_name: str | None = None
    ) -> None:
        discovery = Discovery(name=discovery_name, tags=tags or [], port="http")
        service = Service(name=name, family=name, revision=1, count=1, discovery=discovery)
        await self.put(kinds.SERVICE.key(name), encode(service))

    async def task(
        self,
        task_id: str,
        service: str,
        node: str,
        port: int,
        health: Health | None = Health.PASSING,
        status: TaskStatus = TaskStatus.RUNNING,
    ) -> None:
        checks = [] if health is None else [CheckState(container="app", kind="http", status=health)]
        task = Task(
            id=task_id,
            service=service,
            family=service,
            revision=1,
            node=node,
            status=status,
            ports={"http": port},
            checks=checks,
            health=health,
        )
        await self.put(kinds.TASK.key(task_id), encode(task))

    async def web(self, count: int = 5, nodes: int = 3) -> None:
        """`web` (tag v1): `count` passing instances on n1..n<nodes> (10.0.0.<i>), port 20000+i."""
        for i in range(1, nodes + 1):
            await self.node(f"n{i}", f"10.0.0.{i}")
        await self.service("web", tags=["v1", "Primary"])
        for i in range(count):
            await self.task(f"web-{i}", "web", f"n{i % nodes + 1}", 20000 + i)


def query(
    name: str,
    rdtype: str = "A",
    *,
    payload: int | None = None,
    rd: bool = True,
    qid: int = 4242,
) -> bytes:
    """A query's wire form; EDNS 0 with `payload` when given."""
    msg = dns.message.make_query(
        name, rdtype, use_edns=0 if payload else False, payload=payload or 1232
    )
    msg.id = qid
    if not rd:
        msg.flags &= ~dns.flags.RD
    return msg.to_wire()


def answer(server: DnsServer, wire: bytes, tcp: bool = False) -> bytes | None:
    """What the server sends back for one datagram (or TCP message), without sockets."""
    out = server.fast(wire, tcp) or server.slow(wire, tcp)
    assert not isinstance(out, dns.message.Message), "would be forwarded"
    return out


def ask(
    server: DnsServer,
    name: str,
    rdtype: str = "A",
    *,
    payload: int | None = None,
    tcp: bool = False,
) -> dns.message.Message:
    out = answer(server, query(name, rdtype, payload=payload), tcp)
    assert out is not None
    return dns.message.from_wire(out)


def server_for(world: World, **options: object) -> DnsServer:
    return DnsServer(world.cache, DnsConfig(addr=("127.0.0.1", 0), **options))  # type: ignore[arg-type]


def records(msg: dns.message.Message, section: str = "answer") -> list[str]:
    """`TYPE rdata` per record of a section, sorted."""
    out = []
    for rrset in getattr(msg, section):
        for rdata in rrset:
            out.append(f"{dns.rdatatype.to_text(rrset.rdtype)} {rdata.to_text()}")
    return sorted(out)


def header(wire: bytes) -> dict[str, int]:
    """The header's fields (flags as bits), and the message size."""
    qid, flags, qd, an, ns, ar = struct.unpack("!HHHHHH", wire[:12])
    return {
        "id": qid,
        "qr": flags >> 15,
        "opcode": (flags >> 11) & 0xF,
        "aa": (flags >> 10) & 1,
        "tc": (flags >> 9) & 1,
        "rd": (flags >> 8) & 1,
        "ra": (flags >> 7) & 1,
        "rcode": flags & 0xF,
        "qd": qd,
        "an": an,
        "ns": ns,
        "ar": ar,
        "size": len(wire),
    }
