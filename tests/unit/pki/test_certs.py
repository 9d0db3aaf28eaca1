"""The cluster CA, what it signs, whom a peer certificate names, and TLS between its certificates."""

from __future__ import annotations

import datetime as dt
import hashlib
import ipaddress
import socket
import ssl
import stat
import threading
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest
from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec, ed25519, rsa
from cryptography.x509.oid import ExtendedKeyUsageOID, NameOID

from moorage.pki import (
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
from moorage.pki.certs import MAX_SANS, renewal_due, write_private

LONGEST = "n" + "a" * 61 + "1"  # 63 characters: the longest node name (a DNS label)
TIMEOUT = 5.0  # seconds any socket operation may block in the handshake tests


# ---- helpers -----------------------------------------------------------------------------------
def _mode(path: Path) -> int:
    return stat.S_IMODE(path.stat().st_mode)


def _cert(pem: bytes) -> x509.Certificate:
    return x509.load_pem_x509_certificate(pem)


def _subject(cert: x509.Certificate | x509.CertificateSigningRequest) -> dict[str, str]:
    oids = {NameOID.ORGANIZATION_NAME: "O", NameOID.COMMON_NAME: "CN"}
    return {oids[attr.oid]: str(attr.value) for attr in cert.subject if attr.oid in oids}


def _sans_of(cert: x509.Certificate | x509.CertificateSigningRequest) -> set[str]:
    try:
        ext = cert.extensions.get_extension_for_class(x509.SubjectAlternativeName).value
    except x509.ExtensionNotFound:
        return set()
    ips = {str(ip) for ip in ext.get_values_for_type(x509.IPAddress)}
    return ips | set(ext.get_values_for_type(x509.DNSName))


def _peercert(pem: bytes) -> dict[str, Any]:
    """The dict `ssl.SSLSocket.getpeercert()` gives for this certificate (subject and serial)."""
    names = {NameOID.ORGANIZATION_NAME: "organizationName", NameOID.COMMON_NAME: "commonName"}
    cert = _cert(pem)
    subject = tuple(((names[a.oid], str(a.value)),) for a in cert.subject if a.oid in names)
    return {"subject": subject, "serialNumber": serial_of(pem)}


def _csr(key: Any, sans: list[str] | None = None, cn: str = "n1") -> bytes:
    """A CSR for any key (the ones `key_and_csr` would never make)."""
    builder = x509.CertificateSigningRequestBuilder().subject_name(
        x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, cn)])
    )
    if sans:
        names = [x509.DNSName(name) for name in sans]
        builder = builder.add_extension(x509.SubjectAlternativeName(names), critical=False)
    algorithm = None if isinstance(key, ed25519.Ed25519PrivateKey) else hashes.SHA256()
    return builder.sign(key, algorithm).public_bytes(serialization.Encoding.PEM)


@pytest.fixture
def authority(tmp_path: Path) -> Authority:
    return load_or_create_authority(tmp_path / "tls")


# ---- whom a certificate names ------------------------------------------------------------------
def test_a_63_character_node_name_is_certified_and_read_back(authority: Authority) -> None:
    # the common name used to be `node:<name>`: 68 characters, past X.509's 64
    assert len(LONGEST) == 63
    _key, csr = key_and_csr("node", LONGEST, ["127.0.0.1"])
    pem = authority.sign(csr, "node", LONGEST, NODE_DAYS)
    assert _subject(_cert(pem)) == {"O": "moorage-node", "CN": LONGEST}
    identity = identity_of(_peercert(pem))
    assert identity == Identity("node", LONGEST, serial_of(pem))
    assert str(identity) == f"node {LONGEST}"


def test_the_role_is_the_organization_and_the_name_the_common_name(authority: Authority) -> None:
    _key, csr = key_and_csr("server", "s1", [])
    pem = authority.sign(csr, "server", "s1", 30)
    assert _subject(_cert(pem)) == {"O": "moorage-server", "CN": "s1"}
    assert identity_of(_peercert(pem)) == Identity("server", "s1", serial_of(pem))


