"""DNS wire format, the little moorage renders itself (RFC 1035, 2782, 6891).

Answers are pre-rendered as bytes once and re-used for every query asking the same question:
the hot path only patches the query id and the header flags. Records in an answer point their
owner name at the question (offset 12, `0xC00C`); SRV targets stay uncompressed (RFC 2782).
"""

from __future__ import annotations

import ipaddress
import struct

# header byte 2: QR opcode(4) AA TC RD; byte 3: RA Z AD CD rcode(4)
QR = 0x80
AA = 0x04
TC = 0x02
RD = 0x01
RA = 0x80

# rcodes
NOERROR = 0
FORMERR = 1
SERVFAIL = 2
NXDOMAIN = 3
NOTIMP = 4
REFUSED = 5
BADVERS = 16  # extended: the upper 8 bits travel in the OPT record

# types and classes
A = 1
NS = 2
SOA = 6
TXT = 16
AAAA = 28
SRV = 33
OPT = 41
ANY = 255
IN = 1
CLASS_ANY = 255

HEADER = 12
QUESTION_PTR = b"\xc0\x0c"  # a compression pointer to the question's name
MAX_NAME = 255
EDNS_PAYLOAD = 1232  # what we advertise (DNS flag day 2020)
MAX_UDP = 4096  # never send a UDP answer larger than this, whatever the client offers
MAX_TCP = 65535
OPT_RR = b"\x00" + struct.pack("!HHIH", OPT, EDNS_PAYLOAD, 0, 0)  # root, no options

_RR = struct.Struct("!HHIH")
_SRV = struct.Struct("!HHH")
_SOA = struct.Struct("!IIIII")
_COUNTS = struct.Struct("!HHHH")


def encode_name(labels: tuple[bytes, ...] | list[bytes]) -> bytes:
    """Uncompressed wire form of a name given as labels (no trailing empty label)."""
    return b"".join(bytes((len(label),)) + label for label in labels) + b"\x00"


def split_name(text: str) -> tuple[bytes, ...]:
    """`Moorage.` → (b"moorage",): lowercased labels; raises ValueError on a bad name."""
    stripped = text.strip().rstrip(".")
    if not stripped:
        return ()
    labels = tuple(label.encode("ascii").lower() for label in stripped.split("."))
    if any(not 0 < len(label) < 64 for label in labels):
        raise ValueError(f"{text!r} is not a domain name")
    if len(encode_name(labels)) > MAX_NAME:
        raise ValueError(f"{text!r} is too long for a domain name")
    return labels


def question_labels(key: bytes) -> tuple[bytes, ...] | None:
    """Labels of an uncompressed question (name + type + class), or None when it is not one.

    `key` must be exactly one name and 4 bytes: no pointers, no trailing bytes."""
    labels: list[bytes] = []
    i, end = 0, len(key) - 4
    while i < end:
        size = key[i]
        if size == 0:
            return tuple(labels) if i + 1 == end and i < MAX_NAME else None
        if size > 63:  # a pointer (0xC0) or an extended label type: not in a cache key
            return None
        labels.append(key[i + 1 : i + 1 + size])
        i += size + 1
    return None


def rr(owner: bytes, rtype: int, ttl: int, rdata: bytes) -> bytes:
    return owner + _RR.pack(rtype, IN, ttl, len(rdata)) + rdata


def address_rdata(address: str) -> tuple[int, bytes] | None:
    """(A or AAAA, packed address) of an IP literal; None for a host name."""
    try:
        ip = ipaddress.ip_address(address.strip("[]"))
    except ValueError:
        return None
    return (A if ip.version == 4 else AAAA), ip.packed


def srv_rdata(priority: int, weight: int, port: int, target: bytes) -> bytes:
    return _SRV.pack(priority, weight, port) + target


