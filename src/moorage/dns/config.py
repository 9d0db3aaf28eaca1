"""The DNS interface's settings (`--dns-*` options of `moorage server` and `moorage dev`)."""

from __future__ import annotations

import ipaddress
from collections.abc import Iterable
from dataclasses import dataclass

from moorage.model import FieldError, SpecError

from .wire import split_name


@dataclass(frozen=True)
class DnsConfig:
    addr: tuple[str, int] = ("127.0.0.1", 7053)  # UDP and TCP
    domain: str = "moorage."
    alt_domain: str | None = None  # answered like `domain` (e.g. `consul.`)
    ttl: int = 0  # seconds, on every record and as the SOA minimum (negative caching)
    recursors: tuple[tuple[str, int], ...] = ()  # names outside our domains go there, in order
    acl: bool = False  # answer only what the `anonymous` ACL policy may read (--acl-dns)

    @property
    def domain_labels(self) -> tuple[bytes, ...]:
        return split_name(self.domain)

    @property
    def alt_domain_labels(self) -> tuple[bytes, ...]:
        return split_name(self.alt_domain) if self.alt_domain else ()

    @classmethod
    def from_options(
        cls,
        addr: tuple[str, int],
        domain: str = "moorage.",
        alt_domain: str | None = None,
        ttl: int = 0,
        recursors: Iterable[str] = (),
    ) -> DnsConfig:
        """Validated settings from the command line; SpecError names the option at fault."""
        problems: list[FieldError] = []
        names: dict[str, str | None] = {"dns-domain": domain, "dns-alt-domain": alt_domain}
        for option, value in names.items():
            if value is None:
                continue
            try:
                if not split_name(value):
                    raise ValueError("the root cannot be our domain")
            except (ValueError, UnicodeError) as exc:
                problems.append(FieldError(option, f"must be a domain name, got {value!r} ({exc})"))
        if alt_domain is not None and not problems and split_name(alt_domain) == split_name(domain):
            problems.append(FieldError("dns-alt-domain", "must differ from --dns-domain"))
        if not 0 <= ttl < 2**31:
            problems.append(FieldError("dns-ttl", f"must be 0 or more seconds, got {ttl}"))
        parsed: list[tuple[str, int]] = []
        for value in recursors:
            try:
                parsed.append(parse_recursor(value))
            except ValueError as exc:
                problems.append(FieldError("dns-recursor", str(exc)))
        if problems:
            raise SpecError(problems)

        def absolute(name: str) -> str:
            return ".".join(label.decode() for label in split_name(name)) + "."

        return cls(
            addr=(addr[0].strip("[]"), addr[1]),
            domain=absolute(domain),
            alt_domain=absolute(alt_domain) if alt_domain else None,
            ttl=ttl,
            recursors=tuple(parsed),
        )


def parse_recursor(value: str) -> tuple[str, int]:
    """`IP`, `IP:PORT`, `IPv6` or `[IPv6]:PORT` → (ip, port); port 53 by default."""
    text = value.strip()
    host, port = text, 53
    if text.startswith("["):
        host, sep, rest = text[1:].partition("]")
        if not sep or (rest and not rest.startswith(":")):
            raise ValueError(f"must be IP[:PORT] or [IPv6]:PORT, got {value!r}")
        if rest:
            port = _port(rest[1:], value)
    elif text.count(":") == 1:
        host, _, raw = text.partition(":")
        port = _port(raw, value)
    try:
        ipaddress.ip_address(host)
    except ValueError:
        raise ValueError(f"must be an IP address with an optional port, got {value!r}") from None
    return host, port


def _port(raw: str, value: str) -> int:
    if not raw.isdigit() or not 0 < int(raw) < 65536:
        raise ValueError(f"bad port in {value!r}")
    return int(raw)
