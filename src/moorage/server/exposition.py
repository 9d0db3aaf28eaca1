"""`GET /metrics`: the Prometheus exposition of the cluster's series and of this server.

    /metrics ── generate_latest(registry) ──┬─ StoreCollector: newest node/task/agent samples
                                            ├─ histograms the server's parts observe:
                                            │    moorage_http_request_duration_seconds (middleware)
                                            │    moorage_reconcile_*_duration_seconds (Reconciler)
                                            │    moorage_store_commit_duration_seconds (StateWriter)
                                            └─ read at scrape time: DNS answers by type and
                                               rcode, parked watchers, the InfluxDB output

The lower layers know nothing of prometheus-client: they call a plain function (`observe`)
or keep a plain counter that the collectors here read. The registry belongs to one server, so
servers in one process (tests) never share a series. Under `--acl`, /metrics needs read on
every node and every service (declared with the route).
"""

from __future__ import annotations

import time
from collections.abc import Awaitable, Callable, Iterator

from aiohttp import web
from prometheus_client import (
    CONTENT_TYPE_PLAIN_0_0_4,
    CollectorRegistry,
    Histogram,
    PlatformCollector,
    ProcessCollector,
    generate_latest,
)
from prometheus_client.metrics_core import CounterMetricFamily, GaugeMetricFamily, Metric
from prometheus_client.registry import Collector

from moorage.dns import DnsServer
from moorage.metrics.exposition import StoreCollector
from moorage.metrics.influx import InfluxPusher
from moorage.metrics.model import MetricsStore
from moorage.model.acl import Level, Need
from moorage.state import StateCache

from .routes import RouteTable, acl_needs

Handler = Callable[[web.Request], Awaitable[web.StreamResponse]]
routes = RouteTable()
# Every node's and service's series: read on all of them (docs/metrics.md).
EVERYTHING = acl_needs(
    lambda request, cache: [Need("node", "", Level.READ), Need("service", "", Level.READ)],
    "node read and service read (all of them)",
)

# Seconds: API calls and commits take milliseconds; blocking queries and streams take long.
HTTP_BUCKETS = (0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 10, 60, 300)
FAST_BUCKETS = (0.0001, 0.00025, 0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 1)
CLIENT_GONE = 499  # the client went away before the answer (nginx's convention)


class Internals:
    """This server's own metrics: one registry, the histograms its parts observe."""

    def __init__(self) -> None:
        registry = self.registry = CollectorRegistry()
        self.http = Histogram(
            "moorage_http_request_duration_seconds",
            "API requests by route pattern, method and status (blocking queries include "
            "their wait).",
            ["route", "method", "status"],
            buckets=HTTP_BUCKETS,
            registry=registry,
        )
        self.decide = Histogram(
            "moorage_reconcile_decision_duration_seconds",
            "The reconciler's pure decision per round: comparing, restarting and scheduling "
            "(placement).",
            buckets=FAST_BUCKETS,
            registry=registry,
        )
        self.round = Histogram(
            "moorage_reconcile_round_duration_seconds",
            "Reconciler rounds: the decision plus its store writes.",
            buckets=FAST_BUCKETS,
            registry=registry,
        )
        self.commit = Histogram(
            "moorage_store_commit_duration_seconds",
            "State store transactions (compare-and-swap commits) as the writer waits for them.",
            buckets=FAST_BUCKETS,
            registry=registry,
        )
        ProcessCollector(registry=registry)
        PlatformCollector(registry=registry)
        self._children: dict[tuple[str, str, int], Histogram] = {}

    def observe_round(self, decide: float, round_: float) -> None:
        self.decide.observe(decide)
        self.round.observe(round_)

    def watch(
        self,
        cache: StateCache,
        dns: Callable[[], DnsServer | None],
        influx: InfluxPusher | None,
    ) -> None:
        """Collect the server's counters at scrape time."""
        self.registry.register(_Watchers(cache))
        self.registry.register(_DnsQueries(dns))
        if influx is not None:
            self.registry.register(_Influx(influx))

    @web.middleware
    async def middleware(self, request: web.Request, handler: Handler) -> web.StreamResponse:
        started = time.perf_counter()
        status = CLIENT_GONE
        try:
            response = await handler(request)
            status = response.status
            return response
        except web.HTTPException as exc:
            status = exc.status
            raise
        except Exception:
            status = 500
            raise
        finally:
            self._child(request, status).observe(time.perf_counter() - started)

    def _child(self, request: web.Request, status: int) -> Histogram:
        resource = request.match_info.route.resource
        route = resource.canonical if resource is not None else "unmatched"
        key = (route, request.method, status)
        child = self._children.get(key)
        if child is None:
            child = self._children[key] = self.http.labels(route, request.method, str(status))
        return child


