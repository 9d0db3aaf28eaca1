"""`moorage compose up`: deploy a docker-compose file, one moorage service per compose service,
in `depends_on` order (a `service_healthy` dependency is deployed and healthy first)."""

from __future__ import annotations

import time
from pathlib import Path

import click

from . import formats
from .common import client, read_spec_file
from .services import DeploymentFailed, follow_deployment


@click.group()
def compose() -> None:
    """Run docker-compose files on moorage."""


@compose.command()
@click.option("-f", "--file", "path", default="compose.yaml", show_default=True)
@click.option("--timeout", default=900.0, show_default=True, help="Seconds for the whole rollout.")
@click.pass_context
def up(ctx: click.Context, path: str, timeout: float) -> None:
    """Deploy every service of a compose file, dependencies first."""
    specs, warnings, depends = formats.load(read_spec_file(path), "compose", Path(path).parent)
    formats.warn(warnings)
    deadline = time.monotonic() + timeout
    with client(ctx) as api:
        for spec in specs:
            needed = {
                cond
                for deps in depends.values()
                for dep, cond in deps.items()
                if dep == spec.service
            }
            (result,) = api.deploy_specs([spec.model_dump(mode="json")])
            click.echo(f"{spec.service}: revision {result['revision']}, count {result['count']}")
            if "healthy" in needed and result.get("deployment"):
                done = follow_deployment(api, result["deployment"], deadline, "text")
                if done["status"] != "successful":
                    raise DeploymentFailed(f"{spec.service}: {done['status']}: {done['message']}")
            elif needed:
                _wait_running(api, spec.service, spec.count, deadline)
    click.echo("up")


def _wait_running(api: object, service: str, count: int, deadline: float) -> None:
    from moorage.client import Client

    assert isinstance(api, Client)
    while time.monotonic() < deadline:
        running = [t for t in api.tasks(service=service) if t["status"] == "running"]
        if len(running) >= count:
            return
        time.sleep(0.2)
    raise click.ClickException(f"timed out waiting for {service} to start")


COMMANDS = [compose]
