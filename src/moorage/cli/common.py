"""Options and helpers shared by the command modules."""

from __future__ import annotations

import sys
from pathlib import Path

import click

from moorage.client import Client
from moorage.model import FieldError, SpecError

output_option = click.option(
    "-o",
    "--output",
    type=click.Choice(["table", "json"]),
    default="table",
    show_default=True,
    help="Output format.",
)


def client(ctx: click.Context) -> Client:
    obj = ctx.find_root().obj or {}
    return Client(obj.get("addr"), obj.get("token"), ca_cert=obj.get("ca_cert"))


def read_spec_file(path: str) -> str:
    if path == "-":
        return sys.stdin.read()
    try:
        return Path(path).read_text()
    except OSError as exc:
        raise SpecError([FieldError("file", f"cannot read {path}: {exc.strerror}")]) from None
    except UnicodeDecodeError:
        raise SpecError([FieldError("file", f"{path} is not UTF-8 text")]) from None
