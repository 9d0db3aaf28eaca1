"""Node identities as operations: join, renew, revoke and lift, and the join token."""

from __future__ import annotations

import hashlib
import stat
from pathlib import Path

import pytest
from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import rsa
from cryptography.x509.oid import NameOID

from moorage.model import Conflict, Forbidden, NotFound, SpecError
from moorage.model.identity import JoinRequest, NodeCertificate
from moorage.ops.identity import JOIN_TOKEN, Identities, public_key_sha256, token_digest
from moorage.pki import Authority, key_and_csr, load_or_create_authority, parse_join_token
from moorage.pki.certs import MAX_SANS, NODE_DAYS, not_after, serial_of
from moorage.state import kinds
from moorage.testing.state import World

LONGEST = "n" + "a" * 61 + "1"  # 63 characters: the longest node name


@pytest.fixture
def authority(tmp_path: Path) -> Authority:
    return load_or_create_authority(tmp_path / "tls")


@pytest.fixture
def identities(world: World, authority: Authority, tmp_path: Path) -> Identities:
    return Identities(
        world.cache, world.writer, world.clock, authority, tmp_path / "server" / "join-token"
    )


def _key_and_csr(name: str = "n1") -> tuple[bytes, str]:
    key, csr = key_and_csr("node", name, ["127.0.0.1"])
    return key, csr.decode()


def _csr_for(key_pem: bytes, name: str = "n1") -> str:
    """Another request for a key the node already has (a node that lost only its certificate)."""
    key = serialization.load_pem_private_key(key_pem, password=None)
    subject = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, name)])
    csr = x509.CertificateSigningRequestBuilder().subject_name(subject).sign(key, hashes.SHA256())
    return csr.public_bytes(serialization.Encoding.PEM).decode()


def _serial(answer: NodeCertificate) -> str:
    return serial_of(answer.certificate.encode())


async def _join(identities: Identities, name: str = "n1", csr: str | None = None) -> str:
    """Join `name` (a new key unless `csr` is given); the new certificate's serial."""
    csr = csr if csr is not None else _key_and_csr(name)[1]
    return _serial(await identities.join(JoinRequest(name=name, csr=csr)))


# ---- join --------------------------------------------------------------------------------------
async def test_a_node_joins_and_its_certificate_speaks_for_it(
    world: World, identities: Identities, authority: Authority
) -> None:
    _key, csr = _key_and_csr(LONGEST)
    answer = await identities.join(JoinRequest(name=LONGEST, csr=csr))
    cert = x509.load_pem_x509_certificate(answer.certificate.encode())
    cert.verify_directly_issued_by(authority.cert)
    assert cert.subject.get_attributes_for_oid(NameOID.COMMON_NAME)[0].value == LONGEST
    assert cert.subject.get_attributes_for_oid(NameOID.ORGANIZATION_NAME)[0].value == (
        "moorage-node"
    )
    assert answer.ca == authority.pem.decode()
    assert answer.not_after == not_after(answer.certificate.encode())
    assert answer.not_after - world.clock() > (NODE_DAYS - 1) * 86400  # a real, 90-day one

    serial = _serial(answer)
    stored = world.cache.items(kinds.IDENTITY)[LONGEST]
    assert stored.key_sha256 == public_key_sha256(csr.encode())
    assert stored.serials == [serial]
    assert stored.not_after == answer.not_after
    assert stored.issued_at == world.clock()
    assert not stored.revoked

    assert identities.speaks_for(LONGEST, serial)
    assert identities.speaks_for(LONGEST, serial.lower())
    assert identities.speaks_for(LONGEST, "00" + serial)  # as ssl writes it: whole bytes
    assert not identities.speaks_for(LONGEST, "ABC123")
    assert not identities.speaks_for(LONGEST, "not hex")
    assert not identities.speaks_for("n2", serial)  # another node's name

    event = world.cache.events[-1]
    assert (event.type, event.node) == ("node.joined", LONGEST)
    assert serial in event.message