@pytest.mark.parametrize(
    "peercert",
    [
        None,
        {},
        # another organization: the CA's own, and a stranger's
        {"subject": ((("organizationName", "moorage"),), (("commonName", "n1"),))},
        {"subject": ((("organizationName", "evil-corp"),), (("commonName", "n1"),))},
        # a role spelled as the old common-name prefix is no role
        {"subject": ((("commonName", "node:n1"),),)},
        # a role but no name
        {"subject": ((("organizationName", "moorage-node"),),)},
        {"subject": ((("organizationName", "moorage-node"),), (("commonName", ""),))},
    ],
)
def test_a_certificate_naming_no_known_role_and_name_names_nobody(
    peercert: dict[str, Any] | None,
) -> None:
    assert identity_of(peercert) is None


def test_identity_of_reads_the_shape_ssl_hands_over() -> None:
    peercert = {
        "subject": ((("organizationName", "moorage-node"),), (("commonName", "n1"),)),
        "issuer": ((("organizationName", "moorage"),),),
        "serialNumber": "1A2B",
    }
    assert identity_of(peercert) == Identity("node", "n1", "1A2B")


# ---- the authority -----------------------------------------------------------------------------
def test_the_authority_is_created_once_and_reloaded(tmp_path: Path) -> None:
    directory = tmp_path / "data" / "tls"
    first = load_or_create_authority(directory)
    key_file = directory / "ca.key"
    assert _mode(key_file) == 0o600
    assert _mode(directory) == 0o700
    assert first.path == directory / "ca.pem"
    assert first.path.read_bytes() == first.pem
    key_before = key_file.read_bytes()

    again = load_or_create_authority(directory)
    assert again.fingerprint == first.fingerprint
    assert again.pem == first.pem
    assert key_file.read_bytes() == key_before  # not replaced
    # the reloaded key is the same key: what it signs verifies against the first certificate
    _key, csr = key_and_csr("node", "n1", [])
    _cert(again.sign(csr, "node", "n1", 1)).verify_directly_issued_by(first.cert)

    other = load_or_create_authority(tmp_path / "other")
    assert other.fingerprint != first.fingerprint


def test_the_authority_certificate_is_a_ca(authority: Authority) -> None:
    constraints = authority.cert.extensions.get_extension_for_class(x509.BasicConstraints)
    assert constraints.critical and constraints.value.ca
    usage = authority.cert.extensions.get_extension_for_class(x509.KeyUsage).value
    assert usage.key_cert_sign and usage.crl_sign
    assert authority.cert.issuer == authority.cert.subject
    lifetime = authority.cert.not_valid_after_utc - dt.datetime.now(dt.UTC)
    assert dt.timedelta(days=3649) < lifetime <= dt.timedelta(days=3650)


def test_a_ca_key_that_is_not_ec_is_refused(tmp_path: Path) -> None:
    directory = tmp_path / "tls"
    load_or_create_authority(directory)
    rsa_key = rsa.generate_private_key(public_exponent=65537, key_size=1024)
    pem = rsa_key.private_bytes(
        serialization.Encoding.PEM,
        serialization.PrivateFormat.PKCS8,
        serialization.NoEncryption(),
    )
    (directory / "ca.key").write_bytes(pem)
    with pytest.raises(PeerError, match="not an EC key"):
        load_or_create_authority(directory)


def test_fingerprint_is_the_sha256_of_the_der(authority: Authority) -> None:
    der = authority.cert.public_bytes(serialization.Encoding.DER)
    expected = "SHA256:" + hashlib.sha256(der).hexdigest()
    assert authority.fingerprint == expected
    assert fingerprint(authority.cert) == expected
    assert fingerprint(authority.pem) == expected  # PEM bytes are read too


