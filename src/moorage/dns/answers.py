"""From a question to a pre-rendered answer, over the catalog in memory.

    <svc>.service.<domain>            A / AAAA of its serving instances, SRV (port, node target)
    <tag>.<svc>.service.<domain>      the same, instances carrying the tag
    _<svc>._tcp.service.<domain>      RFC 2782 form (`_<svc>._<tag>` filters on a tag)
    <node>.node.<domain>              A / AAAA of the node's address
    <hex>.addr.<domain>               A / AAAA of an address (SRV targets of registrations)
    <domain>                          SOA

An `Answer` is rendered once per (name, type, class) and re-used for every query asking it: it
stays valid while the catalog index of the name (`Catalog.index`) does not move. Records of a
multi-record answer rotate from one query to the next (each rotation is rendered once).
"""

from __future__ import annotations

import itertools
import struct
from collections.abc import Iterable, Iterator, Sequence

from moorage.model import Health
from moorage.model.acl import Level, decide
from moorage.model.catalog import Instance
from moorage.state import StateCache, Topic
from moorage.state.catalog import Catalog

from . import wire
from .config import DnsConfig
from .wire import AA, HEADER, OPT_RR, QR, RA, RD, TC

PRERENDER = 16  # rotations of answers up to this many records are rendered once, larger on demand
MAX_ENTRIES = 4096  # answers kept; the whole cache is dropped when it grows past this
_TYPE_CLASS = struct.Struct("!HH")


class Answer:
    """The rendered sections of one answer; `reply` turns it into a message for one query.

    `cycles[variant]` serves the hot path: the whole message but its 2-byte id, for each
    rotation of the records in turn, when the query's question is byte for byte `key` (the
    canonical one) and the message fits in 512 bytes. Variant bit 0 is the query's RD flag,
    bit 1 says the query had EDNS (an OPT record closes the answer)."""

    __slots__ = (
        "_bodies",
        "_flags2",
        "_flags3",
        "_tail",
        "additional",
        "answers",
        "authority",
        "cycles",
        "heads",
        "index",
        "key",
        "rcode",
        "revision",
        "rotate",
        "size",
        "topics",
        "turn",
    )

    def __init__(
        self,
        rcode: int,
        answers: Sequence[bytes] = (),
        authority: Sequence[bytes] = (),
        additional: Sequence[bytes] = (),
        *,
        aa: bool = True,
        ra: bool = False,
        rotate: bool = True,
        topics: Sequence[str] = (),
        index: int = 0,
        revision: int = 0,
    ) -> None:
        self.rcode = rcode
        self.answers = list(answers)
        self.authority = list(authority)
        self.additional = list(additional)
        self.rotate = rotate and len(self.answers) > 1
        self.topics = tuple(topics)  # what the answer depends on; () = never changes
        self.index = index  # max index of those topics when rendered
        self.revision = revision  # the cache revision it was last known valid at
        self.key = b""  # the canonical question (set by the cache): enables `cycles`
        self.turn = 0
        self._flags2 = QR | (AA if aa else 0)
        self._flags3 = (RA if ra else 0) | (rcode & 0x0F)
        self._tail = b"".join(self.authority) + b"".join(self.additional)
        self.size = sum(len(r) for r in self.answers) + len(self._tail)
        an, ns, ar = len(self.answers), len(self.authority), len(self.additional)
        self.heads = tuple(
            wire.header_tail(self._flags2 | (v & RD), self._flags3, an, ns, ar + (v >> 1))
            for v in range(4)
        )
        self._bodies: list[bytes | None] | None = (
            [None] * an if self.rotate and an <= PRERENDER else None
        )
        if not self.rotate:
            self._bodies = [b"".join(self.answers) + self._tail]
        self.cycles: list[Iterator[bytes] | None] = [None, None, None, None]

    def _rotated(self, k: int) -> list[bytes]:
        return self.answers[k:] + self.answers[:k] if k else self.answers

    def body(self, k: int) -> bytes:
        bodies = self._bodies
        if bodies is None:
            return b"".join(self._rotated(k)) + self._tail
        body = bodies[k]
        if body is None:
            body = bodies[k] = b"".join(self._rotated(k)) + self._tail
        return body

    def reply(self, qid: bytes, variant: int, question: bytes, limit: int) -> bytes:
        """The whole message for a query: its id, `variant`, its question as sent (the
        records point at it), within `limit` bytes (trimmed to whole records, with TC)."""
        cycle = self.cycles[variant]
        if cycle is not None and question == self.key:
            return qid + next(cycle)
        opt = OPT_RR if variant & 2 else b""
        whole = HEADER + len(question) + self.size + len(opt)
        if question == self.key and whole <= 512 and (self._bodies is not None or not self.rotate):
            messages = [
                self.heads[variant] + question + self.body(k) + opt
                for k in range(len(self.answers) if self.rotate else 1)
            ]
            cycle = self.cycles[variant] = itertools.cycle(messages)
            return qid + next(cycle)
        k = 0
        if self.rotate:
            k = self.turn
            self.turn = k + 1 if k + 1 < len(self.answers) else 0
        if whole <= limit:
            return qid + self.heads[variant] + question + self.body(k) + opt
        return self._trimmed(k, qid, variant, question, limit, opt)

    def _trimmed(
        self, k: int, qid: bytes, variant: int, question: bytes, limit: int, opt: bytes
    ) -> bytes:
        room = limit - HEADER - len(question) - len(opt)
        parts: list[bytes] = []
        counts = [0, 0, 0]
        complete = True
        for section, records in enumerate((self._rotated(k), self.authority, self.additional)):
            for record in records:
                if len(record) > room:
                    if section == 0:
                        complete = False
                    break
                parts.append(record)
                room -= len(record)
                counts[section] += 1
            if not complete:
                break  # a truncated answer carries no authority or additional records
        flags2 = self._flags2 | (variant & RD) | (0 if complete else TC)
        an, ns, ar = counts
        head = wire.header_tail(flags2, self._flags3, an, ns, ar + (1 if opt else 0))
        return qid + head + question + b"".join(parts) + opt


