"""Where and how the server listens: the users' port, the nodes' cluster port, their TLS, and
the protected mode that refuses an open door.

    --http-addr     the users' API (CLI, dashboard, Prometheus, Consul clients): HTTPS with the
                    server's certificate when it listens beyond loopback (`--tls auto`), plain
                    HTTP on loopback (`moorage dev`)
    --cluster-addr  the nodes' side (join, heartbeats, reports, secrets, claims, metrics):
                    always mutual TLS; a node is whom its certificate names

Protected mode (as Redis's): a server whose API listens beyond loopback with ACLs off, or
without TLS, would let anyone on the network deploy and exec as root; it refuses to start
unless `--insecure` says a firewall already keeps everyone else out.
"""

from __future__ import annotations

import ipaddress
import socket
import ssl
from dataclasses import dataclass
from pathlib import Path
from typing import Literal

import psutil

from moorage.model import FieldError, SpecError
from moorage.pki import Authority, client_context, load_or_create_authority, server_context

TlsMode = Literal["auto", "on", "off"]
WILDCARDS = ("", "0.0.0.0", "::")


def is_loopback(host: str) -> bool:
    if host == "localhost":
        return True
    try:
        return ipaddress.ip_address(host.strip("[]")).is_loopback
    except ValueError:
        return False


def api_uses_tls(host: str, mode: TlsMode) -> bool:
    return mode == "on" or (mode == "auto" and not is_loopback(host))


def check_protected_mode(host: str, port: int, acl: bool, tls: bool, insecure: bool) -> None:
    """Refuse an API that anyone on the network could drive (SpecError naming the flags)."""
    if is_loopback(host) or insecure:
        return
    problems = []
    if not acl:
        problems.append(
            FieldError(
                "acl",
                f"the API would listen on {host}:{port} with ACLs off: anyone who reaches it "
                "could deploy and exec as root. Start with --acl (a management token is "
                "written to the data dir on first start), or --insecure if a firewall keeps "
                "everyone else out",
            )
        )
    if not tls:
        problems.append(
            FieldError(
                "tls",
                f"the API would listen on {host}:{port} without TLS: tokens and secrets would "
                "cross the network in clear. Drop --tls off, or give --insecure",
            )
        )
    if problems:
        raise SpecError(problems, code="protected_mode")


def local_addresses() -> list[str]:
    """Every address of this machine's interfaces (a wildcard listener answers on all)."""
    found = []
    for addresses in psutil.net_if_addrs().values():
        for address in addresses:
            if address.family in (socket.AF_INET, socket.AF_INET6):
                found.append(address.address.split("%", 1)[0])
    return found


def server_names(hosts: list[str], extra: tuple[str, ...]) -> list[str]:
    """The names a server certificate covers: the hosts it listens on (every local address
    for a wildcard), loopback and this machine's name, and `--tls-san`s."""
    names = {"127.0.0.1", "::1", "localhost", socket.gethostname(), *extra}
    for host in hosts:
        if host in WILDCARDS:
            names.update(local_addresses())
        else:
            names.add(host.strip("[]"))
    return sorted(names)


@dataclass(frozen=True)
class ServerTls:
    authority: Authority
    cert: Path
    key: Path
    api: ssl.SSLContext | None  # None: the users' port speaks plain HTTP (loopback)
    cluster: ssl.SSLContext  # node certificates asked for (the join route needs none)
    relay: ssl.SSLContext  # calls to agents: our certificate presented, theirs checked


def setup_tls(data_dir: Path, hosts: list[str], sans: tuple[str, ...], api_tls: bool) -> ServerTls:
    authority = load_or_create_authority(data_dir / "tls")
    cert, key = authority.server_certificate(socket.gethostname(), server_names(hosts, sans))
    return ServerTls(
        authority=authority,
        cert=cert,
        key=key,
        api=server_context(cert, key, None, "none") if api_tls else None,
        cluster=server_context(cert, key, authority.path, "optional"),
        relay=client_context(authority.path, cert, key),
    )
