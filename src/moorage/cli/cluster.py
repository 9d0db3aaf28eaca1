"""Commands about the cluster: nodes, events."""

from __future__ import annotations

import time

import click

from .common import client, output_option
from .output import age, emit_json, table


@click.command()
@output_option
@click.pass_context
def nodes(ctx: click.Context, output: str) -> None:
    """List nodes: status, resources, attributes, last heartbeat."""
    with client(ctx) as api:
        rows = api.nodes()
    if output == "json":
        emit_json(rows)
        return
    table(
        ["NAME", "STATUS", "ADDRESS", "CPU", "MEMORY", "ATTRS", "HEARTBEAT"],
        [
            [
                n["name"],
                n["status"],
                n["address"],
                n["cpu"],
                f"{n['memory']} MiB",
                ",".join(f"{k}={v}" for k, v in sorted(n["attrs"].items())) or "-",
                age(n["heartbeat_at"]),
            ]
            for n in rows
        ],
    )


def _line(event: dict[str, object]) -> str:
    stamp = time.strftime("%H:%M:%S", time.localtime(float(str(event["time"]))))
    return f"{stamp}  {event['type']:<18} {event['message']}"


@click.command()
@click.option("-f", "--follow", is_flag=True, help="Keep streaming events as they happen.")
@click.option("--service", default=None, help="Only events about this service.")
@output_option
@click.pass_context
def events(ctx: click.Context, follow: bool, service: str | None, output: str) -> None:
    """Cluster events: deploys, task starts, exits, restarts, placement failures."""
    with client(ctx) as api:
        backlog = api.events(service)
        for event in backlog:
            click.echo(_as_text(event, output))
        if not follow:
            return
        after = max((int(e["revision"]) for e in backlog), default=0)
        try:
            for event in api.follow_events(service, after):
                click.echo(_as_text(event, output), nl=True)
        except KeyboardInterrupt:
            pass


def _as_text(event: dict[str, object], output: str) -> str:
    import json

    return json.dumps(event, sort_keys=True) if output == "json" else _line(event)


@click.group()
def node() -> None:
    """Drain a node, or make it eligible again."""


@node.command()
@click.argument("name")
@click.option("--deadline", default=None, help="Stop what is left after this long (default 1h).")
@click.option(
    "--spot-notice", is_flag=True, help="A spot interruption notice: a 2-minute deadline."
)
@click.pass_context
def drain(ctx: click.Context, name: str, deadline: str | None, spot_notice: bool) -> None:
    """Move every task off NAME, keeping each service at its min_healthy_percent."""
    with client(ctx) as api:
        api.drain(name, deadline, spot_notice)
    click.echo(f"{name}: draining")


@node.command()
@click.argument("name")
@click.pass_context
def eligible(ctx: click.Context, name: str) -> None:
    """Let NAME take tasks again."""
    with client(ctx) as api:
        api.eligible(name)
    click.echo(f"{name}: eligible")


COMMANDS = [node, nodes, events]
