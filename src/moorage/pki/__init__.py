"""The cluster's PKI: one CA, created by the first server, certifying servers and nodes.

    <server data dir>/tls/ca.pem, ca.key (0600)      the cluster CA (EC P-256, 10 years)
    <server data dir>/tls/server.pem, server.key     the server's certificate: its addresses as
                                                     SANs; server and client auth (it calls agents)
    <agent data dir>/tls/ca.pem, node.pem, node.key  the CA it pinned, and its node certificate

    subject O=moorage-server CN=<name>          a server (the agents' port accepts only these)
    subject O=moorage-node   CN=<name>          a node (its identity on the server's cluster port)

An agent joins once with the join token: it pins the CA (the token carries its SHA-256, or
`--ca-cert`), sends a CSR for its name and addresses, and gets a node certificate (90 days,
renewed when a third is left). Identity always comes from a verified certificate's subject.
"""

from .certs import (
    NODE_DAYS,
    Authority,
    Identity,
    PeerError,
    client_context,
    fingerprint,
    identity_of,
    key_and_csr,
    load_or_create_authority,
    not_after,
    serial_of,
    server_context,
)
from .tokens import JoinToken, parse_join_token

__all__ = [
    "NODE_DAYS",
    "Authority",
    "Identity",
    "JoinToken",
    "PeerError",
    "client_context",
    "fingerprint",
    "identity_of",
    "key_and_csr",
    "load_or_create_authority",
    "not_after",
    "parse_join_token",
    "serial_of",
    "server_context",
]
