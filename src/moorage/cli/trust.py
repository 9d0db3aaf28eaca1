"""Trust: the cluster CA a client checks the server against, and the join token.

moorage ca fetch --fingerprint SHA256:<hex>   first contact, as SSH's known hosts: the CA
                                               is fetched, checked against the fingerprint
                                               the server printed, and kept for next time
moorage token rotate                           a new join token (the old one stops working)
"""

from __future__ import annotations

import hashlib
import os
from pathlib import Path

import click
import httpx

from moorage.model import FieldError, SpecError, Unauthorized, Unavailable

from .common import client


@click.group()
def ca() -> None:
    """The cluster's certificate authority."""


@ca.command()
@click.option(
    "--fingerprint",
    required=True,
    help="SHA256:<hex> of the CA certificate, as the server printed it at start.",
)
@click.option(
    "--to",
    "target",
    default=None,
    help="Where to keep it (default: ~/.config/moorage/ca.pem, used by every command).",
)
@click.pass_context
def fetch(ctx: click.Context, fingerprint: str, target: str | None) -> None:
    """Fetch the cluster CA from the server, check its fingerprint, keep it."""
    from cryptography import x509
    from cryptography.hazmat.primitives import serialization

    from moorage.client.client import saved_ca

    wanted = fingerprint.strip().lower().removeprefix("sha256:").replace(":", "")
    if len(wanted) != 64 or any(c not in "0123456789abcdef" for c in wanted):
        raise SpecError([FieldError("fingerprint", "must be SHA256: and 64 hex digits")])
    with client(ctx) as api:
        address = api.address
    try:
        # Not verified: nothing is trusted yet; the fingerprint check below is the trust.
        answer = httpx.get(f"{address}/v1/ca", verify=False, timeout=10)
        answer.raise_for_status()
        cert = x509.load_pem_x509_certificate(answer.content)
    except (httpx.HTTPError, ValueError) as exc:
        raise Unavailable(f"cannot fetch the CA from {address}: {exc}") from None
    got = hashlib.sha256(cert.public_bytes(serialization.Encoding.DER)).hexdigest()
    if got != wanted:
        raise Unauthorized(
            f"the server at {address} presents a CA whose fingerprint is SHA256:{got}, not the "
            "one given: not trusting it"
        )
    path = Path(target) if target else saved_ca()
    path.parent.mkdir(parents=True, exist_ok=True)
    temp = path.with_name(f".{path.name}.tmp")
    temp.write_bytes(answer.content)
    os.replace(temp, path)
    click.echo(f"trusted the cluster CA SHA256:{got} ({path})")


@click.group()
def token() -> None:
    """The cluster's join token."""


@token.command()
@click.pass_context
def rotate(ctx: click.Context) -> None:
    """A new join token: the old one stops working (nodes that joined keep their certificates)."""
    with client(ctx) as api:
        answer = api.request("POST", "/v1/join-token")
    click.echo(answer["token"])


COMMANDS = [ca, token]
