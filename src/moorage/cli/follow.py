"""Following a deployment from the CLI: its progress line by line, until it is done."""

from __future__ import annotations

import time
from typing import Any

import click

from moorage.client import Client


class DeploymentFailed(click.ClickException):
    exit_code = 1


def follow_deployment(
    api: Client, deployment_id: str, deadline: float, output: str
) -> dict[str, Any]:
    """Print a deployment's progress as it moves; return it once done (a rollback is followed)."""
    index, last = 0, ""
    while True:
        remaining = deadline - time.monotonic()
        if remaining <= 0:
            raise click.ClickException(f"stopped following {deployment_id}: timed out")
        deployment, index = api.deployment(deployment_id, index, min(remaining, 30.0))
        line = describe(deployment)
        if line != last and output != "json":
            click.echo(f"{deployment['service']}: {line}")
            last = line
        if deployment["status"] != "running":
            break
    if deployment["status"] == "rolled_back" and output != "json":
        service = api.service(deployment["service"])
        back = service.get("deployment_id")
        if back and back != deployment_id:
            follow_deployment(api, back, deadline, output)
    return deployment


def describe(d: dict[str, Any]) -> str:
    text = f"revision {d['to_revision']}: {d['healthy']}/{d['count']} healthy"
    if d["old_remaining"]:
        text += f", {d['old_remaining']} old remaining"
    if d["failures"]:
        text += f", {len(d['failures'])} failed"
    if d["status"] != "running":
        text += f" — {d['status']}" + (f": {d['message']}" if d["message"] else "")
    return text