def soa_rdata(domain_ref: bytes, serial: int, minimum: int) -> bytes:
    """SOA of our zone: `ns.<domain> hostmaster.<domain>`, names compressed onto `domain_ref`."""
    mname = b"\x02ns" + domain_ref
    rname = b"\x0ahostmaster" + domain_ref
    return mname + rname + _SOA.pack(serial & 0xFFFFFFFF, 3600, 600, 86400, minimum)


def pointer(offset: int) -> bytes:
    return struct.pack("!H", 0xC000 | offset)


def header_tail(flags2: int, flags3: int, an: int, ns: int, ar: int) -> bytes:
    """Header bytes 2..12 (everything after the id) of an answer to one question."""
    return bytes((flags2, flags3)) + _COUNTS.pack(1, an, ns, ar)


class Query:
    """What a well-formed query asks: its question (as sent, and canonical) and its EDNS."""

    __slots__ = ("canonical", "edns", "payload", "qclass", "qtype", "question")

    def __init__(
        self, question: bytes, canonical: bytes, qtype: int, qclass: int, edns: int, payload: int
    ) -> None:
        self.question = question  # name + type + class, as sent (no compression)
        self.canonical = canonical  # the same with the name lowercased: the answer cache's key
        self.qtype = qtype
        self.qclass = qclass
        self.edns = edns  # -1: no OPT record; else its version
        self.payload = payload  # the client's UDP payload size (512 without EDNS)


_UNSIGNED = (250, 24)  # TSIG, SIG(0): signed queries we cannot verify


def parse_query(data: bytes) -> Query | int:
    """Check a query's framing without trusting a byte of it; its Query, or the rcode to answer
    (FORMERR, NOTIMP). Only a header is assumed (12 bytes, QR clear).

    One question with an uncompressed name (a pointer there can only loop or point into the
    header); answer, authority and additional records framed exactly to the end of the message
    (their names are skipped, never followed); at most one OPT record, owned by the root."""
    if data[2] & 0x78:
        return NOTIMP  # an opcode other than QUERY
    qd, an, ns, ar = _COUNTS.unpack_from(data, 4)
    if qd != 1:
        return FORMERR
    n = len(data)
    i = HEADER
    while True:  # the question's name
        if i >= n:
            return FORMERR
        size = data[i]
        if size == 0:
            break
        if size > 63:
            return FORMERR
        i += size + 1
        if i - HEADER > MAX_NAME - 1:
            return FORMERR
    end = i + 5
    if end > n:
        return FORMERR
    qtype, qclass = struct.unpack_from("!HH", data, i + 1)
    edns, payload = -1, 512
    i = end
    for number in range(an + ns + ar):
        owner = i
        while True:  # an owner name: labels, ended by the root or a pointer
            if i >= n:
                return FORMERR
            size = data[i]
            if size == 0:
                i += 1
                break
            if size >= 0xC0:
                i += 2
                break
            if size > 63:
                return FORMERR
            i += size + 1
        if i + 10 > n:
            return FORMERR
        rtype, rclass, ttl, rdlen = _RR.unpack_from(data, i)
        i += 10 + rdlen
        if i > n:
            return FORMERR
        if number >= an + ns:  # the additional section
            if rtype == OPT:
                if edns >= 0 or data[owner] != 0:
                    return FORMERR
                edns, payload = (ttl >> 16) & 0xFF, rclass
            elif rtype in _UNSIGNED:
                return FORMERR
    if i != n:
        return FORMERR  # trailing bytes
    name = data[HEADER : end - 4]
    question = data[HEADER:end]
    return Query(question, name.lower() + data[end - 4 : end], qtype, qclass, edns, payload)


def error_reply(data: bytes, rcode: int, question: bytes = b"", ra: bool = False) -> bytes:
    """A bare answer to a query we will not (or cannot) answer: id, opcode and RD copied."""
    flags2 = QR | (data[2] & 0x79)  # opcode + RD
    flags3 = (RA if ra else 0) | (rcode & 0x0F)
    counts = _COUNTS.pack(1 if question else 0, 0, 0, 0)
    return data[:2] + bytes((flags2, flags3)) + counts + question