class ExpositionApi:
    def __init__(
        self,
        internals: Internals,
        store: Callable[[], MetricsStore | None],
        clock: Callable[[], float],
    ) -> None:
        self.registry = internals.registry
        self.registry.register(StoreCollector(store, clock))

    @routes.get(
        "/metrics",
        "Prometheus exposition (text 0.0.4): node, task and agent series, and the server's own",
        auth=EVERYTHING,
        content_type="text/plain",
        tags=("metrics",),
    )
    async def metrics_exposition(self, request: web.Request) -> web.Response:
        response = web.Response(body=generate_latest(self.registry))
        response.headers["Content-Type"] = CONTENT_TYPE_PLAIN_0_0_4
        if "gzip" in request.headers.get("Accept-Encoding", ""):
            response.enable_compression()
        return response


# ---- read at scrape time ----------------------------------------------------------------------
class _Watchers(Collector):
    def __init__(self, cache: StateCache) -> None:
        self.cache = cache

    def collect(self) -> Iterator[Metric]:
        family = GaugeMetricFamily(
            "moorage_watchers",
            "Blocking waits parked now: blocking queries and control loops on the state cache "
            "(kind=state), KV blocking queries (kind=kv).",
            labels=["kind"],
        )
        family.add_metric(["state"], self.cache.watchers)
        family.add_metric(["kv"], self.cache.kv.waiting())
        yield family


class _DnsQueries(Collector):
    def __init__(self, dns: Callable[[], DnsServer | None]) -> None:
        self.dns = dns

    def collect(self) -> Iterator[Metric]:
        server = self.dns()
        family = CounterMetricFamily(
            "moorage_dns_queries",
            "DNS answers sent (UDP and TCP) by query type and response code.",
            labels=["type", "rcode"],
        )
        for (kind, rcode), count in sorted((server.query_counts() if server else {}).items()):
            family.add_metric([kind, rcode], count)
        yield family


class _Influx(Collector):
    def __init__(self, pusher: InfluxPusher) -> None:
        self.pusher = pusher

    def collect(self) -> Iterator[Metric]:
        stats = self.pusher.statistics()
        sent = CounterMetricFamily(
            "moorage_influx_sent", "Points InfluxDB acknowledged (--influx-url)."
        )
        sent.add_metric([], stats.sent)
        dropped = CounterMetricFamily(
            "moorage_influx_dropped",
            "Points that never reached InfluxDB: buffer full (--influx-buffer), rejected by "
            "InfluxDB, or invalid (NaN, infinite).",
            labels=["reason"],
        )
        dropped.add_metric(["buffer_full"], stats.dropped_full)
        dropped.add_metric(["rejected"], stats.dropped_rejected)
        dropped.add_metric(["invalid"], stats.dropped_invalid)
        errors = CounterMetricFamily(
            "moorage_influx_errors", "Failed writes to InfluxDB (each batch is retried)."
        )
        errors.add_metric([], stats.errors)
        buffered = GaugeMetricFamily(
            "moorage_influx_buffered", "Points waiting for InfluxDB (in memory)."
        )
        buffered.add_metric([], stats.buffered)
        yield from (sent, dropped, errors, buffered)
