"""Join tokens: `mrg1:<CA sha256>:<secret>`, pinning the cluster CA."""

from __future__ import annotations

import re
from pathlib import Path

import pytest

from moorage.pki import JoinToken, load_or_create_authority, parse_join_token
from moorage.pki.tokens import new_join_token

HEX = "ab" * 32


def test_a_new_token_round_trips_and_pins_the_ca(tmp_path: Path) -> None:
    authority = load_or_create_authority(tmp_path / "tls")
    token = new_join_token(authority.fingerprint)
    assert re.fullmatch(r"mrg1:[0-9a-f]{64}:[A-Za-z0-9_-]{43}", token)
    parsed = parse_join_token(token)
    assert parsed == JoinToken(token, authority.fingerprint.removeprefix("SHA256:"))
    assert parsed.ca_fingerprint == authority.fingerprint


def test_every_new_token_has_its_own_secret() -> None:
    tokens = {new_join_token(f"SHA256:{HEX}") for _ in range(20)}
    assert len(tokens) == 20
    assert {parse_join_token(t).ca_sha256 for t in tokens} == {HEX}


def test_the_fingerprint_is_taken_with_or_without_its_prefix_in_any_case() -> None:
    assert parse_join_token(new_join_token(HEX)).ca_sha256 == HEX
    assert parse_join_token(new_join_token(f"SHA256:{HEX.upper()}")).ca_sha256 == HEX


def test_a_token_read_from_a_file_is_stripped() -> None:
    token = new_join_token(f"SHA256:{HEX}")
    parsed = parse_join_token(f"  {token}\n")
    assert parsed.value == token
    assert parsed.ca_sha256 == HEX


@pytest.mark.parametrize(
    "text",
    [
        "s3cret-from-an-older-data-dir",  # no pin at all
        f"mrg1:{HEX[:-1]}:{'x' * 43}",  # 63 hex digits
        f"mrg1:{HEX}0:{'x' * 43}",  # 65 hex digits
        f"mrg1:{HEX.upper()}:{'x' * 43}",  # the pin is lowercase hex
        f"mrg1:{'g' * 64}:{'x' * 43}",  # not hex
        f"mrg1:{HEX}:{'x' * 19}",  # a secret too short to be one
        f"mrg1:{HEX}:{'x' * 42}!",  # a character no token secret has
        f"mrg2:{HEX}:{'x' * 43}",  # another version
        f"mrg1:{HEX}",  # no secret
        f"mrg1:{HEX}:{'x' * 43}:more",
    ],
)
def test_a_token_that_is_not_a_pinned_one_pins_nothing(text: str) -> None:
    # by design it does not raise: the whole text is still the token (the server compares its
    # SHA-256), but nothing in it is trusted as the CA's fingerprint (`--ca-cert` is needed)
    parsed = parse_join_token(text)
    assert parsed.value == text
    assert parsed.ca_sha256 is None
    assert parsed.ca_fingerprint is None
