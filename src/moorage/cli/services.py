"""Commands about services and their tasks: deploy, validate, services, service rebalance, ps,
scale, stop, logs."""

from __future__ import annotations

import time
from pathlib import Path
from typing import Any

import click

from moorage.client import Client
from moorage.model import FieldError, SpecError

from . import formats
from .common import client, output_option, read_spec_file
from .compose import deploy_compose
from .follow import DeploymentFailed, follow_deployment
from .output import age, emit_json, ports, table


@click.command()
@click.option(
    "-f",
    "--file",
    "path",
    default=None,
    help="Spec file (moorage YAML, compose or ECS task definition), or - for stdin.",
)
@click.option("--ecs", "ecs", default=None, help="An ECS task definition JSON file to deploy.")
@click.option("--count", type=click.IntRange(min=0), default=None, help="With --ecs: tasks to run.")
@click.option(
    "--service", default=None, help="With --image: the service to update; with --ecs: its name."
)
@click.option(
    "--image",
    "images",
    multiple=True,
    metavar="CONTAINER=IMAGE",
    help="Roll out a new revision with only this container's image changed (repeatable).",
)
@click.option(
    "--registry",
    envvar="MOORAGE_REGISTRY",
    default=None,
    metavar="HOST[:PORT][/PATH]",
    help="Compose files: where built images are pushed and every node pulls from (needed with "
    "several nodes; env MOORAGE_REGISTRY).",
)
@click.option(
    "--no-build",
    is_flag=True,
    help="Compose files: build nothing; services with `build:` must also name an `image:`.",
)
@click.option("--detach", is_flag=True, help="Return once deployed; do not follow the deployments.")
@click.option(
    "--timeout", default=900.0, show_default=True, help="Seconds to follow the deployments."
)
@output_option
@click.pass_context
def deploy(
    ctx: click.Context,
    path: str | None,
    ecs: str | None,
    count: int | None,
    service: str | None,
    images: tuple[str, ...],
    registry: str | None,
    no_build: bool,
    detach: bool,
    timeout: float,
    output: str,
) -> None:
    """Deploy the services of a spec file, or new images of a service, and follow the rollout.

    \b
      moorage deploy -f web.yaml
      moorage deploy --service web --image app=registry.local/web:master.6
    A changed spec is a new revision, rolled out by the service's deployment policy. Exits 0
    when every deployment succeeds, 1 when one fails or is rolled back.
    """
    if sum(bool(x) for x in (path, ecs, images)) != 1:
        raise click.UsageError(
            "give one of -f FILE, --ecs TASKDEF.json, or --service NAME with --image C=IMAGE"
        )
    with client(ctx) as api:
        if ecs:
            loaded = formats.load(read_spec_file(ecs), "ecs", Path(ecs).parent, service, count)
            formats.warn(loaded.warnings)
            results = api.deploy_specs([s.model_dump(mode="json") for s in loaded.specs])
        elif images:
            if service is None:
                raise click.UsageError("--image needs --service NAME")
            results = [api.update_images(service, _parse_images(images))]
        else:
            assert path is not None
            results = _deploy_file(api, path, registry, no_build, timeout)
        if output != "json":
            for r in results:
                verb = "registered revision" if r["created"] else "unchanged at revision"
                line = f"{r['service']}: {verb} {r['revision']}, count {r['count']}"
                if r.get("deployment"):
                    line += f", deployment {r['deployment']}"
                click.echo(line)
                if r.get("stop_first"):
                    click.echo(f"  stop-first: {r['stop_first']}")
        outcomes = []
        if not detach:
            deadline = time.monotonic() + timeout
            for r in results:
                if r.get("deployment"):
                    outcomes.append(follow_deployment(api, r["deployment"], deadline, output))
        if output == "json":
            emit_json({"results": results, "deployments": outcomes})
    failed = [d for d in outcomes if d["status"] != "successful"]
    if failed:
        raise DeploymentFailed(
            "; ".join(f"{d['id']} {d['status']}: {d['message']}" for d in failed)
        )


def _deploy_file(
    api: Client, path: str, registry: str | None, no_build: bool, timeout: float
) -> list[dict[str, Any]]:
    """A spec file in any format: compose files are built and deployed in dependency order;
    a moorage spec naming no files goes as it is (the server parses it)."""
    text = read_spec_file(path)
    base = Path(path).parent if path != "-" else Path.cwd()
    if formats.detect(text) == "compose":
        return deploy_compose(api, text, base, registry, no_build, timeout, echo=False)
    loaded = formats.load(text, "auto", base)  # fail fast, locally, with every field error
    formats.warn(loaded.warnings)
    if loaded.text is not None:
        return api.deploy(loaded.text)
    return api.deploy_specs([s.model_dump(mode="json") for s in loaded.specs])


