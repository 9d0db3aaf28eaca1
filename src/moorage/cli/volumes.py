"""`moorage volume`: create, list, inspect and remove persistent volumes (docs/volumes.md);
their snapshots, restores and backups are in `cli/snapshots.py`."""

from __future__ import annotations

import time
from typing import Any

import click

from . import snapshots
from .common import client, output_option
from .output import age, emit_json, table


@click.group()
def volume() -> None:
    """Persistent volumes: create, list, inspect, remove, snapshot and restore."""


@volume.command()
@click.argument("name")
@click.option(
    "--driver", type=click.Choice(["shared", "local"]), required=True, help="Where it lives."
)
@click.option("--node", default=None, help="The node of a local volume (required for local).")
@click.option("--size", type=int, default=None, help="Size in MiB.")
@click.option(
    "--scope",
    type=click.Choice(["shared", "task"]),
    default="shared",
    show_default=True,
    help="Only shared: a task-scope volume is declared in a spec (the server refuses it here).",
)
@click.option(
    "--access",
    type=click.Choice(["single-writer", "read-only-many"]),
    default="single-writer",
    show_default=True,
)
@output_option
@click.pass_context
def create(
    ctx: click.Context,
    name: str,
    driver: str,
    node: str | None,
    size: int | None,
    scope: str,
    access: str,
    output: str,
) -> None:
    """Create volume NAME."""
    body: dict[str, Any] = {"name": name, "driver": driver, "scope": scope, "access": access}
    if node is not None:
        body["node"] = node
    if size is not None:
        body["size"] = size
    with client(ctx) as api:
        created = api.create_volume(body)
    if output == "json":
        emit_json(created)
        return
    click.echo(f"{created['name']}: created ({created['driver']}, {created['access']})")


def _size(v: dict[str, Any]) -> str:
    """`64MiB (ext4)`: enforced by a loop-mounted image; `64MiB (not enforced)`: a plain
    directory; `64MiB`: no agent has provisioned it yet."""
    if not v.get("size"):
        return "-"
    enforced = v.get("size_enforced")
    how = "" if enforced is None else " (ext4)" if enforced else " (not enforced)"
    return f"{v['size']}MiB{how}"


def _holders(v: dict[str, Any]) -> str:
    return ",".join(f"{a['task']}@{a['node']}" for a in v.get("attachments", [])) or "-"


@volume.command(name="ls")
@output_option
@click.pass_context
def list_volumes(ctx: click.Context, output: str) -> None:
    """List volumes."""
    with client(ctx) as api:
        rows = api.volumes()
    if output == "json":
        emit_json(rows)
        return
    now = time.time()
    table(
        ["NAME", "DRIVER", "NODE", "SIZE", "ACCESS", "STATE", "EPOCH", "HELD BY", "CREATED"],
        [
            [
                v["name"],
                v["driver"],
                v.get("node") or "-",
                _size(v),
                v["access"],
                v["state"],
                v["epoch"],
                _holders(v),
                age(v.get("created_at"), now),
            ]
            for v in rows
        ],
    )


@volume.command()
@click.argument("name")
@output_option
@click.pass_context
def inspect(ctx: click.Context, name: str, output: str) -> None:
    """Show volume NAME and its attachments."""
    with client(ctx) as api:
        v = api.volume(name)
    if output == "json":
        emit_json(v)
        return
    now = time.time()
    for label, value in (
        ("name", v["name"]),
        ("driver", v["driver"]),
        ("node", v.get("node") or "-"),
        ("size", f"{v['size']} MiB" if v.get("size") else "-"),
        ("enforced", _enforced(v)),
        ("scope", v["scope"]),
        ("access", v["access"]),
        ("state", v["state"]),
        ("epoch", v["epoch"]),
        ("created", age(v.get("created_at"), now)),
    ):
        click.echo(f"{label + ':':<10}{value}")
    attachments = v.get("attachments", [])
    if attachments:
        click.echo("attachments:")
        for a in attachments:
            left = a["lease_expires"] - now
            click.echo(
                f"  task {a['task']} on {a['node']}: epoch {a['epoch']}, lease "
                + (f"{left:.1f}s left" if left >= 0 else f"expired {-left:.1f}s ago")
            )


def _enforced(v: dict[str, Any]) -> str:
    if not v.get("size"):
        return "-"
    if v.get("size_enforced") is None:
        return "not known yet (no agent has provisioned it)"
    if v["size_enforced"]:
        return "yes (a loop-mounted ext4 image)"
    return "no (a plain directory: the agent cannot mount images)"


@volume.command(name="rm")
@click.argument("name")
@click.pass_context
def remove(ctx: click.Context, name: str) -> None:
    """Remove volume NAME and its data (refused while a task holds it; its snapshots stay)."""
    with client(ctx) as api:
        api.remove_volume(name)
    click.echo(f"{name}: removed, with its data")


for command in snapshots.COMMANDS:  # snapshot, snapshots, restore, delete-snapshot
    volume.add_command(command)

COMMANDS = [volume]
