"""`moorage event`: fire user events (agents with a matching --event-handler run it) and list them."""

from __future__ import annotations

import base64
import sys

import click

from .common import client, output_option
from .output import emit_json, table


@click.group()
def event() -> None:
    """User events: fire one, list the newest (cluster events are `moorage events`)."""


@event.command()
@click.argument("name")
@click.argument("payload", required=False)
@click.option("--node", default="", help="Only nodes whose name matches this regular expression.")
@click.option(
    "--service", default="", help="Only nodes running a task of a service matching this regexp."
)
@click.option(
    "--tag", default="", help="With --service: only services with a tag matching this regexp."
)
@output_option
@click.pass_context
def fire(
    ctx: click.Context,
    name: str,
    payload: str | None,
    node: str,
    service: str,
    tag: str,
    output: str,
) -> None:
    """Fire event NAME with PAYLOAD (`-` reads it from stdin)."""
    data = sys.stdin.buffer.read() if payload == "-" else (payload or "").encode()
    params = {k: v for k, v in (("node", node), ("service", service), ("tag", tag)) if v}
    with client(ctx) as api:
        fired = api.request("PUT", f"/v1/event/fire/{name}", content=data, params=params)
    if output == "json":
        emit_json(fired)
        return
    click.echo(f"{fired['Name']}: fired ({fired['ID']})")


@event.command(name="ls")
@click.option("--name", default=None, help="Only events with this name.")
@output_option
@click.pass_context
def list_events(ctx: click.Context, name: str | None, output: str) -> None:
    """The newest user events (at most 256 are kept)."""
    with client(ctx) as api:
        rows = api.request("GET", "/v1/event/list", params={"name": name} if name else {})
    if output == "json":
        emit_json(rows)
        return
    table(
        ["ID", "NAME", "PAYLOAD", "FILTER"],
        [
            [
                r["ID"],
                r["Name"],
                base64.b64decode(r["Payload"] or "").decode(errors="replace")[:60],
                " ".join(
                    f"{kind}={f}"
                    for kind, f in (
                        ("node", r["NodeFilter"]),
                        ("service", r["ServiceFilter"]),
                        ("tag", r["TagFilter"]),
                    )
                    if f
                ),
            ]
            for r in rows
        ],
    )


COMMANDS = [event]