# ---- signing -----------------------------------------------------------------------------------
def test_a_signed_certificate_names_whom_the_authority_says(authority: Authority) -> None:
    # the CSR asks for a server certificate for "admin"; the authority decides who it names
    _key, csr = key_and_csr("server", "admin", ["10.0.0.7", "[::1]", "n1.example"])
    before = dt.datetime.now(dt.UTC)
    pem = authority.sign(csr, "node", "n1", NODE_DAYS)
    cert = _cert(pem)
    cert.verify_directly_issued_by(authority.cert)
    assert _subject(cert) == {"O": "moorage-node", "CN": "n1"}
    assert cert.issuer == authority.cert.subject
    assert _sans_of(cert) == {"10.0.0.7", "::1", "n1.example"}
    assert cert.public_key() == x509.load_pem_x509_csr(csr).public_key()
    constraints = cert.extensions.get_extension_for_class(x509.BasicConstraints).value
    assert not constraints.ca
    usages = cert.extensions.get_extension_for_class(x509.ExtendedKeyUsage).value
    assert set(usages) == {ExtendedKeyUsageOID.SERVER_AUTH, ExtendedKeyUsageOID.CLIENT_AUTH}
    # valid from a little before now (clocks disagree) for NODE_DAYS
    assert cert.not_valid_before_utc < before
    assert before - cert.not_valid_before_utc <= dt.timedelta(minutes=6)
    expected_end = before + dt.timedelta(days=NODE_DAYS)
    assert abs(cert.not_valid_after_utc - expected_end) < dt.timedelta(minutes=1)
    assert not_after(pem) == cert.not_valid_after_utc.timestamp()
    assert serial_of(pem) == format(cert.serial_number, "X")


def test_every_certificate_gets_its_own_serial(authority: Authority) -> None:
    _key, csr = key_and_csr("node", "n1", [])
    serials = {serial_of(authority.sign(csr, "node", "n1", 1)) for _ in range(5)}
    assert len(serials) == 5


def test_a_csr_with_an_rsa_key_of_2048_bits_is_signed(authority: Authority) -> None:
    key = rsa.generate_private_key(public_exponent=65537, key_size=2048)
    pem = authority.sign(_csr(key), "node", "n1", 1)
    assert _cert(pem).public_key().public_numbers() == key.public_key().public_numbers()


@pytest.mark.parametrize(
    "key",
    [
        pytest.param(rsa.generate_private_key(public_exponent=65537, key_size=1024), id="rsa1024"),
        pytest.param(ed25519.Ed25519PrivateKey.generate(), id="ed25519"),
    ],
)
def test_a_csr_with_a_weak_or_foreign_key_is_refused(authority: Authority, key: Any) -> None:
    with pytest.raises(PeerError, match="RSA key of 2048 bits or more"):
        authority.sign(_csr(key), "node", "n1", 1)


def test_a_csr_with_an_ec_key_on_a_weak_curve_is_refused(authority: Authority) -> None:
    key = ec.generate_private_key(ec.SECP192R1())
    with pytest.raises(PeerError):
        authority.sign(_csr(key), "node", "n1", 1)


def test_a_csr_with_at_most_16_addresses_is_signed_with_more_refused(
    authority: Authority,
) -> None:
    names = [f"10.0.0.{i}" for i in range(1, MAX_SANS + 2)]
    _key, enough = key_and_csr("node", "n1", names[:MAX_SANS])
    assert len(_sans_of(_cert(authority.sign(enough, "node", "n1", 1)))) == MAX_SANS
    _key, too_many = key_and_csr("node", "n1", names)
    with pytest.raises(PeerError, match=f"at most {MAX_SANS} addresses"):
        authority.sign(too_many, "node", "n1", 1)


@pytest.mark.parametrize(
    "junk",
    [
        b"",
        b"hello",
        b"-----BEGIN CERTIFICATE REQUEST-----\nAAAA\n-----END CERTIFICATE REQUEST-----\n",
    ],
)
def test_what_is_not_a_csr_is_refused(authority: Authority, junk: bytes) -> None:
    with pytest.raises(PeerError, match="not a PEM certificate signing request"):
        authority.sign(junk, "node", "n1", 1)


def test_a_certificate_is_not_taken_for_a_csr(authority: Authority) -> None:
    with pytest.raises(PeerError, match="not a PEM certificate signing request"):
        authority.sign(authority.pem, "node", "n1", 1)


def test_a_csr_whose_signature_does_not_match_is_refused(authority: Authority) -> None:
    _key, pem = key_and_csr("node", "n1", [])
    der = bytearray(x509.load_pem_x509_csr(pem).public_bytes(serialization.Encoding.DER))
    at = der.index(b"moorage-node")
    der[at] = ord("M")  # the signed subject changed after signing
    tampered = x509.load_der_x509_csr(bytes(der)).public_bytes(serialization.Encoding.PEM)
    with pytest.raises(PeerError, match="signature does not match"):
        authority.sign(tampered, "node", "n1", 1)


