"""Commands that run processes: dev, server, agent."""

from __future__ import annotations

import dataclasses
from pathlib import Path

import click

from moorage.model import FieldError, SpecError


def parse_addr(value: str, field: str) -> tuple[str, int]:
    host, sep, port = value.rpartition(":")
    if not sep or not port.isdigit() or not 0 < int(port) < 65536:
        raise SpecError([FieldError(field, f"must be HOST:PORT, got {value!r}")])
    return host or "127.0.0.1", int(port)


def parse_servers(values: tuple[str, ...]) -> list[str]:
    """`--server` values (repeated and/or comma-separated) → http(s) URLs, in order."""
    urls = [url.strip().rstrip("/") for value in values for url in value.split(",") if url.strip()]
    for url in urls:
        scheme, sep, rest = url.partition("://")
        if not sep or scheme not in ("http", "https") or not rest:
            raise SpecError([FieldError("server", f"must be http://HOST:PORT, got {url!r}")])
    if not urls:
        raise SpecError([FieldError("server", "at least one server address is needed")])
    return list(dict.fromkeys(urls))


def parse_handlers(values: tuple[str, ...]) -> dict[str, str]:
    handlers: dict[str, str] = {}
    for item in values:
        name, sep, command = item.partition("=")
        if not sep or not name.strip() or not command.strip():
            raise SpecError([FieldError("event-handler", f"must be NAME=COMMAND, got {item!r}")])
        handlers[name.strip()] = command
    return handlers


def parse_attrs(values: tuple[str, ...]) -> dict[str, str]:
    attrs: dict[str, str] = {}
    for item in values:
        key, sep, value = item.partition("=")
        if not sep or not key:
            raise SpecError([FieldError("attr", f"must be key=value, got {item!r}")])
        attrs[key.strip()] = value.strip()
    return attrs


def common_options(func: click.decorators.FC) -> click.decorators.FC:
    for option in reversed(
        [
            click.option(
                "--data-dir",
                default=".moorage",
                show_default=True,
                help="Where state, logs and task dirs live.",
            ),
            click.option(
                "--http-addr",
                default="127.0.0.1:7070",
                show_default=True,
                help="Server API address.",
            ),
            click.option(
                "--dns-addr",
                default="127.0.0.1:7053",
                show_default=True,
                help="DNS interface address, UDP and TCP (server, dev; see docs/dns.md).",
            ),
            click.option(
                "--agent-addr",
                default="127.0.0.1:7071",
                show_default=True,
                help="Agent API address (logs).",
            ),
        ]
    ):
        func = option(func)
    return func


def dns_options(func: click.decorators.FC) -> click.decorators.FC:
    """The DNS interface's options, beside `--dns-addr` (server and dev)."""
    for option in reversed(
        [
            click.option(
                "--dns-domain",
                default="moorage.",
                show_default=True,
                help="The domain DNS answers for (<service>.service.<domain>).",
            ),
            click.option(
                "--dns-alt-domain",
                default=None,
                help="A second domain answered the same way, e.g. `consul.`.",
            ),
            click.option(
                "--dns-ttl",
                type=int,
                default=0,
                show_default=True,
                help="TTL of DNS records, in seconds (also the negative-caching time).",
            ),
            click.option(
                "--dns-recursor",
                "dns_recursors",
                multiple=True,
                help="IP[:PORT] of a resolver for names outside our domains (repeatable, tried "
                "in order); without one they are REFUSED.",
            ),
        ]
    ):
        func = option(func)
    return func


@click.command()
@common_options
@dns_options
@click.option("--demo", is_flag=True, help="Deploy the specs in ./examples (or --demo-dir).")
@click.option("--demo-dir", default="examples", show_default=True)
@click.option("--node-name", default=None, help="Name of the local node (default: the hostname).")
@click.option("--attr", "attrs", multiple=True, help="Node attribute key=value (repeatable).")
def dev(
    data_dir: str,
    http_addr: str,
    dns_addr: str,
    agent_addr: str,
    dns_domain: str,
    dns_alt_domain: str | None,
    dns_ttl: int,
    dns_recursors: tuple[str, ...],
    demo: bool,
    demo_dir: str,
    node_name: str | None,
    attrs: tuple[str, ...],
) -> None:
    """Server + agent + SQLite store in one process: a one-machine cluster."""
    from moorage import daemon

    dns = daemon.DnsConfig.from_options(
        parse_addr(dns_addr, "dns-addr"), dns_domain, dns_alt_domain, dns_ttl, dns_recursors
    )
    demo_path = Path(demo_dir) if demo else None
    if demo_path is not None and not demo_path.is_dir():
        raise SpecError([FieldError("demo-dir", f"{demo_dir} is not a directory")])
    config = daemon.DevConfig(
        data_dir=Path(data_dir).resolve(),
        http_addr=parse_addr(http_addr, "http-addr"),
        agent_addr=parse_addr(agent_addr, "agent-addr"),
        attrs=parse_attrs(attrs),
        demo_dir=demo_path,
        dns=dns,
        **({"node_name": node_name} if node_name else {}),
    )
    daemon.run(lambda: daemon.dev(config, lambda line: click.echo(line)))


