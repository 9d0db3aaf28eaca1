"""The server process: store, watch-fed cache, HTTP API and the leader-only control loops.

┌──────────────────────────── Server.run() task group ─────────────────────────────┐
│ StateCache.run  (list + watch the store)                                          │
│ aiohttp site    (routes: HTTP adapters over moorage.ops; reads from the cache,    │
│                  CAS writes via StateWriter; who may call each: server/auth.py)   │
│ run_as_leader   (Reconciler, GarbageCollector, liveness, alerts: restarted if     │
│                  they crash)                                                      │
└───────────────────────────────────────────────────────────────────────────────────┘
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import ssl
import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

import aiohttp
from aiohttp import web

from moorage import ops
from moorage.controllers.alerts import AlertLoop
from moorage.controllers.leader import Loop, SoleLeader, run_as_leader
from moorage.controllers.liveness import Heartbeats, NodeLiveness
from moorage.controllers.loops import GarbageCollector, Reconciler
from moorage.dns import DnsConfig, DnsServer
from moorage.metrics.influx import InfluxConfig, InfluxPusher
from moorage.metrics.notify import Sender
from moorage.metrics.tsdb import DAY, TimeSeriesStore, TsdbConfig
from moorage.model import Conflict, Unavailable
from moorage.ops.alerts import load_rules_file
from moorage.ops.identity import Identities
from moorage.pki.certs import write_private
from moorage.state import StateCache, StateWriter
from moorage.store import Store, StoreError
from moorage.store.sqlite import SqliteStore

from .acl import AclGuard
from .auth import Gate
from .exposition import Internals
from .join import JoinGuard, load_or_create
from .listen import TlsMode, api_uses_tls, check_protected_mode, setup_tls
from .metrics import run_metrics_store
from .wiring import Parts, api_routes, build_app

log = logging.getLogger(__name__)
OUTGOING_TIMEOUT = 60.0  # seconds any call the server makes may take in all, unless it says


@dataclass(frozen=True)
class ServerConfig:
    data_dir: Path
    http_addr: tuple[str, int] = ("127.0.0.1", 7070)
    reconcile_interval: float = 1.0
    gc_interval: float = 10.0
    acl: bool = False  # ACL tokens required (default deny) when on
    dns: DnsConfig | None = None  # the DNS interface (`--dns-*`); None: no DNS listener
    metrics_retention: float = DAY  # raw samples (`--metrics-retention`)
    metrics_rollup_retention: float = 30 * DAY  # 1-minute rollups
    alert_rules: Path | None = None  # `--alert-rules FILE`: applied at start
    alert_interval: float = 3.0  # how often the leader evaluates the alert rules
    influx: InfluxConfig | None = None  # `--influx-url`: every ingested point pushed there
    cluster_addr: tuple[str, int] = ("127.0.0.1", 7072)  # the nodes' port (mutual TLS)
    tls: TlsMode = "auto"  # the users' port: HTTPS beyond loopback
    insecure: bool = False  # serve beyond loopback without ACLs or TLS (protected mode off)
    tls_sans: tuple[str, ...] = ()  # more names for the server certificate (`--tls-san`)
    # `--store etcd://h1:2379,h2:2379/namespace`: the state in etcd (moorage.store.etcd);
    # None: SQLite in the data dir
    store: str | None = None


async def open_store(config: ServerConfig) -> Store:
    """The state store: etcd when `--store` names it (loaded only then: an etcd client is
    grpc), else SQLite under the data dir."""
    if config.store is None:
        return await SqliteStore.open(config.data_dir / "state.db")
    from moorage.store.etcd import EtcdStore

    try:
        return await EtcdStore.from_url(config.store)
    except StoreError as exc:
        raise Unavailable(f"the state store (--store): {exc}") from None


class Server:
    def __init__(self, config: ServerConfig, clock: Callable[[], float] = time.time) -> None:
        self.config = config
        self.clock = clock
        self.store: Store | None = None
        self.cache: StateCache | None = None
        host, port = config.http_addr
        self.api_tls = api_uses_tls(host, config.tls)
        self.url = f"{'https' if self.api_tls else 'http'}://{_hostport(host, port)}"
        self.cluster_url = f"https://{_hostport(*config.cluster_addr)}"
        self.token_path = config.data_dir / "join-token"
        self.ca_path = config.data_dir / "tls" / "ca.pem"
        self.ca_fingerprint = ""
        self.bootstrap_path: Path | None = None  # --acl: where the first management token is
        self.dns: DnsServer | None = None
        self.metrics: TimeSeriesStore | None = None  # the embedded time-series store
        self.internals = Internals()  # /metrics: this server's own series
        self.influx = InfluxPusher.from_config(config.influx) if config.influx else None

    async def run(self, ready: asyncio.Event | None = None) -> None:
        """Serve until cancelled; every resource is released on the way out."""
        config = self.config
        check_protected_mode(*config.http_addr, config.acl, self.api_tls, config.insecure)
        config.data_dir.mkdir(mode=0o700, parents=True, exist_ok=True)
        config.data_dir.chmod(0o700)
        store = await open_store(config)
        self.store = store
        try:
            self.metrics = self.open_metrics()
            await self._serve(store, self.metrics, ready)
        finally:
            await store.close()
            if self.metrics is not None:
                self.metrics.close()

    def open_metrics(self) -> TimeSeriesStore:
        """The time-series store under `<data dir>/metrics` (read back from its file)."""
        config = TsdbConfig(
            raw_retention=self.config.metrics_retention,
            rollup_retention=self.config.metrics_rollup_retention,
        )
        return TimeSeriesStore(self.config.data_dir / "metrics" / "metrics.db", config, self.clock)

    async def _serve(
        self, store: Store, tsdb: TimeSeriesStore, ready: asyncio.Event | None
    ) -> None:
        config = self.config
        hosts = [config.http_addr[0], config.cluster_addr[0]]
        tls = setup_tls(config.data_dir, hosts, config.tls_sans, self.api_tls)
        self.ca_path, self.ca_fingerprint = tls.authority.path, tls.authority.fingerprint
        cache = self.cache = StateCache(store)
        writer = StateWriter(store, cache, self.clock)
        writer.observe_commit = self.internals.commit.observe
        timeout = aiohttp.ClientTimeout(total=OUTGOING_TIMEOUT)
        async with aiohttp.ClientSession(timeout=timeout) as session, asyncio.TaskGroup() as group:
            group.create_task(cache.run(), name="state-cache")
            await cache.wait_synced()
            self.token_path, token = load_or_create(config.data_dir, tls.authority.fingerprint)
            identities = Identities(cache, writer, self.clock, tls.authority, self.token_path)
            await identities.keep_join_token(token)
            acl = ops.Acl(cache, writer, self.clock, config.acl)
            if config.acl:
                self.bootstrap_path = await _bootstrap_once(acl, config.data_dir)
            group.create_task(run_metrics_store(tsdb), name="metrics-store")
            if config.alert_rules is not None:
                await load_rules_file(config.alert_rules, writer, self.clock)
            alert_loop = AlertLoop(
                cache,
                writer,
                Sender(session, self.url).send,
                lambda: self.metrics,
                self.clock,
                config.alert_interval,
            )
            self.internals.watch(cache, lambda: self.dns, self.influx)
            if self.influx is not None:
                group.create_task(self.influx.run(), name="influx")
            parts = Parts(
                cache=cache,
                writer=writer,
                clock=self.clock,
                session=session,
                data_dir=config.data_dir,
                relay_tls=tls.relay,
                metrics=tsdb,
                heartbeats=Heartbeats(),
                alerts=alert_loop,
                acl=acl,
                identities=identities,
                internals=self.internals,
                advertise=_hostport(*config.http_addr),
                ca_pem=tls.authority.pem,
                influx=self.influx,
            )
            gate = Gate(
                JoinGuard(identities.join_token_digest),
                AclGuard(cache, acl),
                cache,
                identities.speaks_for,
            )
            routes = api_routes(parts)
            runners = [
                await self._listen(
                    build_app(routes, gate, cache, self.internals, "api"),
                    config.http_addr,
                    tls.api,
                    "--http-addr",
                ),
                await self._listen(
                    build_app(routes, gate, cache, self.internals, "cluster"),
                    config.cluster_addr,
                    tls.cluster,
                    "--cluster-addr",
                ),
            ]
            try:
                log.info("server listening on %s (nodes: %s)", self.url, self.cluster_url)
                if config.dns is not None:
                    self.dns = DnsServer(cache, config.dns)
                    await self.dns.start()
                group.create_task(run_as_leader(SoleLeader(), self._loops(parts)), name="leader")
                if ready is not None:
                    ready.set()
                await asyncio.Event().wait()
            finally:
                if self.dns is not None:
                    with contextlib.suppress(Exception):
                        await self.dns.close()
                for runner in runners:
                    with contextlib.suppress(Exception):
                        await runner.cleanup()

    async def _listen(
        self,
        app: web.Application,
        addr: tuple[str, int],
        context: ssl.SSLContext | None,
        flag: str,
    ) -> web.AppRunner:
        runner = web.AppRunner(app, access_log=None, shutdown_timeout=1.0)
        await runner.setup()
        host, port = addr
        try:
            site = web.TCPSite(runner, host, port, ssl_context=context, reuse_address=True)
            await site.start()
        except OSError as exc:
            await runner.cleanup()
            raise Unavailable(
                f"server cannot listen on {host}:{port} ({flag}): {exc.strerror}"
            ) from None
        return runner

    def _loops(self, parts: Parts) -> list[tuple[str, Loop]]:
        """The leader-only control loops."""
        cache, writer, clock = parts.cache, parts.writer, parts.clock
        reconciler = Reconciler(cache, writer, clock, self.config.reconcile_interval)
        reconciler.observe = self.internals.observe_round
        collector = GarbageCollector(cache, writer, clock, interval=self.config.gc_interval)
        liveness = NodeLiveness(cache, writer, clock, parts.heartbeats.last_seen)
        return [
            ("reconciler", reconciler.run),
            ("gc", collector.run),
            ("liveness", liveness.run),
            ("alerts", parts.alerts.run),
        ]


def _hostport(host: str, port: int) -> str:
    return f"[{host}]:{port}" if ":" in host else f"{host}:{port}"


async def _bootstrap_once(acl: ops.Acl, data_dir: Path) -> Path | None:
    """With --acl: the first management token on the first start, written 0600 to the data
    dir (the path is printed; the secret never is). None when ACLs were bootstrapped before."""
    path = data_dir / "acl-bootstrap-token"
    try:
        _token, secret = await acl.bootstrap()
    except Conflict:
        return path if path.exists() else None
    write_private(path, (secret + "\n").encode())
    return path