def test_key_and_csr_makes_a_p256_key_and_a_request_naming_it() -> None:
    key_pem, csr_pem = key_and_csr("node", "n1", ["127.0.0.1", "[::1]", "n1.local"])
    key = serialization.load_pem_private_key(key_pem, password=None)
    assert isinstance(key, ec.EllipticCurvePrivateKey)
    assert isinstance(key.curve, ec.SECP256R1)
    assert b"ENCRYPTED" not in key_pem
    csr = x509.load_pem_x509_csr(csr_pem)
    assert csr.is_signature_valid
    assert csr.public_key() == key.public_key()
    assert _subject(csr) == {"O": "moorage-node", "CN": "n1"}
    assert _sans_of(csr) == {"127.0.0.1", "::1", "n1.local"}
    ext = csr.extensions.get_extension_for_class(x509.SubjectAlternativeName).value
    assert ipaddress.ip_address("::1") in ext.get_values_for_type(x509.IPAddress)
    assert _sans_of(x509.load_pem_x509_csr(key_and_csr("node", "n1", [])[1])) == set()


# ---- renewal -----------------------------------------------------------------------------------
def test_renewal_is_due_once_a_third_of_the_lifetime_is_left(authority: Authority) -> None:
    _key, csr = key_and_csr("node", "n1", [])
    pem = authority.sign(csr, "node", "n1", NODE_DAYS)
    cert = _cert(pem)
    start = cert.not_valid_before_utc.timestamp()
    end = cert.not_valid_after_utc.timestamp()
    due = end - (end - start) / 3
    assert not renewal_due(pem, time.time())
    assert not renewal_due(pem, due - 1)
    assert renewal_due(pem, due)
    assert renewal_due(pem, end + 1)
    assert due - time.time() == pytest.approx(60 * 86400, abs=3600)  # 90 days: after 60


# ---- files -------------------------------------------------------------------------------------
def test_write_private_creates_a_0600_file_in_a_0700_directory(tmp_path: Path) -> None:
    path = tmp_path / "a" / "b" / "secret.key"
    write_private(path, b"one")
    assert path.read_bytes() == b"one"
    assert _mode(path) == 0o600
    assert _mode(path.parent) == 0o700
    assert sorted(p.name for p in path.parent.iterdir()) == ["secret.key"]


def test_write_private_replaces_an_open_file_with_a_private_one(tmp_path: Path) -> None:
    path = tmp_path / "secret.key"
    path.write_bytes(b"old, and readable by all")
    path.chmod(0o644)
    write_private(path, b"new")
    assert path.read_bytes() == b"new"
    assert _mode(path) == 0o600
    assert sorted(p.name for p in tmp_path.iterdir()) == ["secret.key"]  # no temp left


def test_write_private_leaves_no_temp_file_when_it_fails(tmp_path: Path) -> None:
    target = tmp_path / "taken"
    target.mkdir()
    (target / "inside").write_bytes(b"x")  # a non-empty directory cannot be replaced
    with pytest.raises(OSError):
        write_private(target, b"data")
    assert sorted(p.name for p in tmp_path.iterdir()) == ["taken"]
    assert (target / "inside").read_bytes() == b"x"


# ---- the server's certificate ------------------------------------------------------------------
def test_the_server_certificate_is_issued_then_kept(authority: Authority) -> None:
    cert_path, key_path = authority.server_certificate("s1", ["localhost", "127.0.0.1"])
    assert (cert_path, key_path) == (
        authority.directory / "server.pem",
        authority.directory / "server.key",
    )
    assert _mode(key_path) == 0o600
    pem = cert_path.read_bytes()
    cert = _cert(pem)
    cert.verify_directly_issued_by(authority.cert)
    assert _subject(cert) == {"O": "moorage-server", "CN": "s1"}
    assert _sans_of(cert) == {"localhost", "127.0.0.1"}
    key = serialization.load_pem_private_key(key_path.read_bytes(), password=None)
    assert key.public_key() == cert.public_key()
    lifetime = cert.not_valid_after_utc - dt.datetime.now(dt.UTC)
    assert dt.timedelta(days=364) < lifetime <= dt.timedelta(days=365)

    # the same names, in another order and repeated: kept as they are
    key_pem = key_path.read_bytes()
    authority.server_certificate("s1", ["127.0.0.1", "localhost", "localhost"])
    assert cert_path.read_bytes() == pem
    assert key_path.read_bytes() == key_pem
    # fewer names are covered as well
    authority.server_certificate("s1", ["localhost"])
    assert cert_path.read_bytes() == pem


