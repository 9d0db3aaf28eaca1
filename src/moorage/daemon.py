"""Long-running processes: `moorage server`, `moorage agent`, and `moorage dev` (both in one).

Each runs until SIGINT/SIGTERM. `dev` stops its agent first (tasks stopped and reported, so
the store says what ran), then its server; the next `dev` on the same data dir resumes.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import os
import signal
import socket
from collections.abc import Callable, Coroutine, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any
from urllib.parse import urlsplit

import aiohttp

from moorage.agent.agent import Agent
from moorage.agent.config import AgentConfig
from moorage.agent.hostvolumes import HostVolumeError
from moorage.agent.hostvolumes import parse as parse_host_volumes
from moorage.model import Unavailable

if TYPE_CHECKING:
    from moorage.dns import DnsConfig
    from moorage.metrics.influx import InfluxConfig
    from moorage.server.app import Server, ServerConfig


def __getattr__(name: str) -> Any:
    """The server's classes load on first use: an agent process never imports the server
    (about 14 MB of its memory; benchmarks/agent_footprint.py)."""
    if name == "DnsConfig":
        from moorage.dns import DnsConfig

        return DnsConfig
    if name == "ServerConfig":
        from moorage.server.app import ServerConfig

        return ServerConfig
    if name == "InfluxConfig":
        from moorage.metrics.influx import InfluxConfig

        return InfluxConfig
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")


__all__ = [
    "Agent",
    "AgentConfig",
    "DevConfig",
    "DnsConfig",
    "HostVolumeError",
    "ServerConfig",
    "check_store_url",
    "dev",
    "local_address",
    "node_name",
    "parse_host_volumes",
    "run",
    "run_agent",
    "serve",
]

log = logging.getLogger("moorage")


def check_store_url(url: str) -> None:
    """Raise ValueError naming what is wrong with a `--store` URL (before anything starts)."""
    from moorage.store.etcd import parse_url

    parse_url(url)


@dataclass(frozen=True)
class DevConfig:
    data_dir: Path
    http_addr: tuple[str, int]
    agent_addr: tuple[str, int]
    cluster_addr: tuple[str, int] = ("127.0.0.1", 7072)
    node_name: str = field(default_factory=lambda: node_name())
    attrs: dict[str, str] = field(default_factory=dict)
    host_volumes: dict[str, str] = field(default_factory=dict)
    privileged: bool = False
    demo_dir: Path | None = None
    dns: DnsConfig | None = None  # the server's DNS interface (None: no DNS listener)
    metrics_interval: float = 10.0  # the agent's metrics collection (0: none)
    influx: InfluxConfig | None = None  # the server's InfluxDB output (`--influx-url`)
    metrics_retention: float = 86400.0  # the server's raw samples (`--metrics-retention`)
    metrics_rollup_retention: float = 30 * 86400.0  # its 1-minute rollups


def node_name() -> str:
    name = socket.gethostname().split(".")[0].lower()
    cleaned = "".join(c if c.isalnum() or c == "-" else "-" for c in name).strip("-")
    return cleaned or "local"


def local_address(server_urls: Sequence[str]) -> str:
    """The address this machine's traffic to its servers leaves from (127.0.0.1 for a server
    on this machine): an agent's default `--advertise`. The first server the kernel has a route
    to decides; a UDP `connect` picks the source address without sending anything."""
    problems = []
    for server in server_urls:
        parts = urlsplit(server)
        host, port = parts.hostname or "", parts.port or (443 if parts.scheme == "https" else 80)
        try:
            infos = socket.getaddrinfo(host, port, type=socket.SOCK_DGRAM)
        except OSError as exc:
            problems.append(f"{host}: {exc.strerror or exc}")
            continue
        # IPv4 first: `HOST:PORT` agent addresses and MOORAGE_NODE_IP expect it.
        for family, _, _, _, sockaddr in sorted(infos, key=lambda i: i[0] != socket.AF_INET):
            try:
                with socket.socket(family, socket.SOCK_DGRAM) as sock:
                    sock.connect(sockaddr)
                    return str(sock.getsockname()[0])
            except OSError as exc:
                problems.append(f"{sockaddr[0]}: {exc.strerror or exc}")
    raise Unavailable(
        f"cannot tell which address to advertise ({'; '.join(problems)}): give --advertise IP"
    )


def url(addr: tuple[str, int]) -> str:
    return f"http://{addr[0]}:{addr[1]}"


def _dns_line(server: Server) -> str:
    """`127.0.0.1:7053 (udp, tcp) for moorage. — dig @127.0.0.1 -p 7053 web.service.moorage`"""
    assert server.dns is not None
    dns = server.dns.config
    host, port = dns.addr[0], server.dns.port
    domains = dns.domain + (f" and {dns.alt_domain}" if dns.alt_domain else "")
    return f"{host}:{port} (udp, tcp) for {domains} — dig @{host} -p {port} <service>.service.{dns.domain}"


async def _until_signalled() -> None:
    stop = asyncio.Event()
    loop = asyncio.get_running_loop()
    for sig in (signal.SIGINT, signal.SIGTERM):
        loop.add_signal_handler(sig, stop.set)
    try:
        await stop.wait()
    finally:
        for sig in (signal.SIGINT, signal.SIGTERM):
            loop.remove_signal_handler(sig)


def run(main: Callable[[], Coroutine[Any, Any, None]]) -> None:
    """Run a daemon's main coroutine. Whatever a daemon creates is private (umask 077): what
    others must reach (the task directories a task's own user traverses) opens up explicitly."""
    os.umask(0o077)
    logging.basicConfig(
        level=logging.INFO, format="%(asctime)s %(levelname)s %(name)s: %(message)s"
    )
    logging.getLogger("aiohttp.access").setLevel(logging.WARNING)
    if os.environ.get("MOORAGE_LOOP") == "asyncio":  # the standard loop, to rule uvloop out
        asyncio.run(main())
        return
    import uvloop  # TLS in C, not asyncio's Python sslproto: what HTTPS costs halves (kv.py)

    uvloop.run(main())


async def serve(config: ServerConfig, echo: Callable[[str], None]) -> None:
    from moorage.server.app import Server

    server = Server(config)
    ready = asyncio.Event()
    task = asyncio.create_task(server.run(ready))
    await _first(task, ready)
    echo(f"server: {server.url} (data dir {config.data_dir})")
    echo(f"cluster port: {server.cluster_url} (nodes: mutual TLS)")
    echo(f"ca: {server.ca_fingerprint} ({server.ca_path})")
    if server.api_tls:
        echo(
            f"clients: MOORAGE_CACERT={server.ca_path}, or `moorage ca fetch --fingerprint "
            f"{server.ca_fingerprint} --addr {server.url}`"
        )
    if server.bootstrap_path is not None:
        echo(f"acl: the management token is in {server.bootstrap_path} (0600)")
    if server.dns is not None:
        echo(f"dns: {_dns_line(server)}")
    echo(_join_line(config.cluster_addr, server.token_path))
    echo("ready")
    await _run_until_signal(task)


def _join_line(cluster_addr: tuple[str, int], token_path: Path) -> str:
    """How agents join: a server on a wildcard address names none that others reach, one on
    loopback takes only agents on this machine."""
    host, port = cluster_addr
    wildcard = host in ("", "0.0.0.0", "::")
    where = f"{'<this machine>' if wildcard else host}:{port}"
    line = (
        f"join token: in {token_path} — copy it to each node, then there: "
        f"`moorage agent --server {where} --token-file <that file> --name <node>`"
    )
    if host.startswith("127.") or host in ("localhost", "::1"):
        line += f" (only on this machine: --cluster-addr 0.0.0.0:{port} lets others join)"
    return line


async def run_agent(agent: Agent, echo: Callable[[str], None]) -> None:
    ready = asyncio.Event()
    task = asyncio.create_task(agent.run(ready, stop_tasks_on_exit=False))
    await _first(task, ready)
    echo("ready")
    await _run_until_signal(task)


async def dev(config: DevConfig, echo: Callable[[str], None]) -> None:
    """Server + agent + SQLite in one process; optionally deploy the demo specs."""
    from moorage.server.app import Server, ServerConfig

    # server/ stays 0700; the top is traversable so tasks' own users reach their directories
    config.data_dir.mkdir(parents=True, exist_ok=True)
    config.data_dir.chmod(0o711)
    server = Server(
        ServerConfig(
            data_dir=config.data_dir / "server",
            http_addr=config.http_addr,
            cluster_addr=config.cluster_addr,
            dns=config.dns,
            influx=config.influx,
            metrics_retention=config.metrics_retention,
            metrics_rollup_retention=config.metrics_rollup_retention,
        )
    )
    server_ready, agent_ready = asyncio.Event(), asyncio.Event()
    server_task = asyncio.create_task(server.run(server_ready), name="server")
    try:
        await _first(server_task, server_ready)
        agent = Agent(
            AgentConfig(
                servers=(server.cluster_url,),
                name=config.node_name,
                data_dir=config.data_dir / "agent",
                http_addr=config.agent_addr,
                attrs=config.attrs,
                host_volumes=config.host_volumes,
                privileged=config.privileged,
                token=server.token_path.read_text().strip(),
                metrics_interval=config.metrics_interval,
            )
        )
        agent_task = asyncio.create_task(
            agent.run(agent_ready, stop_tasks_on_exit=True), name="agent"
        )
        await _first(agent_task, agent_ready)
        echo(
            f"server: {server.url}  agent: https://{config.agent_addr[0]}:{config.agent_addr[1]}  node: {config.node_name}"
        )
        echo(f"data dir: {config.data_dir}")
        if server.dns is not None:
            echo(f"dns: {_dns_line(server)}")
        if config.demo_dir is not None:
            await _deploy_demo(server.url, config.demo_dir, echo)
        echo("ready")
        await _run_until_signal(agent_task)
        echo("stopping: tasks stopped, state saved")
    finally:
        server_task.cancel()
        with contextlib.suppress(asyncio.CancelledError):
            await server_task


async def _first(task: asyncio.Task[None], ready: asyncio.Event) -> None:
    """Wait until ready is set, or re-raise why the task ended first."""
    waiter = asyncio.create_task(ready.wait())
    done, _ = await asyncio.wait({task, waiter}, return_when=asyncio.FIRST_COMPLETED)
    if task in done:
        waiter.cancel()
        task.result()
        raise RuntimeError(f"{task.get_name()} ended before it was ready")


async def _run_until_signal(task: asyncio.Task[None]) -> None:
    signalled = asyncio.create_task(_until_signalled())
    done, _ = await asyncio.wait({task, signalled}, return_when=asyncio.FIRST_COMPLETED)
    if task in done:
        signalled.cancel()
        task.result()
        return
    task.cancel()
    with contextlib.suppress(asyncio.CancelledError):
        await task


async def _deploy_demo(server_url: str, demo_dir: Path, echo: Callable[[str], None]) -> None:
    files = sorted(demo_dir.glob("*.yaml"))
    async with aiohttp.ClientSession(timeout=aiohttp.ClientTimeout(total=60)) as session:
        for path in files:
            headers = {"Content-Type": "application/yaml"}
            async with session.post(
                f"{server_url}/v1/services", data=path.read_bytes(), headers=headers
            ) as r:
                body = await r.json()
                if r.status != 200:
                    echo(f"demo: {path.name}: {body.get('message')}")
                    continue
                for item in body:
                    echo(
                        f"demo: deployed {item['service']} revision {item['revision']} x{item['count']}"
                    )
