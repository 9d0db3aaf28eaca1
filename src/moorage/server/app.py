"""The server process: store, watch-fed cache, HTTP API and the leader-only control loops.

┌──────────────────────────── Server.run() task group ─────────────────────────────┐
│ StateCache.run  (list + watch the store)                                          │
│ aiohttp site    (API handlers: reads from the cache, CAS writes via StateWriter)  │
│ run_as_leader   (Reconciler, GarbageCollector: restarted if they crash)           │
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

from moorage.controllers.leader import SoleLeader, run_as_leader
from moorage.controllers.liveness import NodeLiveness
from moorage.controllers.loops import GarbageCollector, Reconciler
from moorage.dns import DnsConfig, DnsServer
from moorage.metrics.influx import InfluxConfig, InfluxPusher
from moorage.metrics.notify import Sender
from moorage.metrics.tsdb import DAY, TimeSeriesStore, TsdbConfig
from moorage.model import Unavailable
from moorage.state import StateCache, StateWriter
from moorage.store import Store
from moorage.store.sqlite import SqliteStore

from .acl import AclApi, AclGuard
from .alerts import AlertLoop, AlertsApi, load_rules_file
from .api import Api, table
from .consul import INDEX, ConsulApi
from .errors import error_middleware
from .events import EventsApi
from .exec import ExecProxy
from .exposition import ExpositionApi, Internals
from .join import JoinGuard, load_or_create
from .kv import KvApi
from .logs import LogsProxy
from .metrics import MetricsApi, run_metrics_store
from .registrations import RegistrationsApi
from .secrets import SecretBox, SecretsApi
from .snapshots import SnapshotsApi
from .ui import add_ui
from .volumes import VolumesApi

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


def build_app(
    api: Api,
    logs: LogsProxy,
    secrets: SecretsApi,
    execs: ExecProxy,
    *parts: object,
    acl: AclGuard | None = None,
    internals: Internals | None = None,
) -> web.Application:
    middlewares = [error_middleware] + ([acl.middleware] if acl is not None else [])
    if internals is not None:  # outermost: it times every request and sees its final status
        middlewares.insert(0, internals.middleware)
    # 8 MiB: an agent replaying its metrics buffer sends up to 5,000 points (~1 MB of JSON).
    app = web.Application(
        middlewares=middlewares,
        handler_args={"handler_cancellation": True},
        client_max_size=8 * 1024 * 1024,
    )

    async def consul_index(request: web.Request, response: web.StreamResponse) -> None:
        # Consul clients expect X-Consul-Index on every answer, errors included.
        if INDEX not in response.headers:
            response.headers[INDEX] = str(api.cache.index("*"))

    app.on_response_prepare.append(consul_index)
    bound = {name: getattr(api, name) for name in dir(api) if not name.startswith("_")}
    for part in (logs, secrets, execs, *parts):
        bound.update({name: getattr(part, name) for name in dir(part) if not name.startswith("_")})
    table.install(app, bound)
    add_ui(app)  # the dashboard's static files (/ui/) and the / redirect
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
            await self._serve(store, ready)
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

    async def _serve(self, store: Store, ready: asyncio.Event | None) -> None:
        cache = self.cache = StateCache(store)
        writer = StateWriter(store, cache, self.clock)
        writer.observe_commit = self.internals.commit.observe
        async with aiohttp.ClientSession() as session, asyncio.TaskGroup() as group:
            group.create_task(cache.run(), name="state-cache")
            await cache.wait_synced()
            box = SecretBox.load(self.config.data_dir)
            api = Api(cache, writer, self.clock, "sqlite")
            secrets_api = SecretsApi(cache, writer, box, self.clock)
            self.token_path, digest = load_or_create(self.config.data_dir)
            api.guard = secrets_api.guard = JoinGuard(digest)
            host, port = self.config.http_addr
            consul = ConsulApi(cache, self.clock, f"{host}:{port}")
            guard = AclGuard(cache, self.config.acl, api.guard)
            registrations = RegistrationsApi(cache, writer, self.clock)
            registrations.guard = api.guard
            volumes = VolumesApi(cache, writer, self.clock)
            volumes.guard = api.guard
            join_token = (
                self.token_path.read_text().strip()
            )  # agents check it on every relayed call
            snapshots = SnapshotsApi(cache, writer, self.clock, session, join_token)
            volumes.agents = snapshots.agents  # `volume rm` has an agent delete the data
            assert self.metrics is not None
            metrics = MetricsApi(self.metrics, self.clock)
            metrics.forward = self.influx.offer if self.influx is not None else None
            metrics.guard = api.guard
            group.create_task(run_metrics_store(self.metrics), name="metrics-store")
            if self.config.alert_rules is not None:
                await load_rules_file(self.config.alert_rules, writer, self.clock)
            alerts = AlertLoop(
                cache,
                writer,
                Sender(session, self.url).send,
                lambda: self.metrics,
                self.clock,
                self.config.alert_interval,
            )
            self.internals.watch(cache, lambda: self.dns, self.influx)
            if self.influx is not None:
                group.create_task(self.influx.run(), name="influx")
            app = build_app(
                api,
                LogsProxy(cache, session, join_token),
                secrets_api,
                ExecProxy(cache, session, join_token),
                consul,
                KvApi(cache, writer),
                AclApi(cache, writer, self.clock, self.config.acl),
                EventsApi(cache, writer, self.clock),
                registrations,
                volumes,
                snapshots,
                metrics,
                AlertsApi(cache, writer, self.clock, alerts),
                ExpositionApi(self.internals, lambda: self.metrics, self.clock),
                acl=guard,
                internals=self.internals,
            )
            runner = web.AppRunner(app, access_log=None, shutdown_timeout=1.0)
            await runner.setup()
            try:
                host, port = self.config.http_addr
                try:
                    await web.TCPSite(runner, host, port, reuse_address=True).start()
                except OSError as exc:
                    raise Unavailable(
                        f"server cannot listen on {host}:{port} (--http-addr): {exc.strerror}"
                    ) from None
                log.info("server listening on %s", self.url)
                if self.config.dns is not None:
                    self.dns = DnsServer(cache, self.config.dns)
                    await self.dns.start()
                reconciler = Reconciler(cache, writer, self.clock, self.config.reconcile_interval)
                reconciler.observe = self.internals.observe_round
                collector = GarbageCollector(
                    cache, writer, self.clock, interval=self.config.gc_interval
                )
                liveness = NodeLiveness(cache, writer, self.clock, api.heartbeats.get)
                loops = [
                    ("reconciler", reconciler.run),
                    ("gc", collector.run),
                    ("liveness", liveness.run),
                    ("alerts", alerts.run),
                ]
                group.create_task(run_as_leader(SoleLeader(), loops), name="leader")
                if ready is not None:
                    ready.set()
                await asyncio.Event().wait()
            finally:
                if self.dns is not None:
                    with contextlib.suppress(Exception):
                        await self.dns.close()
                with contextlib.suppress(Exception):
                    await runner.cleanup()
