"""Commands that run processes: dev, server, agent."""

from __future__ import annotations

import dataclasses
from pathlib import Path
from typing import TYPE_CHECKING

import click

from moorage.model import FieldError, SpecError

from .flags import (
    node_access_options,
    parse_addr,
    parse_attrs,
    parse_handlers,
    parse_influx,
    parse_interval,
    parse_retention,
    parse_servers,
    read_token,
    rules_file,
)

if TYPE_CHECKING:
    pass


metrics_interval_option = click.option(
    "--metrics-interval",
    default="10s",
    show_default=True,
    help="How often the agent samples node and task metrics and sends them: 1s to 60s, or 0 "
    "(never).",
)


def influx_options(func: click.decorators.FC) -> click.decorators.FC:
    """The InfluxDB output (server and dev; docs/metrics.md)."""
    for option in reversed(
        [
            click.option(
                "--influx-url",
                default=None,
                help="Push every ingested point to InfluxDB 1.x in line protocol, e.g. "
                "http://HOST:8086/write?db=moorage (u, p, rp, precision as InfluxDB takes them).",
            ),
            click.option(
                "--influx-buffer",
                type=click.IntRange(min=1),
                default=100_000,
                show_default=True,
                help="Points held in memory while InfluxDB is away; beyond it the oldest are "
                "dropped and counted (moorage_influx_dropped_total).",
            ),
        ]
    ):
        func = option(func)
    return func


def metrics_store_options(func: click.decorators.FC) -> click.decorators.FC:
    """The embedded time-series store's retention (server and dev; docs/metrics.md)."""
    for option in reversed(
        [
            click.option(
                "--metrics-retention",
                default="24h",
                show_default=True,
                help="How long raw metric samples are kept (at least 2h).",
            ),
            click.option(
                "--metrics-rollup-retention",
                default="30d",
                show_default=True,
                help="How long 1-minute rollups (min/max/avg/count) are kept.",
            ),
        ]
    ):
        func = option(func)
    return func


AGENT_PORT = 7071

data_dir_option = click.option(
    "--data-dir",
    default=".moorage",
    show_default=True,
    help="Where state, logs and task dirs live.",
)


