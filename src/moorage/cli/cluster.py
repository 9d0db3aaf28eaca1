"""Commands about the cluster: nodes, events."""

from __future__ import annotations

import time
from typing import Any

import click

from .common import client, output_option
from .output import age, emit_json, table


@click.command()
@output_option
@click.pass_context
def nodes(ctx: click.Context, output: str) -> None:
    """List nodes: status (and drain), allocated / capacity (cpu, memory), tasks, attributes,
    heartbeat."""
    with client(ctx) as api:
        rows = api.nodes()
        tasks = api.tasks()
    held: dict[str, list[int]] = {n["name"]: [0, 0, 0] for n in rows}
    for task in tasks:
        if task["node"] in held and task["status"] in ("assigned", "starting", "running"):
            used = held[task["node"]]
            used[0] += task["cpu"]
            used[1] += task["memory"]
            used[2] += 1
    if output == "json":
        for n in rows:
            cpu, memory, count = held[n["name"]]
            n["allocated"] = {"cpu": cpu, "memory": memory, "tasks": count}
        emit_json(rows)
        return
    table(
        ["NAME", "STATUS", "ADDRESS", "CPU", "MEMORY", "TASKS", "ATTRS", "HEARTBEAT"],
        [
            [
                n["name"],
                _status(n),
                n["address"],
                f"{held[n['name']][0]}/{n['cpu']}",
                f"{held[n['name']][1]}/{n['memory']} MiB",
                held[n["name"]][2],
                ",".join(f"{k}={v}" for k, v in sorted(n["attrs"].items())) or "-",
                age(n["heartbeat_at"]),
            ]
            for n in rows
        ],
    )


def _status(node: dict[str, Any]) -> str:
    """Liveness, then the scheduling state when it is not the default: `down, draining`."""
    if node.get("drain_deadline") is not None:
        return f"{node['status']}, draining"
    if node.get("eligibility", "eligible") != "eligible":
        return f"{node['status']}, {node['eligibility']}"
    return str(node["status"])


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
        node = api.drain(name, deadline, spot_notice)
    left = max(0.0, float(node.get("drain_deadline") or 0) - time.time())
    why = " (spot interruption notice)" if spot_notice else ""
    click.echo(f"{name}: draining{why}; what is still there in {left:.0f}s is stopped")


@node.command()
@click.argument("name")
@click.option("--lift", is_flag=True, help="Lift an earlier revocation: the node may join again.")
@click.pass_context
def revoke(ctx: click.Context, name: str, lift: bool) -> None:
    """End a node's certificates at once (a lost or compromised machine): the servers refuse
    it from its next request; rotate the join token too, so that it cannot join again."""
    with client(ctx) as api:
        api.request("POST", f"/v1/nodes/{name}/revoke", json={"lift": lift})
    click.echo(f"node {name}: {'revocation lifted' if lift else 'revoked'}")


@node.command()
@click.argument("name")
@click.pass_context
def eligible(ctx: click.Context, name: str) -> None:
    """Let NAME take tasks again."""
    with client(ctx) as api:
        api.eligible(name)
    click.echo(f"{name}: eligible")


COMMANDS = [node, nodes, events]
