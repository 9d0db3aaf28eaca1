"""Certificates: the cluster CA, what it signs, TLS contexts, and whom a peer certificate names.

Keys are EC P-256 (fast handshakes, small certificates); every private key file is created
0600 before a byte is written to it. Certificates carry both server and client authentication
(a server calls agents, an agent serves the server), and their subject says the role.
"""

from __future__ import annotations

import contextlib
import datetime as dt
import hashlib
import ipaddress
import os
import secrets
import ssl
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Literal

from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec, rsa
from cryptography.x509.oid import ExtendedKeyUsageOID, NameOID

Role = Literal["server", "node"]
ORGANIZATION: dict[Role, str] = {"server": "moorage-server", "node": "moorage-node"}
CA_DAYS = 3650
SERVER_DAYS = 365
NODE_DAYS = 90
RENEW_FRACTION = 1 / 3  # renew a certificate once this much of its lifetime is left
MAX_SANS = 16
SKEW = dt.timedelta(minutes=5)  # not_before is set this far back (clocks disagree a little)


class PeerError(ValueError):
    """A CSR or a certificate that cannot be accepted (the message says why)."""


@dataclass(frozen=True)
class Identity:
    """Whom a verified certificate names."""

    role: Role
    name: str
    serial: str  # hex

    def __str__(self) -> str:
        return f"{self.role} {self.name}"


