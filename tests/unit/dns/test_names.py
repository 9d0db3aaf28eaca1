"""Names and options: domains, recursors, and the question keys of the answer cache."""

from __future__ import annotations

import struct
import subprocess
import sys
from pathlib import Path

import pytest

from moorage.dns import DnsConfig, parse_recursor
from moorage.dns.wire import (
    FORMERR,
    NOTIMP,
    Query,
    encode_name,
    parse_query,
    question_labels,
    split_name,
)
from moorage.model import SpecError


def test_domains_are_lowercase_labels_with_or_without_the_final_dot() -> None:
    assert split_name("Moorage.") == (b"moorage",)
    assert split_name("moorage") == (b"moorage",)
    assert split_name("svc.Cluster.local.") == (b"svc", b"cluster", b"local")
    assert split_name(".") == ()
    for bad in ("a..b", "x" * 64 + ".com", ".".join(["abcdefgh"] * 40)):
        with pytest.raises(ValueError):
            split_name(bad)


@pytest.mark.parametrize(
    ("text", "expected"),
    [
        ("10.0.0.2", ("10.0.0.2", 53)),
        ("10.0.0.2:5353", ("10.0.0.2", 5353)),
        ("::1", ("::1", 53)),
        ("[::1]", ("::1", 53)),
        ("[fd00::53]:5300", ("fd00::53", 5300)),
    ],
)
def test_recursors_are_ip_and_optional_port(text: str, expected: tuple[str, int]) -> None:
    assert parse_recursor(text) == expected


@pytest.mark.parametrize("text", ["dns.google", "10.0.0.2:0", "10.0.0.2:x", "[::1", "[::1]x", ""])
def test_a_recursor_that_is_not_an_ip_is_refused(text: str) -> None:
    with pytest.raises(ValueError):
        parse_recursor(text)


def test_options_are_validated_together_and_normalized() -> None:
    config = DnsConfig.from_options(
        ("[::1]", 7053), "Moorage", "consul", 30, ["127.0.0.1:5353", "::1"]
    )
    assert config == DnsConfig(
        addr=("::1", 7053),
        domain="moorage.",
        alt_domain="consul.",
        ttl=30,
        recursors=(("127.0.0.1", 5353), ("::1", 53)),
    )
    with pytest.raises(SpecError) as failed:
        DnsConfig.from_options(("127.0.0.1", 7053), "a..b", "moorage", -1, ["nope"])
    fields = {e.field for e in failed.value.errors}
    assert fields == {"dns-domain", "dns-ttl", "dns-recursor"}
    with pytest.raises(SpecError) as same:
        DnsConfig.from_options(("127.0.0.1", 7053), "moorage.", "MOORAGE", 0, [])
    assert [e.field for e in same.value.errors] == ["dns-alt-domain"]
    with pytest.raises(SpecError):
        DnsConfig.from_options(("127.0.0.1", 7053), ".", None, 0, [])


def test_question_keys_are_one_uncompressed_name_and_type_class() -> None:
    name = encode_name([b"web", b"service", b"moorage"])
    assert question_labels(name + b"\x00\x01\x00\x01") == (b"web", b"service", b"moorage")
    assert question_labels(b"\x00\x00\x06\x00\x01") == ()  # the root
    assert question_labels(name + b"\x00\x01\x00") is None  # short
    assert question_labels(name + b"\x00\x01\x00\x01\x00") is None  # trailing byte
    assert question_labels(b"\xc0\x0c\x00\x01\x00\x01") is None  # a pointer
    assert question_labels(b"\x05ab\x00\x01\x00\x01") is None  # a label over the end
    assert question_labels(b"\x03a\x00b\x00\x00\x01\x00\x01") == (b"a\x00b",)  # binary label
    long = encode_name([b"a" * 63] * 4)  # 257 bytes: over 255
    assert question_labels(long + b"\x00\x01\x00\x01") is None


QUESTION = encode_name([b"Web", b"service", b"moorage"]) + b"\x00\x21\x00\x01"  # SRV IN
OPT_RECORD = b"\x00\x00\x29\x04\xd0\x00\x00\x00\x00\x00\x00"  # root, OPT, 1232, v0, no options


