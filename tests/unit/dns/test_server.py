"""The listener over real sockets (in-process): UDP, TCP framing and timeouts, malformed packets,
SERVFAIL on a failure, and forwarding to a recursor."""

from __future__ import annotations

import asyncio
import socket
import struct
from collections.abc import AsyncIterator
from typing import cast

import dns.asyncquery
import dns.flags
import dns.message
import dns.rcode
import dns.rrset
import pytest

from moorage.dns import DnsConfig, DnsServer
from moorage.dns import server as dns_server

from .world import World, header, query, records

WEB_PORTS = {20000, 20001, 20002, 20003, 20004}


@pytest.fixture
async def running(world: World) -> AsyncIterator[DnsServer]:
    await world.web()
    server = DnsServer(world.cache, DnsConfig(addr=("127.0.0.1", 0)))
    await server.start()
    try:
        yield server
    finally:
        await server.close()


async def udp(port: int, data: bytes, timeout: float = 1.0) -> bytes | None:
    """Send one datagram; the reply, or None when none came within `timeout`."""
    loop = asyncio.get_running_loop()
    with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as sock:
        sock.setblocking(False)
        await loop.sock_sendto(sock, data, ("127.0.0.1", port))
        try:
            async with asyncio.timeout(timeout):
                reply, _ = await loop.sock_recvfrom(sock, 65535)
                return reply
        except TimeoutError:
            return None


async def test_udp_and_tcp_answer_from_the_catalog(running: DnsServer) -> None:
    q = dns.message.make_query("web.service.moorage", "SRV")
    over_udp = await dns.asyncquery.udp(q, "127.0.0.1", 2, running.port)
    over_tcp = await dns.asyncquery.tcp(q, "127.0.0.1", 2, running.port)
    for msg in (over_udp, over_tcp):
        assert {int(r.split()[3]) for r in records(msg)} == WEB_PORTS
        assert msg.flags & dns.flags.AA


async def test_tcp_takes_several_queries_per_connection_in_order(running: DnsServer) -> None:
    reader, writer = await asyncio.open_connection("127.0.0.1", running.port)
    names = ["web.service.moorage", "n1.node.moorage", "nope.service.moorage"]
    wires = [query(name, qid=i + 1) for i, name in enumerate(names)]
    writer.write(b"".join(struct.pack("!H", len(w)) + w for w in wires))  # pipelined
    await writer.drain()
    rcodes = []
    for i in range(3):
        size = struct.unpack("!H", await reader.readexactly(2))[0]
        msg = dns.message.from_wire(await reader.readexactly(size))
        assert msg.id == i + 1
        rcodes.append(msg.rcode())
    assert rcodes == [dns.rcode.NOERROR, dns.rcode.NOERROR, dns.rcode.NXDOMAIN]
    writer.close()
    await writer.wait_closed()


