"""`moorage compose up` (and `moorage deploy -f compose.yml`): build what has `build:`, then
deploy every compose service as a moorage service, in `depends_on` order (a `service_healthy`
dependency is deployed and healthy first)."""

from __future__ import annotations

import time
from pathlib import Path
from typing import Any

import click

from moorage.client import Client
from moorage.model import FieldError, SpecError

from . import build, formats
from .common import client, read_spec_file
from .follow import DeploymentFailed, follow_deployment

registry_option = click.option(
    "--registry",
    envvar="MOORAGE_REGISTRY",
    default=None,
    metavar="HOST[:PORT][/PATH]",
    help="Where built images are pushed and every node pulls from (needed with several "
    "nodes; env MOORAGE_REGISTRY).",
)
no_build_option = click.option(
    "--no-build",
    is_flag=True,
    help="Build nothing: services with `build:` must also name an `image:`.",
)


@click.group()
def compose() -> None:
    """Run docker-compose files on moorage."""


@compose.command()
@click.option("-f", "--file", "path", default="compose.yaml", show_default=True)
@click.option("--timeout", default=900.0, show_default=True, help="Seconds for the whole rollout.")
@registry_option
@no_build_option
@click.pass_context
def up(ctx: click.Context, path: str, timeout: float, registry: str | None, no_build: bool) -> None:
    """Build, then deploy every service of a compose file, dependencies first."""
    with client(ctx) as api:
        deploy_compose(api, read_spec_file(path), Path(path).parent, registry, no_build, timeout)
    click.echo("up")


def deploy_compose(
    api: Client,
    text: str,
    base_dir: Path,
    registry: str | None,
    no_build: bool,
    timeout: float,
    echo: bool = True,
) -> list[dict[str, Any]]:
    """Build (and push), then deploy in dependency order; each service's deploy result."""
    nodes = len(api.nodes())
    several = nodes > 1
    loaded = formats.load(
        text, "compose", base_dir, image_for=build.namer(registry if several else None)
    )
    formats.warn(loaded.warnings)
    builds = build.refuse_builds(loaded.builds) if no_build else loaded.builds
    if builds and several and not registry:
        raise SpecError(
            [
                FieldError(
                    f"services.{b.service}.build",
                    f"this cluster has {nodes} nodes: give --registry HOST:PORT (a registry "
                    "every node pulls from) to push the built image there",
                )
                for b in builds
            ]
        )
    if builds:
        if not several:
            click.echo("one node: built images are used in place (no push)", err=True)
        build.run(builds, push=several, say=lambda line: click.echo(line, err=True))
    deadline = time.monotonic() + timeout
    results = []
    for spec in loaded.specs:
        needed = {
            cond
            for deps in loaded.depends.values()
            for dep, cond in deps.items()
            if dep == spec.service
        }
        (result,) = api.deploy_specs([spec.model_dump(mode="json")])
        results.append(result)
        if echo:
            click.echo(f"{spec.service}: revision {result['revision']}, count {result['count']}")
        if "healthy" in needed and result.get("deployment"):
            done = follow_deployment(api, result["deployment"], deadline, "text")
            if done["status"] != "successful":
                raise DeploymentFailed(f"{spec.service}: {done['status']}: {done['message']}")
        elif needed:
            _wait_running(api, spec.service, spec.count, deadline)
    return results


def _wait_running(api: Client, service: str, count: int, deadline: float) -> None:
    while time.monotonic() < deadline:
        running = [t for t in api.tasks(service=service) if t["status"] == "running"]
        if len(running) >= count:
            return
        time.sleep(0.2)
    raise click.ClickException(f"timed out waiting for {service} to start")


COMMANDS = [compose]
