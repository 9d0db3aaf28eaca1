"""`moorage volume snapshot | snapshots | restore | delete-snapshot` (docs/volumes.md).

A snapshot is named `VOLUME/ID` (`data/snap-0123456789ab`); the ID alone is enough, ids are
unique in the cluster.
"""

from __future__ import annotations

import time
from pathlib import Path
from typing import Any

import click

from moorage.client import Client
from moorage.model import FieldError, NotFound, SpecError

from .common import client, output_option
from .output import emit_json, table


def human_bytes(size: int) -> str:
    value = float(size)
    for unit in ("B", "KiB", "MiB", "GiB"):
        if value < 1024 or unit == "GiB":
            return f"{value:.0f} {unit}" if unit == "B" else f"{value:.1f} {unit}"
        value /= 1024
    return f"{size} B"  # unreachable: GiB ends the loop


def when(timestamp: float) -> str:
    return time.strftime("%Y-%m-%d %H:%M:%S", time.localtime(timestamp))


def how(s: dict[str, Any]) -> str:
    """The consistency, with the writer and its pause when one was paused."""
    if s.get("task"):
        return f"{s['consistency']} ({s['task']}, {s['pause_seconds'] * 1000:.0f} ms)"
    return str(s["consistency"])


def resolve(api: Client, ref: str) -> tuple[str, str]:
    """`VOLUME/ID` or a bare `ID` → (volume, id); NotFound when no snapshot has that id."""
    if "/" in ref:
        volume, _, snapshot_id = ref.partition("/")
        if not volume or not snapshot_id:
            raise SpecError([FieldError("snapshot", f"{ref!r} is not VOLUME/ID or ID")])
        return volume, snapshot_id
    found = [s for s in api.snapshots() if s["id"] == ref]
    if not found:
        raise NotFound(f"no snapshot {ref!r}")
    return found[0]["volume"], ref


def _target_dir(to: str) -> Path:
    folder = Path(to)
    if folder.exists() and not folder.is_dir():
        raise SpecError([FieldError("to", f"{to} exists and is not a directory")])
    folder.mkdir(parents=True, exist_ok=True)
    return folder


@click.command()
@click.argument("name")
@click.option(
    "--to",
    "to",
    default=None,
    metavar="DIR",
    help="Also download the archive to DIR/<volume>-<id>.tar.gz (a backup off the cluster).",
)
@click.option(
    "--pause-timeout",
    type=float,
    default=None,
    help="Seconds to wait for the writer to freeze (default 10).",
)
@output_option
@click.pass_context
def snapshot(
    ctx: click.Context, name: str, to: str | None, pause_timeout: float | None, output: str
) -> None:
    """Snapshot volume NAME; its writer is paused (frozen) for the copy."""
    folder = _target_dir(to) if to is not None else None
    with client(ctx) as api:
        taken = api.snapshot_volume(name, pause_timeout)
        if folder is not None:
            dest = folder / f"{taken['volume']}-{taken['id']}.tar.gz"
            written = api.download_snapshot(taken["volume"], taken["id"], dest)
            taken = {**taken, "archive": str(dest), "archive_size": written}
    if output == "json":
        emit_json(taken)
        return
    click.echo(
        f"{taken['volume']}/{taken['id']}: {human_bytes(taken['size'])}, {how(taken)}, "
        f"{taken['files']} files on {taken['node']}"
    )
    if folder is not None:
        click.echo(f"archive: {taken['archive']} ({taken['archive_size']} bytes)")


@click.command(name="snapshots")
@click.argument("name", required=False)
@output_option
@click.pass_context
def list_snapshots(ctx: click.Context, name: str | None, output: str) -> None:
    """List snapshots (of volume NAME, or all)."""
    with client(ctx) as api:
        rows = api.snapshots(name)
    if output == "json":
        emit_json(rows)
        return
    table(
        ["ID", "VOLUME", "SIZE", "CREATED", "CONSISTENCY", "NODE"],
        [
            [
                s["id"],
                s["volume"],
                human_bytes(s["size"]),
                when(s["created_at"]),
                how(s),
                s["node"],
            ]
            for s in rows
        ],
    )


@click.command()
@click.argument("snapshot_ref", metavar="SNAPSHOT")
@click.option("--name", "new_name", required=True, help="The new volume.")
@click.option(
    "--driver",
    type=click.Choice(["shared", "local"]),
    default=None,
    help="Default: the snapshot's.",
)
@click.option("--node", default=None, help="A local volume's node (default: the snapshot's).")
@click.option("--size", type=int, default=None, help="Size in MiB (default: the volume's).")
@click.option("--access", type=click.Choice(["single-writer", "read-only-many"]), default=None)
@output_option
@click.pass_context
def restore(
    ctx: click.Context,
    snapshot_ref: str,
    new_name: str,
    driver: str | None,
    node: str | None,
    size: int | None,
    access: str | None,
    output: str,
) -> None:
    """Restore SNAPSHOT (VOLUME/ID or ID) into a new volume."""
    body: dict[str, Any] = {"name": new_name}
    for key, value in (("driver", driver), ("node", node), ("size", size), ("access", access)):
        if value is not None:
            body[key] = value
    with client(ctx) as api:
        volume, snapshot_id = resolve(api, snapshot_ref)
        created = api.restore_snapshot(volume, snapshot_id, body)
    if output == "json":
        emit_json(created)
        return
    where = f" on {created['node']}" if created.get("node") else ""
    click.echo(
        f"{created['name']}: restored from {volume}/{snapshot_id} ({created['driver']}{where})"
    )


@click.command(name="delete-snapshot")
@click.argument("snapshot_ref", metavar="SNAPSHOT")
@click.pass_context
def delete_snapshot(ctx: click.Context, snapshot_ref: str) -> None:
    """Delete SNAPSHOT (VOLUME/ID or ID): its archive and its record."""
    with client(ctx) as api:
        volume, snapshot_id = resolve(api, snapshot_ref)
        api.delete_snapshot(volume, snapshot_id)
    click.echo(f"{volume}/{snapshot_id}: deleted")


COMMANDS = [snapshot, list_snapshots, restore, delete_snapshot]
