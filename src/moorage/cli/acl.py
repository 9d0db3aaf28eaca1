"""`moorage acl`: bootstrap, policies and tokens (the server runs with --acl)."""

from __future__ import annotations

import click

from moorage.model.acl import Rule

from .common import client, output_option
from .output import emit_json, table


@click.group()
def acl() -> None:
    """ACL tokens and policies (rules: RESOURCE[:PREFIX]=deny|read|write)."""


@acl.command()
@output_option
@click.pass_context
def bootstrap(ctx: click.Context, output: str) -> None:
    """Create the first management token (once). Its SecretID is shown only now."""
    with client(ctx) as api:
        token = api.request("POST", "/v1/acl/bootstrap")
    if output == "json":
        emit_json(token)
        return
    click.echo(f"AccessorID: {token['AccessorID']}")
    click.echo(f"SecretID:   {token['SecretID']}")
    click.echo("keep the SecretID: use it as MOORAGE_HTTP_TOKEN (or --token)", err=True)


@acl.group()
def policy() -> None:
    """Named sets of rules."""


@policy.command(name="create")
@click.argument("name")
@click.option(
    "--rule",
    "rules",
    multiple=True,
    required=True,
    help="RESOURCE[:PREFIX]=LEVEL, e.g. kv:app/=write, service:web=read, node=read.",
)
@click.option("--description", default="")
@click.pass_context
def policy_create(ctx: click.Context, name: str, rules: tuple[str, ...], description: str) -> None:
    """Create (or replace) policy NAME."""
    for i, text in enumerate(rules):
        Rule.parse(text, f"rule[{i}]")  # bad input: exit 2 before anything is sent
    body = {"Name": name, "Description": description, "Rules": list(rules)}
    with client(ctx) as api:
        saved = api.request("PUT", "/v1/acl/policy", json=body)
    click.echo(f"{saved['Name']}: {', '.join(saved['Rules'])}")


@policy.command(name="ls")
@output_option
@click.pass_context
def policy_list(ctx: click.Context, output: str) -> None:
    with client(ctx) as api:
        rows = api.request("GET", "/v1/acl/policies")
    if output == "json":
        emit_json(rows)
        return
    table(
        ["NAME", "RULES", "DESCRIPTION"],
        [[p["Name"], " ".join(p["Rules"]), p["Description"]] for p in rows],
    )


@policy.command(name="rm")
@click.argument("name")
@click.pass_context
def policy_remove(ctx: click.Context, name: str) -> None:
    with client(ctx) as api:
        api.request("DELETE", f"/v1/acl/policy/{name}")
    click.echo(f"{name}: removed")


@acl.group()
def token() -> None:
    """Tokens (their secrets are stored only as SHA-256)."""


@token.command(name="create")
@click.option("--policy", "policies", multiple=True, required=True, help="Policy name.")
@click.option("--description", default="")
@output_option
@click.pass_context
def token_create(
    ctx: click.Context, policies: tuple[str, ...], description: str, output: str
) -> None:
    """Create a token with the given policies; its SecretID is shown only now."""
    body = {"Description": description, "Policies": [{"Name": p} for p in policies]}
    with client(ctx) as api:
        created = api.request("PUT", "/v1/acl/token", json=body)
    if output == "json":
        emit_json(created)
        return
    click.echo(f"AccessorID: {created['AccessorID']}")
    click.echo(f"SecretID:   {created['SecretID']}")


@token.command(name="ls")
@output_option
@click.pass_context
def token_list(ctx: click.Context, output: str) -> None:
    with client(ctx) as api:
        rows = api.request("GET", "/v1/acl/tokens")
    if output == "json":
        emit_json(rows)
        return
    table(
        ["ACCESSOR", "POLICIES", "DESCRIPTION"],
        [
            [
                t["AccessorID"],
                "management" if t["Management"] else ",".join(p["Name"] for p in t["Policies"]),
                t["Description"],
            ]
            for t in rows
        ],
    )


@token.command(name="rm")
@click.argument("accessor")
@click.pass_context
def token_remove(ctx: click.Context, accessor: str) -> None:
    with client(ctx) as api:
        api.request("DELETE", f"/v1/acl/token/{accessor}")
    click.echo(f"{accessor}: removed")


COMMANDS = [acl]
