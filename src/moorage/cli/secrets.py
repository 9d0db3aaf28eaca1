"""`moorage secret`: set, import, list and remove secrets. Values go in, never come out."""

from __future__ import annotations

import json
import sys

import click

from moorage.model import FieldError, SpecError

from .common import client, output_option, read_spec_file
from .output import age, emit_json, table


@click.group()
def secret() -> None:
    """Secrets injected into tasks' environments (specs: `secrets: {ENV: name}`)."""


@secret.command(name="set")
@click.argument("name")
@click.pass_context
def set_secret(ctx: click.Context, name: str) -> None:
    """Set NAME to the value read from stdin (a trailing newline is dropped)."""
    if sys.stdin.isatty():
        click.echo(f"value of {name} (end with Ctrl-D):", err=True)
    value = sys.stdin.read()
    if value.endswith("\n"):
        value = value[:-1]
    if not value:
        raise SpecError([FieldError("value", "is empty (pipe the value on stdin)")])
    with client(ctx) as api:
        info = api.set_secret(name, value)
    click.echo(f"{info['name']}: version {info['version']}")


@secret.command(name="import")
@click.argument("path")
@click.pass_context
def import_secrets(ctx: click.Context, path: str) -> None:
    """Set many secrets from a JSON object file {"NAME": "value", ...}."""
    try:
        values = json.loads(read_spec_file(path))
    except ValueError as exc:
        raise SpecError([FieldError("file", f"{path} is not JSON: {exc}")]) from None
    if not isinstance(values, dict):
        raise SpecError([FieldError("file", f"{path} must hold a JSON object of name: value")])
    with client(ctx) as api:
        infos = api.import_secrets(values)
    for info in infos:
        click.echo(f"{info['name']}: version {info['version']}")


@secret.command(name="ls")
@output_option
@click.pass_context
def list_secrets(ctx: click.Context, output: str) -> None:
    """Secret names and versions (values are never shown)."""
    with client(ctx) as api:
        rows = api.secrets()
    if output == "json":
        emit_json(rows)
        return
    table(
        ["NAME", "VERSION", "UPDATED"],
        [[r["name"], r["version"], age(r["updated_at"])] for r in rows],
    )


@secret.command(name="rm")
@click.argument("name")
@click.pass_context
def remove_secret(ctx: click.Context, name: str) -> None:
    """Remove a secret (tasks already running keep their environment)."""
    with client(ctx) as api:
        api.remove_secret(name)
    click.echo(f"{name}: removed")


COMMANDS = [secret]