async def test_the_same_key_may_join_again_and_two_serials_are_kept(
    world: World, identities: Identities
) -> None:
    key, csr = _key_and_csr()
    first = await _join(identities, csr=csr)
    world.clock.advance(60)
    second = await _join(identities, csr=_csr_for(key))
    assert world.cache.items(kinds.IDENTITY)["n1"].serials == [second, first]
    assert world.cache.items(kinds.IDENTITY)["n1"].issued_at == world.clock()
    assert identities.speaks_for("n1", first) and identities.speaks_for("n1", second)
    third = await _join(identities, csr=_csr_for(key))
    assert world.cache.items(kinds.IDENTITY)["n1"].serials == [third, second]
    assert not identities.speaks_for("n1", first)


async def test_another_key_may_not_take_a_joined_name(world: World, identities: Identities) -> None:
    serial = await _join(identities)
    before = world.cache.items(kinds.IDENTITY)["n1"]
    with pytest.raises(Conflict, match="another key"):
        await _join(identities)
    assert world.cache.items(kinds.IDENTITY)["n1"] == before
    assert identities.speaks_for("n1", serial)
    # other names are free
    assert identities.speaks_for("n2", await _join(identities, "n2"))


@pytest.mark.parametrize(
    ("csr", "message"),
    [
        ("not a request", "not a PEM certificate request"),
        (
            x509.CertificateSigningRequestBuilder()
            .subject_name(x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, "n1")]))
            .sign(rsa.generate_private_key(public_exponent=65537, key_size=1024), hashes.SHA256())
            .public_bytes(serialization.Encoding.PEM)
            .decode(),
            "2048 bits",
        ),
        (
            key_and_csr("node", "n1", [f"10.0.0.{i}" for i in range(MAX_SANS + 1)])[1].decode(),
            f"at most {MAX_SANS} addresses",
        ),
    ],
    ids=["junk", "weak-key", "too-many-addresses"],
)
async def test_a_request_the_ca_does_not_sign_is_a_csr_field_error(
    world: World, identities: Identities, csr: str, message: str
) -> None:
    with pytest.raises(SpecError) as caught:
        await identities.join(JoinRequest(name="n1", csr=csr))
    assert [error.field for error in caught.value.errors] == ["csr"]
    assert message in caught.value.errors[0].message
    assert "n1" not in world.cache.items(kinds.IDENTITY)


# ---- revoke and lift ---------------------------------------------------------------------------
async def test_a_revoked_node_speaks_no_more_and_may_not_join_until_lifted(
    world: World, identities: Identities
) -> None:
    key, csr = _key_and_csr()
    first = await _join(identities, csr=csr)
    second = await _join(identities, csr=_csr_for(key))
    world.clock.advance(10)

    revoked = await identities.revoke("n1")
    assert revoked.revoked and revoked.revoked_at == world.clock()
    assert revoked.serials == []
    assert world.cache.items(kinds.IDENTITY)["n1"] == revoked
    assert not identities.speaks_for("n1", first)
    assert not identities.speaks_for("n1", second)
    assert (world.cache.events[-1].type, world.cache.events[-1].node) == ("node.revoked", "n1")

    with pytest.raises(Forbidden, match="--lift"):  # refused with its own key too
        await _join(identities, csr=_csr_for(key))
    with pytest.raises(Forbidden):
        await _join(identities)
    with pytest.raises(Forbidden):
        await identities.renew("n1", _csr_for(key))
    assert world.cache.items(kinds.IDENTITY)["n1"].serials == []

    lifted = await identities.revoke("n1", lift=True)
    assert not lifted.revoked and lifted.revoked_at is None
    assert world.cache.events[-1].type == "node.revocation_lifted"
    assert not identities.speaks_for("n1", second)  # lifting restores no certificate
    again = await _join(identities, csr=_csr_for(key))
    assert identities.speaks_for("n1", again)
    assert world.cache.items(kinds.IDENTITY)["n1"].serials == [again]


