"""Commands about services and their tasks: deploy, validate, services, ps, scale, stop, logs."""

from __future__ import annotations

import time

import click

from moorage.model import parse_specs

from .common import client, output_option, read_spec_file
from .output import age, emit_json, ports, table


@click.command()
@click.option(
    "-f", "--file", "path", required=True, help="Spec file (moorage YAML), or - for stdin."
)
@click.option(
    "--wait/--no-wait", default=False, help="Wait until every deployed service runs its count."
)
@click.option("--timeout", default=120.0, show_default=True, help="Seconds to wait with --wait.")
@output_option
@click.pass_context
def deploy(ctx: click.Context, path: str, wait: bool, timeout: float, output: str) -> None:
    """Deploy the services of a spec file (a changed spec is a new revision)."""
    text = read_spec_file(path)
    parse_specs(text)  # fail fast, locally, with every field error
    with client(ctx) as api:
        results = api.deploy(text)
        if output == "json":
            emit_json(results)
        else:
            for r in results:
                verb = "registered revision" if r["created"] else "unchanged at revision"
                click.echo(f"{r['service']}: {verb} {r['revision']}, count {r['count']}")
        if wait:
            _wait_running(api, [r["service"] for r in results], timeout)


def _wait_running(api: object, names: list[str], timeout: float) -> None:
    from moorage.api import Client

    assert isinstance(api, Client)
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        summaries = {s["name"]: s for s in api.services()}
        if all(
            summaries[n]["running"] == summaries[n]["desired"]
            and summaries[n]["deployment"] == "stable"
            for n in names
        ):
            click.echo("all tasks running")
            return
        time.sleep(0.5)
    raise click.ClickException(f"timed out after {timeout:g}s waiting for {', '.join(names)}")


@click.command()
@click.option(
    "-f", "--file", "path", required=True, help="Spec file (moorage YAML), or - for stdin."
)
@output_option
def validate(path: str, output: str) -> None:
    """Check a spec file: every error with its field path, or the normalized spec."""
    specs = parse_specs(read_spec_file(path))
    if output == "json":
        emit_json([s.model_dump(mode="json") for s in specs])
    else:
        for spec in specs:
            click.echo(
                f"{spec.service}: valid ({len(spec.containers)} container(s), count {spec.count})"
            )


@click.command(name="services")
@output_option
@click.pass_context
def services_cmd(ctx: click.Context, output: str) -> None:
    """List services: revision, desired / running / healthy, deployment state."""
    with client(ctx) as api:
        rows = api.services()
    if output == "json":
        emit_json(rows)
        return
    table(
        [
            "NAME",
            "REV",
            "STATUS",
            "DESIRED",
            "RUNNING",
            "HEALTHY",
            "RESTARTS",
            "DEPLOYMENT",
            "MESSAGE",
        ],
        [
            [
                r["name"],
                r["revision"],
                r["status"],
                r["desired"],
                r["running"],
                r["healthy"],
                r["restarts"],
                r["deployment"],
                r["message"],
            ]
            for r in rows
        ],
    )


@click.command()
@click.argument("service", required=False)
@click.option("-a", "--all", "show_all", is_flag=True, help="Include stopped and dead tasks.")
@output_option
@click.pass_context
def ps(ctx: click.Context, service: str | None, show_all: bool, output: str) -> None:
    """List tasks: id, node, state, host ports, started, restarts."""
    with client(ctx) as api:
        if service:
            api.service(service)  # a clear "no service named ..." instead of an empty list
        tasks = api.tasks(service=service)
    if not show_all:
        tasks = [
            t
            for t in tasks
            if t["desired"] == "run" or t["status"] not in ("stopped", "failed", "lost", "exited")
        ]
    if output == "json":
        emit_json(tasks)
        return
    table(
        ["ID", "SERVICE", "REV", "NODE", "STATE", "PORTS", "STARTED", "RESTARTS", "MESSAGE"],
        [
            [
                t["id"],
                t["service"],
                t["revision"],
                t["node"] or "-",
                t["status"]
                if t["desired"] == "run"
                else f"{t['status']} (stopping)"
                if t["status"] not in ("stopped", "failed")
                else t["status"],
                ports(t["ports"]),
                age(t["started_at"]),
                t["restarts"],
                t["message"],
            ]
            for t in tasks
        ],
    )


@click.command()
@click.argument("service")
@click.argument("count", type=click.IntRange(0, 10000))
@output_option
@click.pass_context
def scale(ctx: click.Context, service: str, count: int, output: str) -> None:
    """Set the number of tasks of a service."""
    with client(ctx) as api:
        summary = api.scale(service, count)
    if output == "json":
        emit_json(summary)
    else:
        click.echo(f"{service}: scaling to {count} (running {summary['running']})")


@click.command()
@click.argument("service")
@output_option
@click.pass_context
def stop(ctx: click.Context, service: str, output: str) -> None:
    """Stop every task of a service (deploy again to start it)."""
    with client(ctx) as api:
        summary = api.stop(service)
    if output == "json":
        emit_json(summary)
    else:
        click.echo(f"{service}: stopping")


@click.command()
@click.argument("target")
@click.option("-f", "--follow", is_flag=True, help="Keep streaming new lines.")
@click.option(
    "--stream", type=click.Choice(["stdout", "stderr", "both"]), default="both", show_default=True
)
@click.option(
    "--tail", type=click.IntRange(0), default=None, help="Only the last N lines of each task."
)
@click.pass_context
def logs(ctx: click.Context, target: str, follow: bool, stream: str, tail: int | None) -> None:
    """Output of a service's tasks (each line prefixed by task id), or of one task."""
    with client(ctx) as api:
        try:
            for line in api.logs(target, follow, stream, tail):
                click.echo(line)
        except KeyboardInterrupt:
            pass


COMMANDS = [deploy, validate, services_cmd, ps, scale, stop, logs]