def message(counts: tuple[int, int, int, int], body: bytes, flags: int = 0x0100) -> bytes:
    return struct.pack("!HHHHHH", 99, flags, *counts) + body


def test_a_plain_query_parses_to_its_question_and_edns() -> None:
    plain = parse_query(message((1, 0, 0, 0), QUESTION))
    assert isinstance(plain, Query)
    assert (plain.question, plain.qtype, plain.qclass, plain.edns) == (QUESTION, 33, 1, -1)
    assert plain.canonical == QUESTION.lower() and plain.payload == 512
    edns = parse_query(message((1, 0, 0, 1), QUESTION + OPT_RECORD))
    assert isinstance(edns, Query) and (edns.edns, edns.payload) == (0, 1232)
    v1 = parse_query(message((1, 0, 0, 1), QUESTION + OPT_RECORD[:5] + b"\x00\x01" + b"\x00" * 4))
    assert isinstance(v1, Query) and v1.edns == 1
    # records in the other sections are framed, their names skipped (a pointer ends one)
    answer = b"\xc0\x0c\x00\x01\x00\x01\x00\x00\x00\x3c\x00\x04\x0a\x00\x00\x01"
    assert isinstance(parse_query(message((1, 1, 0, 1), QUESTION + answer + OPT_RECORD)), Query)


@pytest.mark.parametrize(
    ("packet", "rcode"),
    [
        (message((1, 0, 0, 0), QUESTION, flags=0x2100), NOTIMP),  # NOTIFY
        (message((0, 0, 0, 0), b""), FORMERR),
        (message((2, 0, 0, 0), QUESTION * 2), FORMERR),
        (message((1, 0, 0, 0), QUESTION[:-1]), FORMERR),
        (message((1, 0, 0, 0), QUESTION + b"\x00"), FORMERR),  # a trailing byte
        (message((1, 0, 0, 0), b"\xc0\x0c\x00\x01\x00\x01"), FORMERR),  # pointer loop
        (message((1, 0, 0, 0), b"\x41abc\x00\x00\x01\x00\x01"), FORMERR),  # extended label
        (message((1, 0, 0, 0), b"\x01a" * 128 + b"\x00\x00\x01\x00\x01"), FORMERR),  # > 255
        (message((1, 0, 0, 2), QUESTION + OPT_RECORD * 2), FORMERR),  # two OPT records
        (message((1, 0, 0, 1), QUESTION + b"\x01a" + OPT_RECORD), FORMERR),  # OPT not at root
        (message((1, 0, 0, 1), QUESTION + OPT_RECORD[:-2] + b"\x00\x05"), FORMERR),  # rdlen
        (message((1, 65535, 65535, 65535), QUESTION), FORMERR),  # lying counts
        (message((1, 0, 0, 1), QUESTION + b"\x00\x00\xfa\x00\xff" + b"\x00" * 6), FORMERR),
    ],
)
def test_malformed_framing_is_formerr_and_other_opcodes_notimp(packet: bytes, rcode: int) -> None:
    assert parse_query(packet) == rcode


def test_a_name_of_exactly_255_bytes_is_accepted() -> None:
    name = encode_name([b"a" * 63, b"b" * 63, b"c" * 63, b"d" * 61])
    assert len(name) == 255
    assert isinstance(parse_query(message((1, 0, 0, 0), name + b"\x00\x01\x00\x01")), Query)
    too_long = encode_name([b"a" * 63, b"b" * 63, b"c" * 63, b"d" * 62])
    assert parse_query(message((1, 0, 0, 0), too_long + b"\x00\x01\x00\x01")) == FORMERR


@pytest.mark.parametrize("command", ["server", "dev"])
def test_bad_dns_options_exit_2_naming_the_option(command: str, tmp_path: Path) -> None:
    result = subprocess.run(
        [
            *(sys.executable, "-m", "moorage", command, "--data-dir", str(tmp_path)),
            *("--dns-recursor", "resolver.example", "--dns-ttl", "-5", "--dns-domain", "a..b"),
        ],
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert result.returncode == 2, result.stderr
    assert "dns-recursor" in result.stderr and "dns-ttl" in result.stderr
    assert "dns-domain" in result.stderr  # every problem at once
    assert not (tmp_path / "server").exists()  # refused before anything started