class Resolver:
    """Renders the answer to one question from the catalog (pure: reads the cache only)."""

    def __init__(self, cache: StateCache, config: DnsConfig) -> None:
        self.cache = cache
        self.catalog = Catalog(cache)
        self.config = config
        self.ra = bool(config.recursors)
        self.ttl = config.ttl
        self.domains = [config.domain_labels]
        if config.alt_domain_labels:
            self.domains.append(config.alt_domain_labels)
        self.domains.sort(key=len, reverse=True)  # the longest suffix wins

    def readable(self, resource: str, name: str) -> bool:
        """With --acl-dns, DNS answers what the `anonymous` ACL policy may read; else all."""
        if not self.config.acl:
            return True
        anonymous = self.cache.acl_policies.get("anonymous")
        rules = anonymous.rules if anonymous is not None else []
        return decide(rules, resource, name, Level.READ)

    def resolve(self, key: bytes) -> Answer | None:
        """The answer to a canonical question (lowercase name, type, class); None when the name
        is outside our domains and recursors are configured (the caller forwards it)."""
        labels = wire.question_labels(key)
        if labels is None:
            raise ValueError("not a question")
        qtype, qclass = _TYPE_CLASS.unpack(key[-4:])
        domain = next((d for d in self.domains if labels[len(labels) - len(d) :] == d), None)
        if domain is None:
            if self.ra:
                return None
            return Answer(wire.REFUSED, aa=False, ra=self.ra)
        if qclass not in (wire.IN, wire.CLASS_ANY):
            return Answer(wire.REFUSED, aa=False, ra=self.ra)
        return _Lookup(self, labels, domain, qtype).answer()