def server_options(func: click.decorators.FC) -> click.decorators.FC:
    """The addresses a server listens on (server and dev)."""
    for option in reversed(
        [
            data_dir_option,
            click.option(
                "--http-addr",
                default="127.0.0.1:7070",
                show_default=True,
                help="Server API address (users, the dashboard, Prometheus): HTTPS beyond "
                "loopback.",
            ),
            click.option(
                "--cluster-addr",
                default="127.0.0.1:7072",
                show_default=True,
                help="Where nodes join and report: mutual TLS, a certificate per node.",
            ),
            click.option(
                "--dns-addr",
                default="127.0.0.1:7053",
                show_default=True,
                help="DNS interface address, UDP and TCP (see docs/dns.md).",
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
@server_options
@click.option(
    "--agent-addr",
    default=f"127.0.0.1:{AGENT_PORT}",
    show_default=True,
    help="Agent API address (logs, exec, snapshots).",
)
@dns_options
@click.option("--demo", is_flag=True, help="Deploy the specs in ./examples (or --demo-dir).")
@click.option("--demo-dir", default="examples", show_default=True)
@click.option("--node-name", default=None, help="Name of the local node (default: the hostname).")
@click.option("--attr", "attrs", multiple=True, help="Node attribute key=value (repeatable).")
@node_access_options
@metrics_interval_option
@influx_options
@metrics_store_options
def dev(
    data_dir: str,
    http_addr: str,
    cluster_addr: str,
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
    host_volumes: tuple[str, ...],
    allow_privileged: bool,
    allow_docker_socket: bool,
    metrics_interval: str,
    influx_url: str | None,
    influx_buffer: int,
    metrics_retention: str,
    metrics_rollup_retention: str,
) -> None:
    """Server + agent + SQLite store in one process: a one-machine cluster."""
    from moorage import daemon

    dns = daemon.DnsConfig.from_options(
        parse_addr(dns_addr, "dns-addr"), dns_domain, dns_alt_domain, dns_ttl, dns_recursors
    )
    raw_retention, rollup_retention = parse_retention(metrics_retention, metrics_rollup_retention)
    demo_path = Path(demo_dir) if demo else None
    if demo_path is not None and not demo_path.is_dir():
        raise SpecError([FieldError("demo-dir", f"{demo_dir} is not a directory")])
    config = daemon.DevConfig(
        data_dir=Path(data_dir).resolve(),
        http_addr=parse_addr(http_addr, "http-addr"),
        cluster_addr=parse_addr(cluster_addr, "cluster-addr"),
        agent_addr=parse_addr(agent_addr, "agent-addr"),
        attrs=parse_attrs(attrs),
        host_volumes=parse_host_volumes(host_volumes, allow_docker_socket),
        privileged=allow_privileged,
        demo_dir=demo_path,
        dns=dns,
        metrics_interval=parse_interval(metrics_interval, "metrics-interval"),
        influx=parse_influx(influx_url, influx_buffer),
        metrics_retention=raw_retention,
        metrics_rollup_retention=rollup_retention,
        **({"node_name": node_name} if node_name else {}),
    )
    daemon.run(lambda: daemon.dev(config, lambda line: click.echo(line)))


@click.command()
@server_options
@dns_options
@click.option(
    "--acl",
    is_flag=True,
    help="Require ACL tokens (default deny); the first start writes a management token to "
    "<data dir>/acl-bootstrap-token (0600).",
)
@click.option(
    "--tls",
    type=click.Choice(["auto", "on", "off"]),
    default="auto",
    show_default=True,
    help="HTTPS on the API port: auto = beyond loopback (the cluster port is always TLS).",
)
@click.option(
    "--tls-san",
    "tls_sans",
    multiple=True,
    help="Another name or address the server's certificate covers (repeatable).",
)
@click.option(
    "--insecure",
    is_flag=True,
    help="Serve the API beyond loopback without ACLs or without TLS (protected mode off).",
)
@click.option(
    "--acl-dns",
    is_flag=True,
    help="DNS answers only names the `anonymous` ACL policy may read (others: REFUSED).",
)
@influx_options
@metrics_store_options
@click.option(
    "--alert-rules",
    default=None,
    help="A YAML or JSON file of alert rules (and notifiers) applied at start (docs/metrics.md).",
)
@click.option(
    "--alert-interval",
    default="3s",
    show_default=True,
    help="How often the leader evaluates the alert rules.",
)
@click.option(
    "--store",
    envvar="MOORAGE_STORE",
    default=None,
    metavar="URL",
    help="Keep the state in etcd: etcd://h1:2379,h2:2379/NAMESPACE (etcds://…?ca=&cert=&key= "
    "for TLS); default: SQLite in the data dir.",
)
def server(
    data_dir: str,
    http_addr: str,
    cluster_addr: str,
    dns_addr: str,
    dns_domain: str,
    dns_alt_domain: str | None,
    dns_ttl: int,
    dns_recursors: tuple[str, ...],
    acl: bool,
    tls: str,
    tls_sans: tuple[str, ...],
    insecure: bool,
    acl_dns: bool,
    influx_url: str | None,
    influx_buffer: int,
    metrics_retention: str,
    metrics_rollup_retention: str,
    alert_rules: str | None,
    alert_interval: str,
    store: str | None,
) -> None:
    """Run a server: API, state store, control loops, DNS."""
    from moorage import daemon

    if store is not None:
        try:
            daemon.check_store_url(store)
        except ValueError as exc:
            raise SpecError([FieldError("store", str(exc))]) from None

    dns = daemon.DnsConfig.from_options(
        parse_addr(dns_addr, "dns-addr"), dns_domain, dns_alt_domain, dns_ttl, dns_recursors
    )
    if acl_dns and not acl:
        raise SpecError([FieldError("acl-dns", "needs --acl")])
    raw_retention, rollup_retention = parse_retention(metrics_retention, metrics_rollup_retention)
    config = daemon.ServerConfig(
        data_dir=Path(data_dir).resolve(),
        http_addr=parse_addr(http_addr, "http-addr"),
        cluster_addr=parse_addr(cluster_addr, "cluster-addr"),
        tls="on" if tls == "on" else "off" if tls == "off" else "auto",
        tls_sans=tls_sans,
        insecure=insecure,
        acl=acl,
        dns=dataclasses.replace(dns, acl=acl_dns),
        influx=parse_influx(influx_url, influx_buffer),
        alert_rules=rules_file(alert_rules),
        alert_interval=max(parse_interval(alert_interval, "alert-interval"), 1.0),
        metrics_retention=raw_retention,
        metrics_rollup_retention=rollup_retention,
        store=store,
    )
    daemon.run(lambda: daemon.serve(config, lambda line: click.echo(line)))


@click.command()
@click.option(
    "--server",
    "server_urls",
    envvar="MOORAGE_SERVERS",
    multiple=True,
    default=["127.0.0.1:7072"],
    show_default=True,
    help="A server's cluster port (HOST:PORT; mutual TLS) to join; repeat it (or separate with "
    "commas) to list every server: the agent moves to the next one when one stops answering.",
)
@click.option("--name", default=None, help="Node name (default: the hostname).")
@click.option("--attr", "attrs", multiple=True, help="Node attribute key=value (repeatable).")
@click.option(
    "--advertise",
    default=None,
    help="Address other machines reach this node at (its tasks' IP too). Default: the local "
    "address traffic to the first server with a route leaves from (127.0.0.1 for a server on "
    "this machine).",
)
@click.option(
    "--agent-addr",
    default=None,
    help=f"Where the agent's API (logs, exec, snapshots; TLS, servers only) listens. "
    f"Default: the advertised address, port {AGENT_PORT}.",
)
@click.option(
    "--token-file",
    default=None,
    help="A file holding the cluster's join token (the server's <data dir>/join-token), "
    "needed on the node's first start only: it then holds a certificate.",
)
@click.option(
    "--token",
    envvar="MOORAGE_TOKEN",
    default=None,
    hidden=True,
    help="The join token itself (prefer --token-file or MOORAGE_TOKEN: a command line is "
    "readable by every local user).",
)
@click.option(
    "--ca-cert",
    default=None,
    help="The cluster CA's certificate (PEM), when the join token does not carry its fingerprint.",
)
@click.option(
    "--event-handler",
    "event_handlers",
    multiple=True,
    help="NAME=COMMAND: run COMMAND (sh) when user event NAME fires; the event is on stdin "
    "as JSON, its payload in MOORAGE_EVENT_PAYLOAD (repeatable).",
)
@click.option(
    "--enable-script-checks",
    "script_checks",
    is_flag=True,
    help="Run the command (`Args`) checks of services registered through the Consul API on "
    "this machine (off by default, as in Consul: they run commands sent over HTTP).",
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
@metrics_interval_option
@click.option(
    "--metrics-buffer-size",
    default="64MiB",
    show_default=True,
    help="Disk the agent may use for metrics while no server takes them (the oldest are "
    "dropped first, and counted).",
)
@node_access_options
@data_dir_option
def agent(
    server_urls: tuple[str, ...],
    name: str | None,
    attrs: tuple[str, ...],
    advertise: str | None,
    agent_addr: str | None,
    token_file: str | None,
    token: str | None,
    ca_cert: str | None,
    cpu: int | None,
    memory: int | None,
    event_handlers: tuple[str, ...],
    script_checks: bool,
    shared_volume_root: str | None,
    volume_lease: str,
    metrics_interval: str,
    metrics_buffer_size: str,
    host_volumes: tuple[str, ...],
    allow_privileged: bool,
    allow_docker_socket: bool,
    data_dir: str,
) -> None:
    """Run a node agent: registers this machine and runs the tasks placed on it.

    Joining from another machine needs only `--server HOST:7072 --token-file FILE` (the
    server's join token): the node pins the cluster CA by the fingerprint in the token, gets
    its certificate, advertises the address its traffic to the server leaves from and listens
    there."""
    from moorage import daemon
    from moorage.model.duration import parse_duration
    from moorage.model.runtime import size_mib
    from moorage.model.volume import MAX_LEASE, MIN_LEASE

    try:
        lease = parse_duration(volume_lease)
    except ValueError as exc:
        raise SpecError([FieldError("volume-lease", str(exc))]) from None
    if not MIN_LEASE <= lease <= MAX_LEASE:
        raise SpecError([FieldError("volume-lease", "must be between 1s and 1h")])
    try:
        buffer_mib = size_mib(metrics_buffer_size)
    except ValueError as exc:
        raise SpecError([FieldError("metrics-buffer-size", str(exc))]) from None

    servers = parse_servers(server_urls)
    address = advertise or daemon.local_address(servers)
    listen = parse_addr(agent_addr, "agent-addr") if agent_addr else (address, AGENT_PORT)
    config = daemon.AgentConfig(
        servers=tuple(servers),
        name=name or daemon.node_name(),
        data_dir=Path(data_dir).resolve() / "agent",
        http_addr=listen,
        attrs=parse_attrs(attrs),
        advertise_address=address,
        token=read_token(token_file, token),
        ca_cert=Path(ca_cert).resolve() if ca_cert else None,
        cpu=cpu,
        memory=memory,
        event_handlers=parse_handlers(event_handlers),
        shared_volume_root=Path(shared_volume_root).resolve() if shared_volume_root else None,
        volume_lease=lease,
        metrics_interval=parse_interval(metrics_interval, "metrics-interval"),
        metrics_buffer_bytes=buffer_mib * 1024 * 1024,
        script_checks=script_checks,
        host_volumes=parse_host_volumes(host_volumes, allow_docker_socket),
        privileged=allow_privileged,
    )
    node = daemon.Agent(config)
    daemon.run(lambda: daemon.run_agent(node, lambda line: click.echo(line)))


COMMANDS = [dev, server, agent]


def parse_host_volumes(values: tuple[str, ...], allow_docker_socket: bool) -> dict[str, str]:
    """`--host-volume NAME=PATH` flags, checked on this machine (exit 2 naming the flag)."""
    from moorage import daemon

    try:
        return daemon.parse_host_volumes(values, allow_docker_socket)
    except daemon.HostVolumeError as exc:
        raise SpecError([FieldError("host-volume", str(exc))]) from None