# ---- files -------------------------------------------------------------------------------------
def write_private(path: Path, data: bytes) -> None:
    """Write a file that is 0600 from its first byte, atomically (a temp file renamed)."""
    path.parent.mkdir(mode=0o700, parents=True, exist_ok=True)
    temp = path.with_name(f".{path.name}.{secrets.token_hex(4)}")
    fd = os.open(temp, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
    try:
        with os.fdopen(fd, "wb") as out:
            out.write(data)
            out.flush()
            os.fsync(out.fileno())
        os.replace(temp, path)
    except BaseException:
        with contextlib.suppress(OSError):
            temp.unlink()
        raise


def _new_key() -> ec.EllipticCurvePrivateKey:
    return ec.generate_private_key(ec.SECP256R1())


def _key_pem(key: ec.EllipticCurvePrivateKey) -> bytes:
    return key.private_bytes(
        serialization.Encoding.PEM,
        serialization.PrivateFormat.PKCS8,
        serialization.NoEncryption(),
    )


def _now() -> dt.datetime:
    return dt.datetime.now(dt.UTC)


def fingerprint(cert: x509.Certificate | bytes) -> str:
    """`SHA256:<hex>` of the certificate's DER (what `moorage ca fetch --fingerprint` takes)."""
    if isinstance(cert, bytes):
        cert = x509.load_pem_x509_certificate(cert)
    return "SHA256:" + hashlib.sha256(cert.public_bytes(serialization.Encoding.DER)).hexdigest()


def not_after(pem: bytes) -> float:
    return x509.load_pem_x509_certificate(pem).not_valid_after_utc.timestamp()


def serial_of(pem: bytes) -> str:
    return format(x509.load_pem_x509_certificate(pem).serial_number, "X")


def renewal_due(pem: bytes, now: float) -> bool:
    cert = x509.load_pem_x509_certificate(pem)
    start = cert.not_valid_before_utc.timestamp()
    end = cert.not_valid_after_utc.timestamp()
    return now >= end - (end - start) * RENEW_FRACTION


# ---- names -------------------------------------------------------------------------------------
def _sans(names: list[str]) -> list[x509.GeneralName]:
    out: list[x509.GeneralName] = []
    for name in names:
        try:
            out.append(x509.IPAddress(ipaddress.ip_address(name.strip("[]"))))
        except ValueError:
            out.append(x509.DNSName(name))
    return out


def _san_names(cert_or_csr: x509.Certificate | x509.CertificateSigningRequest) -> list[str]:
    try:
        ext = cert_or_csr.extensions.get_extension_for_class(x509.SubjectAlternativeName)
    except x509.ExtensionNotFound:
        return []
    names = [str(ip) for ip in ext.value.get_values_for_type(x509.IPAddress)]
    return names + list(ext.value.get_values_for_type(x509.DNSName))


def _canonical(name: str) -> str:
    """An address as certificates hold it (`[::1]`, `2001:DB8::1` → `::1`, `2001:db8::1`)."""
    try:
        return str(ipaddress.ip_address(name.strip("[]")))
    except ValueError:
        return name.lower()


def _pair(cert: x509.Certificate, key_pem: bytes) -> bool:
    """Whether the key file holds the certificate's key."""
    try:
        key = serialization.load_pem_private_key(key_pem, password=None)
    except (ValueError, TypeError):
        return False
    spki = serialization.PublicFormat.SubjectPublicKeyInfo
    der = serialization.Encoding.DER
    return bool(
        key.public_key().public_bytes(der, spki) == cert.public_key().public_bytes(der, spki)
    )


def _subject(role: Role, name: str) -> x509.Name:
    return x509.Name(
        [
            x509.NameAttribute(NameOID.ORGANIZATION_NAME, ORGANIZATION[role]),
            # the name alone (a CN holds at most 64 characters; node names up to 63)
            x509.NameAttribute(NameOID.COMMON_NAME, name),
        ]
    )


def identity_of(peercert: dict[str, Any] | None) -> Identity | None:
    """Whom a peer certificate (as `ssl` hands it over after verifying it) names, if anyone."""
    if not peercert:
        return None
    fields = {key: value for rdn in peercert.get("subject", ()) for key, value in rdn}
    organization, name = fields.get("organizationName"), str(fields.get("commonName", ""))
    roles = [role for role, org in ORGANIZATION.items() if org == organization]
    if not roles or not name:
        return None
    return Identity(roles[0], name, str(peercert.get("serialNumber", "")))


# ---- the authority -----------------------------------------------------------------------------
class Authority:
    """The cluster CA: its certificate and key, and what it signs."""

    def __init__(self, directory: Path, cert: x509.Certificate, key: ec.EllipticCurvePrivateKey):
        self.directory = directory
        self.cert = cert
        self._key = key

    @property
    def pem(self) -> bytes:
        return self.cert.public_bytes(serialization.Encoding.PEM)

    @property
    def path(self) -> Path:
        return self.directory / "ca.pem"

    @property
    def fingerprint(self) -> str:
        return fingerprint(self.cert)

    def sign(self, csr_pem: bytes, role: Role, name: str, days: int) -> bytes:
        """A certificate for the CSR's key naming `role` `name`, with the CSR's addresses as
        SANs; PeerError when the CSR is not one this CA signs."""
        try:
            csr = x509.load_pem_x509_csr(csr_pem)
        except ValueError:
            raise PeerError("not a PEM certificate signing request") from None
        if not csr.is_signature_valid:
            raise PeerError("the request's signature does not match its key")
        public_key = csr.public_key()
        strong_rsa = isinstance(public_key, rsa.RSAPublicKey) and public_key.key_size >= 2048
        strong_ec = isinstance(public_key, ec.EllipticCurvePublicKey) and isinstance(
            public_key.curve, ec.SECP256R1 | ec.SECP384R1 | ec.SECP521R1
        )
        if not (strong_ec or strong_rsa):
            raise PeerError(
                "the key must be an EC key on P-256, P-384 or P-521, or an RSA key of 2048 bits"
                " or more"
            )
        sans = _san_names(csr)
        if len(sans) > MAX_SANS:
            raise PeerError(f"at most {MAX_SANS} addresses in a request")
        return self._issue(public_key, role, name, sans, days)

    def _issue(self, public_key: Any, role: Role, name: str, sans: list[str], days: int) -> bytes:
        now = _now()
        builder = (
            x509.CertificateBuilder()
            .subject_name(_subject(role, name))
            .issuer_name(self.cert.subject)
            .public_key(public_key)
            .serial_number(x509.random_serial_number())
            .not_valid_before(now - SKEW)
            .not_valid_after(now + dt.timedelta(days=days))
            .add_extension(x509.BasicConstraints(ca=False, path_length=None), critical=True)
            .add_extension(
                x509.ExtendedKeyUsage(
                    [ExtendedKeyUsageOID.SERVER_AUTH, ExtendedKeyUsageOID.CLIENT_AUTH]
                ),
                critical=False,
            )
            .add_extension(
                x509.AuthorityKeyIdentifier.from_issuer_public_key(self._key.public_key()),
                critical=False,
            )
        )
        if sans:
            builder = builder.add_extension(x509.SubjectAlternativeName(_sans(sans)), False)
        cert = builder.sign(self._key, hashes.SHA256())
        return cert.public_bytes(serialization.Encoding.PEM)

    def server_certificate(self, name: str, sans: list[str]) -> tuple[Path, Path]:
        """The server's certificate and key files: kept while they cover `sans` and are not
        due for renewal, issued anew otherwise (a new key each time)."""
        cert_path, key_path = self.directory / "server.pem", self.directory / "server.key"
        wanted = sorted({_canonical(name) for name in sans})
        if cert_path.exists() and key_path.exists():
            pem = cert_path.read_bytes()
            cert = x509.load_pem_x509_certificate(pem)
            covered = set(wanted) <= set(_san_names(cert))
            issued_here = cert.issuer == self.cert.subject
            if (
                covered
                and issued_here
                and _pair(cert, key_path.read_bytes())  # a crash may have split a renewal
                and not renewal_due(pem, _now().timestamp())
            ):
                return cert_path, key_path
        key = _new_key()
        write_private(key_path, _key_pem(key))
        pem = self._issue(key.public_key(), "server", name, wanted, SERVER_DAYS)
        write_private(cert_path, pem)
        return cert_path, key_path


def load_or_create_authority(directory: Path) -> Authority:
    """The CA under `directory` (ca.pem, ca.key), created on first use."""
    directory.mkdir(mode=0o700, parents=True, exist_ok=True)
    cert_path, key_path = directory / "ca.pem", directory / "ca.key"
    if not (key_path.exists() and cert_path.exists()):  # one without the other is no CA
        key = _new_key()
        now = _now()
        subject = x509.Name(
            [
                x509.NameAttribute(NameOID.ORGANIZATION_NAME, "moorage"),
                x509.NameAttribute(
                    NameOID.COMMON_NAME, f"moorage cluster CA {secrets.token_hex(4)}"
                ),
            ]
        )
        cert = (
            x509.CertificateBuilder()
            .subject_name(subject)
            .issuer_name(subject)
            .public_key(key.public_key())
            .serial_number(x509.random_serial_number())
            .not_valid_before(now - SKEW)
            .not_valid_after(now + dt.timedelta(days=CA_DAYS))
            .add_extension(x509.BasicConstraints(ca=True, path_length=0), critical=True)
            .add_extension(
                x509.KeyUsage(
                    digital_signature=True,
                    content_commitment=False,
                    key_encipherment=False,
                    data_encipherment=False,
                    key_agreement=False,
                    key_cert_sign=True,
                    crl_sign=True,
                    encipher_only=False,
                    decipher_only=False,
                ),
                critical=True,
            )
            .add_extension(x509.SubjectKeyIdentifier.from_public_key(key.public_key()), False)
            .sign(key, hashes.SHA256())
        )
        write_private(key_path, _key_pem(key))
        write_private(cert_path, cert.public_bytes(serialization.Encoding.PEM))
    cert = x509.load_pem_x509_certificate(cert_path.read_bytes())
    loaded = serialization.load_pem_private_key(key_path.read_bytes(), password=None)
    if not isinstance(loaded, ec.EllipticCurvePrivateKey):
        raise PeerError(f"{key_path} is not an EC key")
    return Authority(directory, cert, loaded)


def key_and_csr(role: Role, name: str, sans: list[str]) -> tuple[bytes, bytes]:
    """A new private key (PEM) and a CSR for it naming `role` `name` with `sans`."""
    key = _new_key()
    builder = x509.CertificateSigningRequestBuilder().subject_name(_subject(role, name))
    if sans:
        builder = builder.add_extension(x509.SubjectAlternativeName(_sans(sans)), False)
    csr = builder.sign(key, hashes.SHA256())
    return _key_pem(key), csr.public_bytes(serialization.Encoding.PEM)


# ---- TLS contexts ------------------------------------------------------------------------------
def server_context(
    cert: Path, key: Path, ca: Path | None, clients: Literal["none", "optional", "required"]
) -> ssl.SSLContext:
    """A listening socket's context: our certificate; peers verified against the CA when
    `clients` asks for their certificates (identity then comes from `identity_of`)."""
    context = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
    context.minimum_version = ssl.TLSVersion.TLSv1_2
    context.load_cert_chain(cert, key)
    if clients != "none":
        assert ca is not None
        context.load_verify_locations(ca)
        context.verify_mode = ssl.CERT_REQUIRED if clients == "required" else ssl.CERT_OPTIONAL
    return context


def client_context(ca: Path, cert: Path | None = None, key: Path | None = None) -> ssl.SSLContext:
    """A connecting socket's context: the peer verified against the CA (and its address against
    its certificate's SANs); our own certificate presented when given."""
    context = ssl.create_default_context(ssl.Purpose.SERVER_AUTH, cafile=str(ca))
    context.minimum_version = ssl.TLSVersion.TLSv1_2
    if cert is not None and key is not None:
        context.load_cert_chain(cert, key)
    return context
