"""The node's credentials: the cluster CA it trusts, its certificate and key, its TLS contexts.

    <data dir>/tls/ca.pem     pinned on first contact: `--ca-cert FILE`, or fetched from a server
                              and checked against the fingerprint the join token carries
    <data dir>/tls/node.key   0600, created here, never sent anywhere
    <data dir>/tls/node.pem   from `POST /v1/join` (the join token) on first start, renewed
                              through `POST /v1/nodes/<name>/certificate` (its own certificate)
                              once a third of its lifetime is left

Every call to a server presents the certificate (mutual TLS); the agent's own port serves it
and accepts only servers' certificates. Both contexts are updated in place on renewal, so new
connections carry the new certificate and nothing restarts.
"""

from __future__ import annotations

import asyncio
import hashlib
import logging
import random
import ssl
import time
from pathlib import Path

import aiohttp
from cryptography import x509
from cryptography.hazmat.primitives import serialization
from cryptography.x509.oid import NameOID

from moorage.model import Unauthorized, Unavailable
from moorage.model.identity import CertificateRequest, JoinRequest, NodeCertificate
from moorage.pki.certs import (
    ORGANIZATION,
    client_context,
    key_and_csr,
    renewal_due,
    server_context,
    write_private,
)
from moorage.pki.tokens import JoinToken

log = logging.getLogger(__name__)

RENEW_CHECK = 3600.0  # seconds between looks at the certificate's age
CALL_TIMEOUT = 10.0