def test_the_server_certificate_is_issued_anew_for_a_new_name(authority: Authority) -> None:
    cert_path, key_path = authority.server_certificate("s1", ["127.0.0.1"])
    pem, key_pem = cert_path.read_bytes(), key_path.read_bytes()
    authority.server_certificate("s1", ["127.0.0.1", "10.1.2.3"])
    assert serial_of(cert_path.read_bytes()) != serial_of(pem)
    assert key_path.read_bytes() != key_pem  # a new key each time
    assert _sans_of(_cert(cert_path.read_bytes())) == {"127.0.0.1", "10.1.2.3"}


def test_the_server_certificate_is_issued_anew_when_due_for_renewal(
    authority: Authority,
) -> None:
    key, csr = key_and_csr("server", "s1", ["127.0.0.1"])
    expiring = authority.sign(csr, "server", "s1", 0)  # ends now: renewal long due
    write_private(authority.directory / "server.key", key)
    write_private(authority.directory / "server.pem", expiring)
    cert_path, _key_path = authority.server_certificate("s1", ["127.0.0.1"])
    renewed = cert_path.read_bytes()
    assert serial_of(renewed) != serial_of(expiring)
    assert not renewal_due(renewed, time.time())


def test_a_server_certificate_of_another_ca_is_replaced(tmp_path: Path) -> None:
    other = load_or_create_authority(tmp_path / "other")
    foreign_cert, foreign_key = other.server_certificate("s1", ["127.0.0.1"])
    authority = load_or_create_authority(tmp_path / "tls")
    (authority.directory / "server.pem").write_bytes(foreign_cert.read_bytes())
    (authority.directory / "server.key").write_bytes(foreign_key.read_bytes())
    cert_path, _key_path = authority.server_certificate("s1", ["127.0.0.1"])
    _cert(cert_path.read_bytes()).verify_directly_issued_by(authority.cert)


# ---- TLS between certificates of the CA --------------------------------------------------------
@dataclass
class Pki:
    authority: Authority
    server_cert: Path
    server_key: Path
    node_cert: Path
    node_key: Path
    node_serial: str


def _node_files(authority: Authority, directory: Path, name: str) -> tuple[Path, Path, str]:
    key, csr = key_and_csr("node", name, ["127.0.0.1"])
    pem = authority.sign(csr, "node", name, NODE_DAYS)
    write_private(directory / "node.key", key)
    write_private(directory / "node.pem", pem)
    return directory / "node.pem", directory / "node.key", serial_of(pem)


@pytest.fixture
def pki(tmp_path: Path, authority: Authority) -> Pki:
    server_cert, server_key = authority.server_certificate("srv", ["127.0.0.1", "localhost"])
    node_cert, node_key, serial = _node_files(authority, tmp_path / "agent", LONGEST)
    return Pki(authority, server_cert, server_key, node_cert, node_key, serial)


@pytest.fixture
def stranger(tmp_path: Path) -> Pki:
    """The same files, from another CA."""
    other = load_or_create_authority(tmp_path / "stranger")
    server_cert, server_key = other.server_certificate("srv", ["127.0.0.1", "localhost"])
    node_cert, node_key, serial = _node_files(other, tmp_path / "stranger-agent", "n1")
    return Pki(other, server_cert, server_key, node_cert, node_key, serial)


@dataclass
class Handshake:
    server: dict[str, Any] | Exception | None  # the client's certificate as the server saw it
    client: dict[str, Any] | Exception  # the server's certificate as the client saw it
    received: bytes  # what the client read after the handshake (the server sends b"ok")


