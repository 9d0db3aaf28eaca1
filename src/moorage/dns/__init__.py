"""moorage's DNS interface, Consul-style: the catalog in memory, served over UDP and TCP.

config.py   DnsConfig: address, domain (+ alias), TTL, recursors (the `--dns-*` options)
wire.py     the wire format moorage renders itself (header, names, A/AAAA/SRV/SOA/OPT)
answers.py  Resolver (question → pre-rendered Answer) and AnswerCache (valid while the name's
            catalog index stands still)
server.py   DnsServer: the UDP fast path, TCP, the dnspython slow path, forwarding
"""

from .answers import Answer, AnswerCache, Resolver
from .config import DnsConfig, parse_recursor
from .server import DnsServer

__all__ = ["Answer", "AnswerCache", "DnsConfig", "DnsServer", "Resolver", "parse_recursor"]