async def test_tcp_closes_idle_stalled_and_oversized_connections(
    running: DnsServer, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(dns_server, "TCP_IDLE", 0.3)
    monkeypatch.setattr(dns_server, "TCP_READ", 0.3)
    cases = [b"", b"\x00\x40abc", struct.pack("!H", 65535) + b"x" * 100]
    for sent in cases:
        reader, writer = await asyncio.open_connection("127.0.0.1", running.port)
        writer.write(sent)
        await writer.drain()
        async with asyncio.timeout(3):
            assert await reader.read() == b""  # closed by the server, without an answer
        writer.close()
    assert not running._connections
    q = dns.message.make_query("web.service.moorage", "A")
    msg = await dns.asyncquery.tcp(q, "127.0.0.1", 2, running.port)
    assert msg.rcode() == dns.rcode.NOERROR


async def test_udp_answers_are_trimmed_and_tcp_gives_the_whole(world: World) -> None:
    for n in range(1, 5):
        await world.node(f"n{n}", f"10.0.1.{n}")
    await world.service("big")
    for i in range(200):
        await world.task(f"big-{i}", "big", f"n{i % 4 + 1}", 30000 + i)
    server = DnsServer(world.cache, DnsConfig(addr=("127.0.0.1", 0)))
    await server.start()
    try:
        out = await udp(server.port, query("big.service.moorage", "SRV"))
        assert out is not None and len(out) <= 512 and header(out)["tc"] == 1
        q = dns.message.make_query("big.service.moorage", "SRV")
        full = await dns.asyncquery.tcp(q, "127.0.0.1", 2, server.port)
        assert len(records(full)) == 200 and not full.flags & dns.flags.TC
    finally:
        await server.close()


def raw(qid: int, flags: int, counts: tuple[int, int, int, int], body: bytes) -> bytes:
    return struct.pack("!HHHHHH", qid, flags, *counts) + body


QUESTION = b"\x03web\x07service\x07moorage\x00\x00\x01\x00\x01"


@pytest.mark.parametrize(
    ("packet", "rcode"),
    [
        (raw(1, 0x0100, (1, 0, 0, 0), b""), dns.rcode.FORMERR),  # no question
        (raw(1, 0x0100, (1, 0, 0, 0), QUESTION[:-3]), dns.rcode.FORMERR),  # cut short
        (raw(1, 0x0100, (2, 0, 0, 0), QUESTION * 2), dns.rcode.FORMERR),  # two questions
        (raw(1, 0x0100, (1, 0, 0, 0), b"\xc0\x0c\x00\x01\x00\x01"), dns.rcode.FORMERR),  # loop
        (raw(1, 0x0100, (1, 0, 0, 0), b"\x3f" + b"a" * 63 * 5), dns.rcode.FORMERR),  # too long
        (raw(1, 0x0100, (1, 0, 0, 0), QUESTION + b"junk"), dns.rcode.FORMERR),  # trailing
        (raw(1, 0x2000, (1, 0, 0, 0), QUESTION), dns.rcode.NOTIMP),  # opcode NOTIFY
        (raw(1, 0x0100, (0, 0, 0, 0), b""), dns.rcode.FORMERR),
    ],
)
async def test_malformed_queries_get_formerr_or_notimp_with_their_id(
    running: DnsServer, packet: bytes, rcode: int
) -> None:
    out = await udp(running.port, packet)
    assert out is not None
    head = header(out)
    assert (head["id"], head["qr"], head["rcode"], head["an"]) == (1, 1, rcode, 0)


@pytest.mark.parametrize(
    "packet",
    [b"", b"\x00", b"\x12\x34\x01\x00\x00", raw(9, 0x8180, (1, 0, 0, 0), QUESTION)],
    ids=["empty", "one-byte", "no-header", "a-response"],
)
async def test_packets_without_a_header_or_that_are_answers_are_dropped(
    running: DnsServer, packet: bytes
) -> None:
    assert await udp(running.port, packet, timeout=0.3) is None
    q = dns.message.make_query("web.service.moorage", "A")
    assert (await dns.asyncquery.udp(q, "127.0.0.1", 2, running.port)).answer  # still serving


async def test_edns_versions_past_zero_get_badvers(running: DnsServer) -> None:
    q = dns.message.make_query("web.service.moorage", "A", use_edns=1)
    msg = await dns.asyncquery.udp(q, "127.0.0.1", 2, running.port)
    assert msg.rcode() == dns.rcode.BADVERS and msg.edns == 0


async def test_a_failure_answers_servfail_and_serving_goes_on(
    running: DnsServer, monkeypatch: pytest.MonkeyPatch
) -> None:
    def broken(key: bytes) -> None:
        raise RuntimeError("bug")

    monkeypatch.setattr(running.resolver, "resolve", broken)
    for tcp in (False, True):
        q = dns.message.make_query("other.service.moorage", "A")
        send = dns.asyncquery.tcp if tcp else dns.asyncquery.udp
        msg = await send(q, "127.0.0.1", 2, running.port)
        assert msg.rcode() == dns.rcode.SERVFAIL
    assert running.stats["errors"] == 2
    monkeypatch.undo()
    msg = await dns.asyncquery.udp(q, "127.0.0.1", 2, running.port)
    assert msg.rcode() == dns.rcode.NXDOMAIN


class Upstream(asyncio.DatagramProtocol):
    """A recursor stand-in: example.test A 10.9.9.9 over UDP and TCP, REFUSED otherwise."""

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        self.transport = cast(asyncio.DatagramTransport, transport)

    @staticmethod
    def respond(data: bytes) -> bytes:
        q = dns.message.from_wire(data)
        r = dns.message.make_response(q)
        r.flags |= dns.flags.RA
        if q.question[0].name.to_text().lower() == "example.test.":
            r.answer.append(dns.rrset.from_text("example.test.", 60, "IN", "A", "10.9.9.9"))
        else:
            r.set_rcode(dns.rcode.REFUSED)
        return r.to_wire()

    def datagram_received(self, data: bytes, addr: tuple[str, int]) -> None:
        self.transport.sendto(self.respond(data), addr)

    async def tcp(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        size = struct.unpack("!H", await reader.readexactly(2))[0]
        out = self.respond(await reader.readexactly(size))
        writer.write(struct.pack("!H", len(out)) + out)
        await writer.drain()
        writer.close()


async def test_names_outside_our_domains_go_to_the_recursors(
    world: World, monkeypatch: pytest.MonkeyPatch
) -> None:
    await world.web()
    loop = asyncio.get_running_loop()
    upstream = Upstream()
    transport, _ = await loop.create_datagram_endpoint(
        lambda: upstream, local_addr=("127.0.0.1", 0)
    )
    port = transport.get_extra_info("sockname")[1]
    tcp = await asyncio.start_server(upstream.tcp, "127.0.0.1", port)
    with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as dead:
        dead.bind(("127.0.0.1", 0))  # bound, never answers: the first recursor times out
        dead_port = dead.getsockname()[1]
        monkeypatch.setattr(dns_server, "FORWARD_TIMEOUT", 0.3)
        config = DnsConfig(
            addr=("127.0.0.1", 0), recursors=(("127.0.0.1", dead_port), ("127.0.0.1", port))
        )
        server = DnsServer(world.cache, config)
        await server.start()
        try:
            q = dns.message.make_query("example.test", "A")
            for send in (dns.asyncquery.udp, dns.asyncquery.tcp):
                msg = await send(q, "127.0.0.1", 3, server.port)
                assert records(msg) == ["A 10.9.9.9"] and msg.flags & dns.flags.RA
            ours = await dns.asyncquery.udp(
                dns.message.make_query("n1.node.moorage", "A"), "127.0.0.1", 2, server.port
            )
            assert ours.flags & dns.flags.RA and ours.flags & dns.flags.AA  # RA: recursors set
            assert server.stats["forwarded"] == 2
        finally:
            await server.close()
            transport.close()
            tcp.close()