def _handshake(
    server: ssl.SSLContext, client: ssl.SSLContext, hostname: str = "127.0.0.1"
) -> Handshake:
    """A TLS handshake over a socket pair, the server's side in a thread; every blocking call
    bounded by TIMEOUT."""
    left, right = socket.socketpair()
    left.settimeout(TIMEOUT)
    right.settimeout(TIMEOUT)
    seen: dict[str, Any] = {}

    def serve() -> None:
        try:
            with server.wrap_socket(left, server_side=True) as tls:
                seen["server"] = tls.getpeercert()
                tls.sendall(b"ok")
        except (ssl.SSLError, OSError) as exc:
            seen["server"] = exc

    thread = threading.Thread(target=serve, name="tls-server", daemon=True)
    thread.start()
    received = b""
    try:
        with client.wrap_socket(right, server_hostname=hostname) as tls:
            seen["client"] = tls.getpeercert()
            try:
                received = tls.recv(2)
            except (ssl.SSLError, OSError):
                received = b""
    except (ssl.SSLError, OSError) as exc:
        seen["client"] = exc
    finally:
        thread.join(TIMEOUT)
        left.close()
        right.close()
    assert not thread.is_alive(), "the server side of the handshake hung"
    return Handshake(seen["server"], seen["client"], received)


def test_tls_between_certificates_of_the_ca_works_and_names_both_ends(pki: Pki) -> None:
    server = server_context(pki.server_cert, pki.server_key, pki.authority.path, "required")
    client = client_context(pki.authority.path, pki.node_cert, pki.node_key)
    assert server.minimum_version == client.minimum_version == ssl.TLSVersion.TLSv1_2
    done = _handshake(server, client)
    assert isinstance(done.server, dict) and isinstance(done.client, dict)
    node, server_end = identity_of(done.server), identity_of(done.client)
    assert node is not None and (node.role, node.name) == ("node", LONGEST)
    assert server_end is not None and (server_end.role, server_end.name) == ("server", "srv")
    # ssl writes serials in whole bytes (a leading 0 at times), serial_of does not: same number
    assert int(node.serial, 16) == int(pki.node_serial, 16)
    assert int(server_end.serial, 16) == int(serial_of(pki.server_cert.read_bytes()), 16)
    assert done.received == b"ok"


def test_a_server_certificate_from_another_ca_is_refused(pki: Pki, stranger: Pki) -> None:
    server = server_context(stranger.server_cert, stranger.server_key, None, "none")
    client = client_context(pki.authority.path, pki.node_cert, pki.node_key)
    done = _handshake(server, client)
    assert isinstance(done.client, ssl.SSLCertVerificationError)
    assert isinstance(done.server, ssl.SSLError)
    assert done.received == b""


def test_a_client_certificate_from_another_ca_is_refused(pki: Pki, stranger: Pki) -> None:
    server = server_context(pki.server_cert, pki.server_key, pki.authority.path, "required")
    client = client_context(pki.authority.path, stranger.node_cert, stranger.node_key)
    done = _handshake(server, client)
    assert isinstance(done.server, ssl.SSLError)
    assert done.received != b"ok"  # TLS 1.3: the client learns it after its own handshake
    # optional client certificates are still verified when presented
    optional = server_context(pki.server_cert, pki.server_key, pki.authority.path, "optional")
    assert isinstance(_handshake(optional, client).server, ssl.SSLError)


def test_a_server_must_be_certified_for_the_address_called(pki: Pki) -> None:
    server = server_context(pki.server_cert, pki.server_key, None, "none")
    client = client_context(pki.authority.path)
    assert isinstance(_handshake(server, client, "localhost").client, dict)
    done = _handshake(server, client, "10.9.9.9")
    assert isinstance(done.client, ssl.SSLCertVerificationError)
    assert "10.9.9.9" in str(done.client)


def test_client_certificates_required_optional_or_not_asked(pki: Pki) -> None:
    anonymous = client_context(pki.authority.path)
    required = server_context(pki.server_cert, pki.server_key, pki.authority.path, "required")
    refused = _handshake(required, anonymous)
    assert isinstance(refused.server, ssl.SSLError)
    assert refused.received != b"ok"

    optional = server_context(pki.server_cert, pki.server_key, pki.authority.path, "optional")
    done = _handshake(optional, anonymous)
    assert done.server is None and identity_of(done.server) is None  # no certificate: nobody
    assert done.received == b"ok"

    node = client_context(pki.authority.path, pki.node_cert, pki.node_key)
    not_asked = server_context(pki.server_cert, pki.server_key, None, "none")
    done = _handshake(not_asked, node)
    assert done.server is None and done.received == b"ok"  # not asked for: not seen
