"""Metrics over HTTP (docs/metrics.md, `moorage.ops.metrics`): the agents' batches in, queries out.

    POST /v1/metrics/ingest    agents (join token): a `Batch` → {"kept", "received"}; unless
                               the batch carries agent_metrics_dropped_total itself (moorage's
                               agents keep that counter across their restarts and send it),
                               the server adds the batch's `dropped` to its own
                               agent_metrics_dropped_total{node}
    GET  /v1/metrics/query     ?metric=&from=-1h&to=now&step=60s&agg=avg&by=service&<label>=<v>
                               → [Series]; 400 naming the field on bad input
    GET  /v1/metrics/series    ?metric=&<label>=<v> → [SeriesInfo]: the series known, with
                               their last sample (for the dashboard and the CLI)

The store (`moorage.metrics.tsdb.TimeSeriesStore`) is the server's, opened under
`<data dir>/metrics` and held as `Server.metrics`; `run_metrics_store` is its upkeep loop
(flush every flush interval, seal and expire every minute, a slice of series at a time so
the event loop keeps answering).
"""

from __future__ import annotations

import asyncio
import json
import logging
import random

from aiohttp import web

from moorage.metrics.model import Batch, Series, SeriesInfo
from moorage.metrics.tsdb import TimeSeriesStore
from moorage.model import validate_body
from moorage.model.acl import Level, Need
from moorage.ops import Metrics
from moorage.ops.metrics import IngestResult
from moorage.state import StateCache

from .auth import node_of
from .http import read_json, respond
from .routes import NODE, RouteTable, acl_needs

log = logging.getLogger(__name__)
routes = RouteTable()

MAINTAIN_EVERY = 60.0
SEAL_SLICE = 100  # series sealed per step: ~30 ms of work, then the loop runs again


def metrics_needs(request: web.Request, cache: StateCache) -> list[Need]:
    """Metrics describe nodes and the services' tasks on them, so reading them is reading
    those: a task series (`task_*`) needs read on its service (the `service` matcher, else
    all services); a node or agent series needs read on its node (the `node` matcher, else
    all nodes); anything else (no metric named: every series) needs both on all."""
    params = request.query
    metric = params.get("metric", "")
    service = Need("service", params.get("service", ""), Level.READ)
    node = Need("node", params.get("node", ""), Level.READ)
    if metric.startswith("task_"):
        return [service]
    if metric.startswith(("node_", "agent_")):
        return [node]
    return [Need("service", "", Level.READ), Need("node", "", Level.READ)]


QUERY_AUTH = acl_needs(metrics_needs, "service:<service> or node:<node> read, by the metric")


class MetricsApi:
    def __init__(self, metrics: Metrics) -> None:
        self.metrics = metrics

    @routes.post(
        "/v1/metrics/ingest",
        "Agent: a batch of metric points (its own node's)",
        auth=NODE,
        body=Batch,
        response=IngestResult,
        tags=("agents", "metrics"),
    )
    async def metrics_ingest(self, request: web.Request) -> web.Response:
        batch = validate_body(Batch, await read_json(request))
        return respond(self.metrics.ingest(batch, node_of(request)))

    @routes.get(
        "/v1/metrics/query",
        "Query a metric: step buckets, an aggregation, optional grouping",
        auth=QUERY_AUTH,
        response=list[Series],
        query=("metric", "from", "to", "step", "agg", "by"),
        required=("metric",),
        tags=("metrics",),
    )
    async def metrics_query(self, request: web.Request) -> web.Response:
        found = self.metrics.query(request.query)
        body = [{"metric": s.metric, "labels": s.labels, "points": s.points} for s in found]
        return web.Response(text=json.dumps(body), content_type="application/json")

    @routes.get(
        "/v1/metrics/series",
        "The series the store knows (of a metric, matching labels), with their last sample",
        auth=QUERY_AUTH,
        response=list[SeriesInfo],
        query=("metric",),
        tags=("metrics",),
    )
    async def metrics_series(self, request: web.Request) -> web.Response:
        return respond(self.metrics.series(request.query))


async def run_metrics_store(store: TimeSeriesStore) -> None:
    """The store's upkeep until cancelled; the last flush happens on the way out."""
    interval = store.config.flush_interval
    await asyncio.sleep(random.uniform(0, interval))  # jitter the first tick
    since_maintain = 0.0
    try:
        while True:
            since_maintain += interval
            try:
                store.flush()
                if since_maintain >= MAINTAIN_EVERY:
                    since_maintain = 0.0
                    while store.maintain(budget=SEAL_SLICE):
                        await asyncio.sleep(0)
            except Exception:  # a full disk: keep serving, try again next tick
                log.exception("metrics: flush or maintenance failed")
            await asyncio.sleep(max(1.0, interval))
    finally:
        try:
            store.flush()
        except Exception:
            log.exception("metrics: the last flush failed")