class _Lookup:
    """One resolution: the names it renders depend on the question's layout (SOA pointers)."""

    def __init__(
        self, resolver: Resolver, labels: tuple[bytes, ...], domain: tuple[bytes, ...], qtype: int
    ) -> None:
        self.r = resolver
        self.labels = labels
        self.domain = domain
        self.qtype = qtype
        self.rest = labels[: len(labels) - len(domain)]
        # the domain's labels inside the question: SOA names point there
        offset = HEADER + len(wire.encode_name(labels)) - len(wire.encode_name(domain))
        self.domain_ref = wire.pointer(offset)

    def answer(self) -> Answer:
        rest = self.rest
        if not rest:
            return self._apex()
        kind = rest[-1]
        if kind == b"service":
            return self._service(rest[:-1])
        if kind == b"node" and len(rest) > 1:
            return self._node(b".".join(rest[:-1]).decode("ascii", "replace"))
        if kind == b"addr" and len(rest) == 2:
            return self._addr(rest[0])
        if kind in (b"node", b"addr") and len(rest) == 1:
            return self._done(wire.NOERROR, [], index=1)  # an empty non-terminal
        return self._done(wire.NXDOMAIN, [], index=1)

    # ---- names ---------------------------------------------------------------------------
    def _apex(self) -> Answer:
        index = self.r.cache.index(Topic.SERVICES)
        if self.qtype in (wire.SOA, wire.ANY):
            soa = wire.rr(wire.QUESTION_PTR, wire.SOA, self.r.ttl, self._soa_rdata(index))
            return self._done(wire.NOERROR, [soa], soa=False, topics=[Topic.SERVICES], index=index)
        return self._done(wire.NOERROR, [], topics=[Topic.SERVICES], index=index)

    def _service(self, parts: tuple[bytes, ...]) -> Answer:
        tag: bytes | None = None
        if len(parts) == 1:
            name = parts[0]
        elif len(parts) == 2 and parts[0][:1] == b"_" and parts[1][:1] == b"_":
            name, tag = parts[0][1:], parts[1][1:]  # RFC 2782: _<svc>._<proto or tag>
            if tag == b"tcp":
                tag = None
        elif len(parts) == 2:
            tag, name = parts
        elif not parts:
            return self._done(wire.NOERROR, [], index=1)  # `service.<domain>`: a non-terminal
        else:
            return self._done(wire.NXDOMAIN, [], index=1)
        text = name.decode("ascii", "replace")
        catalog = self.r.catalog
        topics = catalog.topics(text)
        if self.r.config.acl:
            topics = [*topics, Topic.ACL]
        index = max(self.r.cache.index(t) for t in topics)
        if not self.r.readable("service", text):
            return self._done(wire.REFUSED, [], topics=topics, index=index, soa=False)
        instances = [i for i in catalog.instances(text) if i.status != Health.CRITICAL]
        if tag is not None:
            wanted = tag.decode("ascii", "replace")
            instances = [i for i in instances if wanted in (t.lower() for t in i.tags)]
        if not instances:  # as Consul: no serving instance is no such name
            return self._done(wire.NXDOMAIN, [], topics=topics, index=index)
        qtype = self.qtype
        answers: list[bytes] = []
        additional: list[bytes] = []
        if qtype in (wire.A, wire.AAAA, wire.ANY):
            answers += self._addresses(i.address for i in instances)
        if qtype in (wire.SRV, wire.ANY):
            answers += self._srv(instances)
            additional = self._targets(instances)
        return self._done(
            wire.NOERROR,
            answers,
            additional,
            topics=topics,
            index=index,
            rotate=qtype != wire.ANY,
        )

    def _node(self, name: str) -> Answer:
        # Under --acl-dns every answer depends on the policies too: an ACL change (a grant or
        # a revocation) re-renders it at once.
        topics = [Topic.NODES, Topic.ACL] if self.r.config.acl else [Topic.NODES]
        index = max(self.r.cache.index(t) for t in topics)
        if not self.r.readable("node", name):
            return self._done(wire.REFUSED, [], topics=topics, index=index, soa=False)
        node = self.r.cache.nodes.get(name)
        if node is None:
            return self._done(wire.NXDOMAIN, [], topics=topics, index=index)
        answers = self._addresses([node.address]) if self.qtype in _ADDRESS_TYPES else []
        return self._done(wire.NOERROR, answers, topics=topics, index=index)

    # ---- records -------------------------------------------------------------------------
    def _addresses(self, addresses: Iterable[str]) -> list[bytes]:
        """A (and/or AAAA, as asked) records at the question's name; one per distinct address."""
        out: dict[bytes, bytes] = {}
        for address in addresses:
            found = wire.address_rdata(address)
            if found is None:
                continue  # a host name: no address record (SRV targets still name the node)
            rtype, rdata = found
            if self.qtype in (rtype, wire.ANY) and rdata not in out:
                out[rdata] = wire.rr(wire.QUESTION_PTR, rtype, self.r.ttl, rdata)
        return list(out.values())

    def _target(self, instance: Instance) -> bytes:
        """`<node>.node.<domain>`, or, for an instance registered at an address other than its
        node's, `<hex address>.addr.<domain>` (as Consul names them)."""
        node = self.r.cache.nodes.get(instance.node)
        if node is None or node.address != instance.address:
            found = wire.address_rdata(instance.address)
            if found is not None:
                return wire.encode_name([found[1].hex().encode(), b"addr", *self.domain])
        return wire.encode_name([*instance.node.encode().split(b"."), b"node", *self.domain])

    def _srv(self, instances: list[Instance]) -> list[bytes]:
        out: dict[tuple[bytes, int], bytes] = {}
        for instance in instances:
            target = self._target(instance)
            if (target, instance.port) not in out:
                rdata = wire.srv_rdata(1, 1, instance.port, target)
                out[target, instance.port] = wire.rr(wire.QUESTION_PTR, wire.SRV, self.r.ttl, rdata)
        return list(out.values())

    def _targets(self, instances: list[Instance]) -> list[bytes]:
        """The SRV targets' address records, for the additional section."""
        out: dict[bytes, bytes] = {}
        for instance in instances:
            target = self._target(instance)
            found = wire.address_rdata(instance.address)
            if target not in out and found is not None:
                out[target] = wire.rr(target, found[0], self.r.ttl, found[1])
        return list(out.values())

    def _addr(self, label: bytes) -> Answer:
        """`<hex>.addr.<domain>`: 8 hex digits are an IPv4 address, 32 an IPv6 one."""
        try:
            packed = bytes.fromhex(label.decode("ascii"))
        except ValueError:
            packed = b""
        rtype = {4: wire.A, 16: wire.AAAA}.get(len(packed))
        if rtype is None:
            return self._done(wire.NXDOMAIN, [], index=1)
        answers = []
        if self.qtype in (rtype, wire.ANY):
            answers = [wire.rr(wire.QUESTION_PTR, rtype, self.r.ttl, packed)]
        return self._done(wire.NOERROR, answers, index=1)

    def _soa_rdata(self, serial: int) -> bytes:
        return wire.soa_rdata(self.domain_ref, serial, self.r.ttl)

    def _done(
        self,
        rcode: int,
        answers: list[bytes],
        additional: Sequence[bytes] = (),
        *,
        topics: Sequence[str] = (),
        index: int,
        soa: bool = True,
        rotate: bool = True,
    ) -> Answer:
        authority: list[bytes] = []
        if soa and not answers:  # NXDOMAIN or no data: the SOA tells how long to cache that
            authority = [wire.rr(self.domain_ref, wire.SOA, self.r.ttl, self._soa_rdata(index))]
        return Answer(
            rcode,
            answers,
            authority,
            additional,
            ra=self.r.ra,
            rotate=rotate,
            topics=topics,
            index=index,
            revision=self.r.cache.revision,
        )


_ADDRESS_TYPES = (wire.A, wire.AAAA, wire.ANY)


class AnswerCache:
    """Answers by canonical question, re-rendered only when the name's catalog index moves."""

    def __init__(self, resolver: Resolver, max_entries: int = MAX_ENTRIES) -> None:
        self.resolver = resolver
        self.state = resolver.cache
        self.entries: dict[bytes, Answer] = {}
        self.max_entries = max_entries
        self.rendered = 0  # answers rendered (tests and stats: how often the cache missed)

    def get(self, key: bytes) -> Answer | None:
        """The current answer to a canonical question; None: forward it (outside our domains)."""
        state = self.state
        entry = self.entries.get(key)
        if entry is not None:
            if entry.revision == state.revision:
                return entry
            topics = entry.topics
            if not topics or max(state.index(t) for t in topics) == entry.index:
                entry.revision = state.revision
                return entry
        entry = self.resolver.resolve(key)
        if entry is None:
            return None
        self.rendered += 1
        entry.key = key
        if len(self.entries) >= self.max_entries:
            self.entries.clear()  # bounded memory whatever names clients make up
        self.entries[key] = entry
        return entry

    def clear(self) -> None:
        self.entries.clear()