async def test_a_replaced_machine_joins_after_revoke_and_lift(identities: Identities) -> None:
    await _join(identities)
    await identities.revoke("n1")
    await identities.revoke("n1", lift=True)
    assert identities.speaks_for("n1", await _join(identities))  # a new machine: a new key


async def test_an_unknown_node_cannot_be_revoked_or_lifted(
    world: World, identities: Identities
) -> None:
    with pytest.raises(NotFound):
        await identities.revoke("ghost")
    with pytest.raises(NotFound):
        await identities.revoke("ghost", lift=True)
    assert world.cache.items(kinds.IDENTITY) == {}


# ---- renew -------------------------------------------------------------------------------------
async def test_a_renewed_certificate_speaks_and_so_does_the_one_it_replaced(
    world: World, identities: Identities, authority: Authority
) -> None:
    first = await _join(identities)
    world.clock.advance(3600)
    _key, csr = _key_and_csr()  # a renewal may bring a new key
    answer = await identities.renew("n1", csr)
    x509.load_pem_x509_certificate(answer.certificate.encode()).verify_directly_issued_by(
        authority.cert
    )
    second = _serial(answer)
    stored = world.cache.items(kinds.IDENTITY)["n1"]
    assert stored.serials == [second, first]
    assert stored.key_sha256 == public_key_sha256(csr.encode())
    assert stored.issued_at == world.clock()
    assert stored.not_after == answer.not_after
    assert identities.speaks_for("n1", first) and identities.speaks_for("n1", second)

    third = _serial(await identities.renew("n1", _key_and_csr()[1]))
    assert world.cache.items(kinds.IDENTITY)["n1"].serials == [third, second]
    assert not identities.speaks_for("n1", first)


async def test_a_node_that_never_joined_cannot_renew(world: World, identities: Identities) -> None:
    with pytest.raises(Forbidden, match="join again"):
        await identities.renew("ghost", _key_and_csr("ghost")[1])
    assert world.cache.items(kinds.IDENTITY) == {}


# ---- the join token ----------------------------------------------------------------------------
async def test_the_join_token_kept_is_known_by_its_digest_only(
    world: World, identities: Identities
) -> None:
    assert identities.join_token_digest() is None
    await identities.keep_join_token("mrg1:token-one")
    digest = hashlib.sha256(b"mrg1:token-one").hexdigest()
    assert identities.join_token_digest() == digest == token_digest("mrg1:token-one")
    assert world.cache.meta[JOIN_TOKEN] == digest.encode()
    stored, _ = await world.store.range("/moorage/")
    assert all(b"token-one" not in kv.value for kv in stored)

    revision = world.cache.revision
    await identities.keep_join_token("mrg1:token-one")  # already the one: nothing written
    assert world.cache.revision == revision
    await identities.keep_join_token("mrg1:token-two")
    assert world.cache.revision > revision
    assert identities.join_token_digest() == token_digest("mrg1:token-two")


async def test_rotating_the_join_token_writes_a_private_file_and_a_new_digest(
    world: World, identities: Identities, authority: Authority
) -> None:
    await identities.keep_join_token("mrg1:the-old-one")
    token = await identities.rotate_join_token()
    assert parse_join_token(token).ca_fingerprint == authority.fingerprint
    assert identities.join_token_digest() == token_digest(token)
    path = identities.token_path
    assert path is not None
    assert path.read_text() == token + "\n"
    assert stat.S_IMODE(path.stat().st_mode) == 0o600
    assert world.cache.events[-1].type == "cluster.join_token"

    path.chmod(0o644)
    newer = await identities.rotate_join_token()
    assert newer != token
    assert identities.join_token_digest() == token_digest(newer)
    assert path.read_text() == newer + "\n"
    assert stat.S_IMODE(path.stat().st_mode) == 0o600


async def test_a_join_token_may_rotate_without_a_file(
    world: World, authority: Authority, tmp_path: Path
) -> None:
    identities = Identities(world.cache, world.writer, world.clock, authority)
    token = await identities.rotate_join_token()
    assert identities.join_token_digest() == token_digest(token)
    assert [p.name for p in tmp_path.iterdir()] == ["tls"]