class NodeTls:
    def __init__(
        self,
        data_dir: Path,
        name: str,
        addresses: list[str],
        token: JoinToken | None,
        ca_cert: Path | None = None,
    ) -> None:
        self.dir = data_dir / "tls"
        self.name = name
        self.addresses = sorted(set(addresses))
        self.token = token
        self.ca_cert = ca_cert
        self.ca_path = self.dir / "ca.pem"
        self.cert_path = self.dir / "node.pem"
        self.key_path = self.dir / "node.key"
        self.client: ssl.SSLContext | None = None  # for calls to servers
        self.server: ssl.SSLContext | None = None  # for the agent's own port

    # ---- first start -------------------------------------------------------------------
    async def ensure(self, servers: list[str]) -> None:
        """Make sure the CA is pinned and the node holds a valid certificate for its name."""
        self.dir.mkdir(mode=0o700, parents=True, exist_ok=True)
        await self._pin_ca(servers)
        if not self._usable():
            await self._join(servers)
        self.client = client_context(self.ca_path, self.cert_path, self.key_path)
        self.server = server_context(self.cert_path, self.key_path, self.ca_path, "optional")

    def _usable(self) -> bool:
        """A certificate for this name, from the pinned CA, not due for renewal."""
        if not (self.cert_path.exists() and self.key_path.exists()):
            return False
        pem = self.cert_path.read_bytes()
        cert = x509.load_pem_x509_certificate(pem)
        ca = x509.load_pem_x509_certificate(self.ca_path.read_bytes())
        names = [a.value for a in cert.subject.get_attributes_for_oid(NameOID.COMMON_NAME)]
        orgs = [a.value for a in cert.subject.get_attributes_for_oid(NameOID.ORGANIZATION_NAME)]
        return (
            cert.issuer == ca.subject
            and names == [self.name]
            and orgs == [ORGANIZATION["node"]]
            and not renewal_due(pem, time.time())
        )

    async def _pin_ca(self, servers: list[str]) -> None:
        if self.ca_cert is not None:
            pem = self.ca_cert.read_bytes()
            x509.load_pem_x509_certificate(pem)  # a CA file that is not one fails here
            if not self.ca_path.exists() or self.ca_path.read_bytes() != pem:
                write_private(self.ca_path, pem)
            return
        if self.ca_path.exists():
            return
        pin = self.token.ca_sha256 if self.token is not None else None
        if pin is None:
            raise Unavailable(
                "this agent does not know the cluster's CA: give a join token that carries "
                "its fingerprint (the server's join-token file), or --ca-cert FILE"
            )
        pem = await self._fetch_ca(servers, pin)
        write_private(self.ca_path, pem)
        log.info("pinned the cluster CA SHA256:%s", pin)

    async def _fetch_ca(self, servers: list[str], pin: str) -> bytes:
        """The CA certificate from the first server that answers, checked against the pin
        (the connection itself is not verified yet: the pin is what is trusted)."""
        problems = []
        timeout = aiohttp.ClientTimeout(total=CALL_TIMEOUT)
        async with aiohttp.ClientSession(timeout=timeout) as session:
            for server in servers:
                try:
                    async with session.get(f"{server}/v1/ca", ssl=False) as answer:
                        pem = await answer.read()
                    der = x509.load_pem_x509_certificate(pem).public_bytes(
                        serialization.Encoding.DER
                    )
                except (aiohttp.ClientError, TimeoutError, ValueError) as exc:
                    problems.append(f"{server}: {exc}")
                    continue
                if hashlib.sha256(der).hexdigest() != pin:
                    raise Unauthorized(
                        f"{server} presents a CA whose fingerprint is not the join token's: "
                        "not joining it"
                    )
                return pem
        raise Unavailable(f"no server gave its CA: {'; '.join(problems)}")

    async def _join(self, servers: list[str]) -> None:
        if self.token is None:
            raise Unauthorized(
                "this node has no certificate yet: give the cluster's join token "
                "(--token-file FILE or MOORAGE_TOKEN) for its first start"
            )
        key, csr = key_and_csr("node", self.name, self.addresses)
        request = JoinRequest(name=self.name, csr=csr.decode())
        headers = {"Authorization": f"Bearer {self.token.value}"}
        answer = await self._call(servers, "/v1/join", request.model_dump_json(), headers, None)
        write_private(self.key_path, key)
        write_private(self.cert_path, answer.certificate.encode())
        log.info("node %s joined: certificate until %s", self.name, time.ctime(answer.not_after))

    async def _call(
        self,
        servers: list[str],
        path: str,
        body: str,
        headers: dict[str, str],
        context: ssl.SSLContext | None,
    ) -> NodeCertificate:
        context = context or client_context(self.ca_path)
        timeout = aiohttp.ClientTimeout(total=CALL_TIMEOUT)
        problems = []
        async with aiohttp.ClientSession(timeout=timeout) as session:
            for server in servers:
                try:
                    async with session.post(
                        f"{server}{path}",
                        data=body,
                        headers={**headers, "Content-Type": "application/json"},
                        ssl=context,
                    ) as answer:
                        payload = await answer.json(content_type=None)
                        if answer.status >= 400:
                            message = payload.get("message") if isinstance(payload, dict) else ""
                            if answer.status in (401, 403, 409):
                                raise Unauthorized(f"{server} refused: {message}")
                            problems.append(f"{server}: {answer.status} {message}")
                            continue
                        return NodeCertificate.model_validate(payload)
                except (aiohttp.ClientError, TimeoutError, ValueError) as exc:
                    problems.append(f"{server}: {exc}")
        raise Unavailable(f"no server issued a certificate: {'; '.join(problems)}")

    # ---- renewal -----------------------------------------------------------------------
    async def keep_renewed(self, servers: list[str]) -> None:
        """Renew the certificate when it is due, until cancelled (a failure is retried)."""
        await asyncio.sleep(random.uniform(0, 60))
        while True:
            if renewal_due(self.cert_path.read_bytes(), time.time()):
                try:
                    await self.renew(servers)
                except (Unavailable, Unauthorized) as exc:
                    log.warning("renewing the node certificate failed: %s", exc)
                    await asyncio.sleep(60)
                    continue
            await asyncio.sleep(RENEW_CHECK)

    async def renew(self, servers: list[str]) -> None:
        key, csr = key_and_csr("node", self.name, self.addresses)
        body = CertificateRequest(csr=csr.decode()).model_dump_json()
        path = f"/v1/nodes/{self.name}/certificate"
        answer = await self._call(servers, path, body, {}, self.client)
        write_private(self.key_path, key)
        write_private(self.cert_path, answer.certificate.encode())
        for context in (self.client, self.server):
            if context is not None:  # new connections present the new certificate
                context.load_cert_chain(self.cert_path, self.key_path)
        log.info("node certificate renewed: until %s", time.ctime(answer.not_after))
