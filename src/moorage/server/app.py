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
from moorage.model import Unavailable
from moorage.ops.alerts import load_rules_file
from moorage.state import StateCache, StateWriter
from moorage.store import Store
from moorage.store.sqlite import SqliteStore

from . import (
    alerts,
    consul,
    events,
    exec,
    exposition,
    kv,
    logs,
    metrics,
    nodes,
    registrations,
    secrets,
    services,
    snapshots,
    status,
    tasks,
    tokens,
    ui,
    volumes,
)
from .acl import AclGuard
from .agents import AgentRelay
from .auth import Gate
from .consul import INDEX
from .errors import error_middleware
from .exposition import Internals
from .join import JoinGuard, load_or_create
from .metrics import run_metrics_store
from .routes import Route, RouteTable

log = logging.getLogger(__name__)


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


@dataclass
class Parts:
    """What the routes of one server share."""

    cache: StateCache
    writer: StateWriter
    clock: Callable[[], float]
    session: aiohttp.ClientSession
    data_dir: Path
    join_token: str
    metrics: TimeSeriesStore
    heartbeats: Heartbeats
    alerts: AlertLoop
    acl: ops.Acl
    internals: Internals
    advertise: str  # HOST:PORT this server answers on (Consul's status/leader)
    store_name: str = "sqlite"
    influx: InfluxPusher | None = None


def api_routes(parts: Parts) -> list[Route]:
    """Every route of the server, bound to the objects that answer them."""
    cache, writer, clock, session = parts.cache, parts.writer, parts.clock, parts.session
    relay = AgentRelay(cache, session, parts.join_token)
    volume_ops = ops.Volumes(cache, writer, clock, relay)
    task_ops = ops.Tasks(cache, writer, clock)
    box = ops.SecretBox.load(parts.data_dir)
    forward = parts.influx.offer if parts.influx is not None else None
    service_ops = ops.Services(cache, writer, clock, volume_ops)
    node_ops = ops.Nodes(cache, writer, clock, parts.heartbeats)
    found: list[Route] = []
    apis: list[tuple[RouteTable, object]] = [
        (services.routes, services.ServicesApi(service_ops, cache)),
        (nodes.routes, nodes.NodesApi(node_ops, cache)),
        (tasks.routes, tasks.TasksApi(task_ops, cache)),
        (events.routes, events.EventsApi(ops.Events(cache, writer, clock), cache)),
        (status.routes, status.StatusApi(cache, parts.store_name, lambda: found)),
        (logs.routes, logs.LogsProxy(task_ops, session, parts.join_token)),
        (exec.routes, exec.ExecProxy(task_ops, session, parts.join_token)),
        (secrets.routes, secrets.SecretsApi(ops.Secrets(cache, writer, box, clock))),
        (consul.routes, consul.ConsulApi(cache, clock, parts.advertise)),
        (kv.routes, kv.KvApi(ops.Kv(cache, writer), cache)),
        (tokens.routes, tokens.TokensApi(parts.acl)),
        (
            registrations.routes,
            registrations.RegistrationsApi(ops.Registrations(cache, writer, clock), cache),
        ),
        (volumes.routes, volumes.VolumesApi(volume_ops, cache)),
        (
            snapshots.routes,
            snapshots.SnapshotsApi(
                ops.Snapshots(cache, writer, clock, relay), cache, session, relay
            ),
        ),
        (metrics.routes, metrics.MetricsApi(ops.Metrics(parts.metrics, clock, forward))),
        (alerts.routes, alerts.AlertsApi(ops.Alerts(cache, writer, clock, parts.alerts), cache)),
        (
            exposition.routes,
            exposition.ExpositionApi(parts.internals, lambda: parts.metrics, clock),
        ),
    ]
    for table, api in apis:
        found += table.bind(api)
    found += ui.routes.routes  # plain functions: nothing to bind
    return found


def build_app(
    routes: list[Route], gate: Gate, cache: StateCache, internals: Internals
) -> web.Application:
    """The aiohttp app: every route installed once, with its declared auth enforced."""
    middlewares = [internals.middleware, error_middleware, gate.middleware]
    # 8 MiB: an agent replaying its metrics buffer sends up to 5,000 points (~1 MB of JSON).
    app = web.Application(
        middlewares=middlewares,
        handler_args={"handler_cancellation": True},
        client_max_size=8 * 1024 * 1024,
    )

    async def consul_index(request: web.Request, response: web.StreamResponse) -> None:
        # Consul clients expect X-Consul-Index on every answer, errors included.
        if INDEX not in response.headers:
            response.headers[INDEX] = str(cache.index("*"))

    app.on_response_prepare.append(consul_index)
    gate.install(app, routes)
    gate.verify(app)
    return app


class Server:
    def __init__(self, config: ServerConfig, clock: Callable[[], float] = time.time) -> None:
        self.config = config
        self.clock = clock
        self.store: Store | None = None
        self.cache: StateCache | None = None
        self.url = f"http://{config.http_addr[0]}:{config.http_addr[1]}"
        self.token_path = config.data_dir / "join-token"
        self.dns: DnsServer | None = None
        self.metrics: TimeSeriesStore | None = None  # the embedded time-series store
        self.internals = Internals()  # /metrics: this server's own series
        self.influx = InfluxPusher.from_config(config.influx) if config.influx else None

    async def run(self, ready: asyncio.Event | None = None) -> None:
        """Serve until cancelled; every resource is released on the way out."""
        self.config.data_dir.mkdir(parents=True, exist_ok=True)
        store = await SqliteStore.open(self.config.data_dir / "state.db")
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
        cache = self.cache = StateCache(store)
        writer = StateWriter(store, cache, self.clock)
        writer.observe_commit = self.internals.commit.observe
        async with aiohttp.ClientSession() as session, asyncio.TaskGroup() as group:
            group.create_task(cache.run(), name="state-cache")
            await cache.wait_synced()
            self.token_path, digest = load_or_create(config.data_dir)
            join_token = self.token_path.read_text().strip()  # agents check it on relayed calls
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
            host, port = config.http_addr
            acl = ops.Acl(cache, writer, self.clock, config.acl)
            parts = Parts(
                cache,
                writer,
                self.clock,
                session,
                config.data_dir,
                join_token,
                tsdb,
                Heartbeats(),
                alert_loop,
                acl,
                self.internals,
                f"{host}:{port}",
                "sqlite",
                self.influx,
            )
            gate = Gate(JoinGuard(digest), AclGuard(cache, acl))
            app = build_app(api_routes(parts), gate, cache, self.internals)
            runner = web.AppRunner(app, access_log=None, shutdown_timeout=1.0)
            await runner.setup()
            try:
                try:
                    await web.TCPSite(runner, host, port, reuse_address=True).start()
                except OSError as exc:
                    raise Unavailable(
                        f"server cannot listen on {host}:{port} (--http-addr): {exc.strerror}"
                    ) from None
                log.info("server listening on %s", self.url)
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
                with contextlib.suppress(Exception):
                    await runner.cleanup()

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