def _parse_images(values: tuple[str, ...]) -> dict[str, str]:
    images = {}
    for value in values:
        container, sep, image = value.partition("=")
        if not sep or not container or not image:
            raise SpecError([FieldError("image", f"must be CONTAINER=IMAGE, got {value!r}")])
        images[container] = image
    return images


def _check_output(task: dict[str, Any]) -> str:
    """The last output of the task's worst check, when it is not passing."""
    checks = [c for c in task.get("checks") or [] if c["status"] != "passing"]
    if not checks:
        return ""
    worst = max(checks, key=lambda c: c["status"] == "critical")
    return f"{worst['container']} {worst['kind']}: {worst['output']}"[:120]


@click.command()
@click.argument("service")
@click.option(
    "--to", "to", type=click.IntRange(min=1), default=None, help="Revision to go back to."
)
@click.option("--detach", is_flag=True, help="Do not follow the rollback.")
@output_option
@click.pass_context
def rollback(ctx: click.Context, service: str, to: int | None, detach: bool, output: str) -> None:
    """Roll a service back to an earlier revision (default: the last stable one)."""
    with client(ctx) as api:
        deployment = api.rollback(service, to)
        if output != "json":
            click.echo(f"{service}: rolling back to revision {deployment['to_revision']}")
        if not detach:
            deployment = follow_deployment(api, deployment["id"], time.monotonic() + 900, output)
    if output == "json":
        emit_json(deployment)
    if deployment["status"] not in ("successful", "running"):
        raise DeploymentFailed(
            f"{deployment['id']} {deployment['status']}: {deployment['message']}"
        )


@click.command()
@click.argument("service")
@output_option
@click.pass_context
def deployments(ctx: click.Context, service: str, output: str) -> None:
    """A service's deployments, newest first."""
    with client(ctx) as api:
        rows = api.deployments(service)
    if output == "json":
        emit_json(rows)
        return
    table(
        ["ID", "REVISION", "FROM", "STRATEGY", "STATUS", "HEALTHY", "CREATED", "MESSAGE"],
        [
            [
                d["id"],
                d["to_revision"],
                d["from_revision"] if d["from_revision"] is not None else "-",
                d["strategy"],
                d["status"],
                f"{d['healthy']}/{d['count']}",
                age(d["created_at"]),
                d["message"],
            ]
            for d in rows
        ],
    )


@click.command()
@click.option("-f", "--file", "path", required=True, help="Spec file, or - for stdin.")
@click.option(
    "--format",
    "fmt",
    type=click.Choice(formats.FORMATS),
    default="auto",
    show_default=True,
    help="moorage YAML, ECS task definition JSON, or a compose file (auto-detected).",
)
@output_option
def validate(path: str, fmt: str, output: str) -> None:
    """Check a spec file: every error with its field path, or the normalized spec."""
    base = Path(path).parent if path != "-" else Path.cwd()
    loaded = formats.load(read_spec_file(path), fmt, base)
    formats.warn(loaded.warnings)
    if output == "json":
        emit_json([s.model_dump(mode="json") for s in loaded.specs])
    else:
        for build in loaded.builds:
            click.echo(f"{build.service}: built from {build.context} at deploy ({build.image})")
        for spec in loaded.specs:
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
        [
            "ID",
            "SERVICE",
            "REV",
            "NODE",
            "STATE",
            "HEALTH",
            "PORTS",
            "STARTED",
            "RESTARTS",
            "MESSAGE",
        ],
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
                t.get("health") or "-",
                ports(t["ports"]),
                age(t["started_at"]),
                t["restarts"],
                t["message"] or _check_output(t),
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


@click.group(name="service")
def service_group() -> None:
    """Act on one service: rebalance it."""


@service_group.command()
@click.argument("name")
@output_option
@click.pass_context
def rebalance(ctx: click.Context, name: str, output: str) -> None:
    """Move NAME's tasks to where the scheduler would place them now.

    Nothing moves by itself when a node joins or comes back; this does, like a drain: each
    moving task is replaced on another node first, and stopped while the service stays at its
    min_healthy_percent. Refused while a deployment of NAME runs.
    """
    with client(ctx) as api:
        result = api.rebalance(name)
    if output == "json":
        emit_json(result)
        return
    if not result["moves"]:
        click.echo(f"{name}: {result['message'] or 'already balanced'}")
    for move in result["moves"]:
        click.echo(f"{name}: moving {move['task']} off {move['from']}")


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


COMMANDS = [
    deploy,
    rollback,
    deployments,
    validate,
    services_cmd,
    service_group,
    ps,
    scale,
    stop,
    logs,
]
