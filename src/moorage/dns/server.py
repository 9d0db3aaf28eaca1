"""The DNS listener: UDP and TCP on one address, answering from the catalog in memory.

    UDP socket ──(readable: drain up to 64 datagrams)──▶ inlined plain case ──▶ sendto
                                                           │ anything else
    TCP conn ──(2-byte length, timeouts, size cap)──▶  fast: one question, EDNS 0, any case
                                                           │ anything else
                                                       slow: framing checked by hand ──▶ FORMERR,
                                                           │  NOTIMP, BADVERS, or the answer
                                                           └──▶ recursors (outside our domains)

Every path ends in a pre-rendered `Answer` whose bytes only need the query's id (and RD, EDNS)
patched in. dnspython is used only to relay a query to a recursor. UDP is read with
`loop.add_reader` and drained in batches: asyncio's datagram transport reads one datagram per
event-loop turn, about five times slower under load (see docs/dns.md).
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import socket
import struct
import time
from typing import Any

import dns.asyncquery
import dns.exception
import dns.message
import dns.rcode
import dns.rdatatype

from moorage.model import Unavailable
from moorage.state import StateCache

from . import wire
from .answers import AnswerCache, Resolver
from .config import DnsConfig
from .wire import HEADER, MAX_TCP, MAX_UDP, QR, RA, TC

log = logging.getLogger(__name__)

UDP_BATCH = 64  # datagrams handled per readable event before yielding to the event loop
UDP_RECV = 1232  # the largest UDP query read; a longer one is cut, then fails to parse
TCP_IDLE = 10.0  # seconds a TCP connection may wait for its next query
TCP_READ = 5.0  # seconds to receive the rest of a query once its length arrived
TCP_WRITE = 10.0  # seconds for the client to take an answer
TCP_MAX_QUERY = 16 * 1024  # a longer TCP message closes the connection
TCP_MAX_CONNECTIONS = 512
MAX_FORWARDS = 512  # forwarded queries in flight; more get SERVFAIL
FORWARD_TIMEOUT = 2.0  # per recursor
_TYPE_CLASS = struct.Struct("!HH")
_PLAIN_COUNTS = b"\x00\x01\x00\x00\x00\x00"  # QDCOUNT 1, ANCOUNT 0, NSCOUNT 0
_PLAIN_QUERY = _PLAIN_COUNTS + b"\x00\x00"  # ... and ARCOUNT 0: no EDNS
# Query types counted by name in `query_counts()`; any other is "other" (bounded labels).
_COUNTED_TYPES = frozenset((1, 2, 5, 6, 12, 15, 16, 28, 33, 35, 64, 65, 255))
_MAX_COUNT_KEYS = 1024


class DnsServer:
    """Serves `config.addr` over UDP and TCP until `close()`."""

    def __init__(self, cache: StateCache, config: DnsConfig) -> None:
        self.config = config
        self.state = cache
        self.resolver = Resolver(cache, config)
        self.answers = AnswerCache(self.resolver)
        self._entries = self.answers.entries
        self.ra = bool(config.recursors)
        self.port = config.addr[1]
        self.stats = {"tcp": 0, "slow": 0, "dropped": 0, "errors": 0, "forwarded": 0}
        # answers sent, by `rcode << 16 | qtype` (plain ints: one dict update per query)
        self.queries: dict[int, int] = {}
        self._udp: socket.socket | None = None
        self._tcp: asyncio.Server | None = None
        self._loop: asyncio.AbstractEventLoop | None = None
        self._forwards: set[asyncio.Task[None]] = set()
        self._connections: set[asyncio.Task[Any]] = set()
        self._last_error_log = 0.0

    # ---- lifecycle -------------------------------------------------------------------------
    async def start(self) -> None:
        host, port = self.config.addr
        loop = self._loop = asyncio.get_running_loop()
        try:
            infos = socket.getaddrinfo(host, port, type=socket.SOCK_DGRAM, flags=socket.AI_PASSIVE)
            family, _, _, _, sockaddr = infos[0]
            udp = socket.socket(family, socket.SOCK_DGRAM)
            try:
                for option in (socket.SO_RCVBUF, socket.SO_SNDBUF):
                    with contextlib.suppress(OSError):
                        udp.setsockopt(socket.SOL_SOCKET, option, 4 << 20)
                udp.bind(sockaddr)
                udp.setblocking(False)
                self.port = int(udp.getsockname()[1])
                self._tcp = await asyncio.start_server(
                    self._connection, host, self.port, reuse_address=True, family=family
                )
            except BaseException:
                udp.close()
                raise
        except OSError as exc:
            raise Unavailable(
                f"server cannot listen for DNS on {host}:{port} (--dns-addr): {exc.strerror or exc}"
            ) from None
        self._udp = udp
        loop.add_reader(udp.fileno(), self._readable)
        log.info(
            "dns listening on %s:%d (udp, tcp) for %s%s",
            host,
            self.port,
            self.config.domain,
            f" and {self.config.alt_domain}" if self.config.alt_domain else "",
        )

    async def close(self) -> None:
        if self._udp is not None and self._loop is not None:
            self._loop.remove_reader(self._udp.fileno())
            self._udp.close()
            self._udp = None
        if self._tcp is not None:
            self._tcp.close()
            self._tcp = None
        pending = [*self._forwards, *self._connections]
        for task in pending:
            task.cancel()
        await asyncio.gather(*pending, return_exceptions=True)

    # ---- answering -------------------------------------------------------------------------
    def fast(self, data: bytes, tcp: bool = False) -> bytes | None:
        """The cached answer to a plain query (one question, optional EDNS 0), or None."""
        n = len(data)
        if n < 17 or data[2] & 0xF8 or data[4:10] != _PLAIN_COUNTS:  # QR or an opcode
            return None
        z = data.find(0, HEADER)  # end of the name (checked when the answer is rendered)
        if z < 0:
            return None
        end = z + 5
        ar = data[10:12]
        if ar == b"\x00\x00":
            if end != n:
                return None
            limit, variant = 512, data[2] & 1
        elif ar == b"\x00\x01":  # an OPT record: root name, type 41, payload, version 0
            if n < end + 11 or data[end] or data[end + 1] or data[end + 2] != 41 or data[end + 6]:
                return None
            if end + 11 + (data[end + 9] << 8 | data[end + 10]) != n:
                return None
            limit = data[end + 3] << 8 | data[end + 4]
            limit = 512 if limit < 512 else (MAX_UDP if limit > MAX_UDP else limit)
            variant = (data[2] & 1) | 2
        else:
            return None
        question = data[HEADER:end]
        entry = self._entries.get(question)
        if entry is None or entry.revision != self.state.revision:
            try:
                entry = self.answers.get(data[HEADER : z + 1].lower() + data[z + 1 : end])
            except ValueError:  # not a plain name after all: the slow path parses it
                return None
            if entry is None:
                return None
        return entry.reply(data[:2], variant, question, MAX_TCP if tcp else limit)

    def slow(self, data: bytes, tcp: bool = False) -> bytes | dns.message.Message | None:
        """Everything the fast path declined: check the framing, then answer, refuse, or hand
        back the query to forward (a Message). None: drop it (no header, or not a query)."""
        self.stats["slow"] += 1
        if len(data) < HEADER or data[2] & QR:
            return None  # never answer an answer (no loops between servers)
        query = wire.parse_query(data)
        if isinstance(query, int):
            return wire.error_reply(data, query, ra=self.ra)
        if query.edns > 0:
            return _badvers(data, query.question, self.ra)
        entry = self.answers.get(query.canonical)
        if entry is None:  # outside our domains, and recursors are configured: forward
            try:
                return dns.message.from_wire(data)
            except Exception:
                return wire.error_reply(data, wire.FORMERR, ra=self.ra)
        edns = query.edns == 0
        limit = MAX_TCP if tcp else (max(512, min(query.payload, MAX_UDP)) if edns else 512)
        return entry.reply(data[:2], (data[2] & 1) | (2 if edns else 0), query.question, limit)

    def _servfail(self, data: bytes) -> bytes | None:
        self.stats["errors"] += 1
        now = time.monotonic()
        if now - self._last_error_log > 1.0:  # a bug must not flood the log
            self._last_error_log = now
            log.exception("dns: failed to answer a query (SERVFAIL)")
        if len(data) < HEADER or data[2] & QR:
            return None
        return wire.error_reply(data, wire.SERVFAIL, ra=self.ra)

    # ---- counting --------------------------------------------------------------------------
    def _count(self, out: bytes) -> None:
        """Count an answer by its rcode and question type (every path but the inlined one)."""
        end = out.find(0, HEADER) + 2 if out[4:6] != b"\x00\x00" else 0
        qtype = out[end - 1] << 8 | out[end] if HEADER < end < len(out) else 0
        key = (out[3] & 0x0F) << 16 | qtype
        queries = self.queries
        queries[key] = queries.get(key, 0) + 1
        if len(queries) > _MAX_COUNT_KEYS:  # odd types: fold them into "other" (type 0)
            for odd in [k for k in queries if k & 0xFFFF not in _COUNTED_TYPES and k & 0xFFFF]:
                folded = odd & ~0xFFFF
                queries[folded] = queries.get(folded, 0) + queries.pop(odd)

    def query_counts(self) -> dict[tuple[str, str], int]:
        """Answers sent so far by (query type, rcode) name: what /metrics exposes."""
        counts: dict[tuple[str, str], int] = {}
        for key, n in list(self.queries.items()):
            qtype, rcode = key & 0xFFFF, key >> 16
            kind = (
                dns.rdatatype.to_text(dns.rdatatype.RdataType(qtype))
                if qtype in _COUNTED_TYPES
                else "other"
            )
            name = (kind, dns.rcode.to_text(dns.rcode.Rcode(rcode)))
            counts[name] = counts.get(name, 0) + n
        return counts

    # ---- UDP -------------------------------------------------------------------------------
    def _readable(self) -> None:
        """Drain the UDP socket (up to UDP_BATCH datagrams), answering each one.

        The plain case is inlined (a query without EDNS whose question, as sent, is cached
        and still valid): a dict lookup and one concatenation per query."""
        sock = self._udp
        if sock is None:
            return
        recv, send = sock.recvfrom, sock.sendto
        entries, revision = self._entries, self.state.revision  # the cache cannot move meanwhile
        queries = self.queries
        for _ in range(UDP_BATCH):
            try:
                data, addr = recv(UDP_RECV)
            except (BlockingIOError, InterruptedError):
                return
            except OSError:  # e.g. an ICMP error queued on the socket
                continue
            try:
                # the question as sent is the rest of the datagram, cached byte for byte
                entry = entries.get(data[HEADER:])
                if (
                    entry is not None
                    and entry.revision == revision
                    and data[2] < 8  # a query (QR 0), opcode QUERY
                    and data.startswith(_PLAIN_QUERY, 4)
                ):
                    cycle = entry.cycles[data[2] & 1]
                    if cycle is not None:
                        counted = entry.rcode << 16 | data[-4] << 8 | data[-3]  # ends with qtype
                        queries[counted] = queries.get(counted, 0) + 1
                        try:
                            send(data[:2] + next(cycle), addr)
                        except OSError:
                            self.stats["dropped"] += 1
                        continue
                out = self._answer_udp(data, addr)
            except Exception:
                out = self._servfail(data)
            if out is not None:
                self._count(out)
                try:
                    send(out, addr)
                except OSError:  # EAGAIN included: the client retries, as over any lossy path
                    self.stats["dropped"] += 1

    def _answer_udp(self, data: bytes, addr: Any) -> bytes | None:
        out = self.fast(data)
        if out is None:
            slow = self.slow(data)
            if isinstance(slow, dns.message.Message):
                self._forward_udp(slow, data, addr)
                return None
            out = slow
        return out

    def _forward_udp(self, msg: dns.message.Message, data: bytes, addr: Any) -> None:
        assert self._loop is not None
        if len(self._forwards) >= MAX_FORWARDS:
            self._send(wire.error_reply(data, wire.SERVFAIL, ra=self.ra), addr)
            return
        task = self._loop.create_task(self._relay_udp(msg, data, addr))
        self._forwards.add(task)
        task.add_done_callback(self._forwards.discard)

    async def _relay_udp(self, msg: dns.message.Message, data: bytes, addr: Any) -> None:
        out: bytes | None
        try:
            limit = max(512, min(msg.payload, MAX_UDP)) if msg.edns >= 0 else 512
            out = await self._forward(msg, data, tcp=False, limit=limit)
        except Exception:
            out = self._servfail(data)
        if out is not None:
            self._send(out, addr)

    def _send(self, out: bytes, addr: Any) -> None:
        if self._udp is None:
            return
        self._count(out)
        try:
            self._udp.sendto(out, addr)
        except OSError:
            self.stats["dropped"] += 1

    # ---- TCP -------------------------------------------------------------------------------
    async def _connection(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        task = asyncio.current_task()
        if task is None or len(self._connections) >= TCP_MAX_CONNECTIONS:
            writer.close()
            return
        self._connections.add(task)
        try:
            await self._queries(reader, writer)
        except (ConnectionError, asyncio.IncompleteReadError, TimeoutError):
            pass
        except Exception:
            self._servfail(b"")
        finally:
            self._connections.discard(task)
            writer.close()
            with contextlib.suppress(Exception):
                async with asyncio.timeout(1.0):
                    await writer.wait_closed()

    async def _queries(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        """Length-prefixed queries, answered in order, until the client goes quiet or away."""
        while True:
            async with asyncio.timeout(TCP_IDLE):
                head = await reader.readexactly(2)
            size = int.from_bytes(head, "big")
            if size > TCP_MAX_QUERY:
                return  # no query is that long: not a DNS client
            async with asyncio.timeout(TCP_READ):
                data = await reader.readexactly(size)
            self.stats["tcp"] += 1
            try:
                out: bytes | dns.message.Message | None = self.fast(data, tcp=True)
                if out is None:
                    out = self.slow(data, tcp=True)
                if isinstance(out, dns.message.Message):
                    out = await self._forward(out, data, tcp=True, limit=MAX_TCP)
            except Exception:
                out = self._servfail(data)
            if out is None:
                continue
            self._count(out)
            writer.write(len(out).to_bytes(2, "big") + out)
            async with asyncio.timeout(TCP_WRITE):
                await writer.drain()

    # ---- forwarding ------------------------------------------------------------------------
    async def _forward(
        self, msg: dns.message.Message, data: bytes, *, tcp: bool, limit: int
    ) -> bytes:
        """The first recursor's answer (trimmed to `limit` with TC over UDP), else SERVFAIL."""
        self.stats["forwarded"] += 1
        for host, port in self.config.recursors:
            try:
                if tcp:
                    response = await dns.asyncquery.tcp(msg, host, FORWARD_TIMEOUT, port)
                else:
                    response = await dns.asyncquery.udp(
                        msg, host, FORWARD_TIMEOUT, port, ignore_unexpected=True
                    )
                out = response.to_wire()
            except (dns.exception.DNSException, OSError, EOFError, ValueError) as exc:
                log.debug("dns: recursor %s:%d failed: %s", host, port, exc)
                continue
            if len(out) > limit:  # keep the header and the question, set TC: retry over TCP
                q = msg.question[0]
                name = q.name.to_wire()
                assert name is not None
                question = name + _TYPE_CLASS.pack(q.rdtype, q.rdclass)
                head = bytes((out[2] | TC, out[3])) + b"\x00\x01\x00\x00\x00\x00\x00\x00"
                out = out[:2] + head + question
            return out
        return wire.error_reply(data, wire.SERVFAIL, ra=True)


def _badvers(data: bytes, question: bytes, ra: bool) -> bytes:
    """EDNS version > 0: BADVERS (extended rcode 16: 1 in the OPT TTL's top byte)."""
    flags2 = QR | (data[2] & 0x79)
    flags3 = RA if ra else 0
    opt = b"\x00" + struct.pack("!HHIH", wire.OPT, wire.EDNS_PAYLOAD, 1 << 24, 0)
    return data[:2] + bytes((flags2, flags3)) + struct.pack("!HHHH", 1, 0, 0, 1) + question + opt