@click.command()
@common_options
@dns_options
@click.option(
    "--acl",
    is_flag=True,
    help="Require ACL tokens (default deny); bootstrap the first with `moorage acl bootstrap`.",
)
@click.option(
    "--acl-dns",
    is_flag=True,
    help="DNS answers only names the `anonymous` ACL policy may read (others: REFUSED).",
)
def server(
    data_dir: str,
    http_addr: str,
    dns_addr: str,
    agent_addr: str,
    dns_domain: str,
    dns_alt_domain: str | None,
    dns_ttl: int,
    dns_recursors: tuple[str, ...],
    acl: bool,
    acl_dns: bool,
) -> None:
    """Run a server: API, state store, control loops, DNS."""
    from moorage import daemon

    dns = daemon.DnsConfig.from_options(
        parse_addr(dns_addr, "dns-addr"), dns_domain, dns_alt_domain, dns_ttl, dns_recursors
    )
    if acl_dns and not acl:
        raise SpecError([FieldError("acl-dns", "needs --acl")])
    config = daemon.ServerConfig(
        data_dir=Path(data_dir).resolve(),
        http_addr=parse_addr(http_addr, "http-addr"),
        acl=acl,
        dns=dataclasses.replace(dns, acl=acl_dns),
    )
    daemon.run(lambda: daemon.serve(config, lambda line: click.echo(line)))


@click.command()
@click.option(
    "--server",
    "server_urls",
    envvar="MOORAGE_ADDR",
    multiple=True,
    default=["http://127.0.0.1:7070"],
    show_default=True,
    help="A server to join; repeat it (or separate with commas) to list every server: the "
    "agent moves to the next one when one stops answering.",
)
@click.option("--name", default=None, help="Node name (default: the hostname).")
@click.option("--attr", "attrs", multiple=True, help="Node attribute key=value (repeatable).")
@click.option(
    "--advertise",
    default="127.0.0.1",
    show_default=True,
    help="Address other machines reach this node at.",
)
@click.option(
    "--token",
    envvar="MOORAGE_TOKEN",
    default=None,
    help="The cluster's join token (the server's <data dir>/join-token; env MOORAGE_TOKEN).",
)
@click.option(
    "--event-handler",
    "event_handlers",
    multiple=True,
    help="NAME=COMMAND: run COMMAND (sh) when user event NAME fires; the event is on stdin "
    "as JSON, its payload in MOORAGE_EVENT_PAYLOAD (repeatable).",
)
@click.option(
    "--cpu",
    type=click.IntRange(min=1),
    default=None,
    help="CPU units to offer, 1024 = one core (default: read from the machine).",
)
@click.option(
    "--memory",
    type=click.IntRange(min=1),
    default=None,
    help="Memory to offer in MiB (default: read from the machine).",
)
@click.option(
    "--shared-volume-root",
    default=None,
    help="Where `shared` volumes live: one directory every node mounts (NFS); default "
    "<data-dir>/shared-volumes (docs/volumes.md).",
)
@click.option(
    "--volume-lease",
    default="10s",
    show_default=True,
    help="Lease of the volume claims this agent takes (renewed every third of it).",
)
@common_options
def agent(
    server_urls: tuple[str, ...],
    name: str | None,
    attrs: tuple[str, ...],
    advertise: str,
    token: str | None,
    cpu: int | None,
    memory: int | None,
    event_handlers: tuple[str, ...],
    shared_volume_root: str | None,
    volume_lease: str,
    data_dir: str,
    http_addr: str,
    dns_addr: str,
    agent_addr: str,
) -> None:
    """Run a node agent: registers this machine and runs the tasks placed on it."""
    from moorage import daemon
    from moorage.model.duration import parse_duration
    from moorage.model.volume import MAX_LEASE, MIN_LEASE

    try:
        lease = parse_duration(volume_lease)
    except ValueError as exc:
        raise SpecError([FieldError("volume-lease", str(exc))]) from None
    if not MIN_LEASE <= lease <= MAX_LEASE:
        raise SpecError([FieldError("volume-lease", "must be between 1s and 1h")])

    node = daemon.Agent(
        server_url=parse_servers(server_urls),
        name=name or daemon.node_name(),
        data_dir=Path(data_dir).resolve() / "agent",
        http_addr=parse_addr(agent_addr, "agent-addr"),
        attrs=parse_attrs(attrs),
        advertise_address=advertise,
        token=token,
        cpu=cpu,
        memory=memory,
        event_handlers=parse_handlers(event_handlers),
        shared_volume_root=Path(shared_volume_root).resolve() if shared_volume_root else None,
        volume_lease=lease,
    )
    daemon.run(lambda: daemon.run_agent(node, lambda line: click.echo(line)))


COMMANDS = [dev, server, agent]
