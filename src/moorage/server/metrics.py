"""Metrics on the server (docs/metrics.md): the agents' batches in, queries out.

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
from collections.abc import Callable

from aiohttp import web
from pydantic import BaseModel

from moorage.metrics.model import Batch, Point, Series, SeriesInfo
from moorage.metrics.params import parse_query
from moorage.metrics.tsdb import TimeSeriesStore
from moorage.model import validate_body

from .api import respond, table
from .errors import read_json
from .join import JoinGuard

log = logging.getLogger(__name__)

DROPPED = "agent_metrics_dropped_total"
MAINTAIN_EVERY = 60.0
SEAL_SLICE = 100  # series sealed per step: ~30 ms of work, then the loop runs again


class IngestResult(BaseModel):
    received: int
    kept: int  # the others were too old, too far ahead, not finite or in a sealed hour


class MetricsApi:
    def __init__(self, store: TimeSeriesStore, clock: Callable[[], float]) -> None:
        self.store = store
        self.clock = clock
        self.guard: JoinGuard | None = None  # set by the server: ingest is the agents'
        self._dropped: dict[str, float] = {}  # node → agent_metrics_dropped_total
        # every ingested point also goes there (set by the server: `--influx-url`)
        self.forward: Callable[[list[Point]], None] | None = None

    @table.add(
        "POST",
        "/v1/metrics/ingest",
        "Agent: a batch of metric points",
        body=Batch,
        response=IngestResult,
        tags=("agents", "metrics"),
    )
    async def metrics_ingest(self, request: web.Request) -> web.Response:
        if self.guard is not None:
            self.guard.check(request)
        batch = validate_body(Batch, await read_json(request))
        kept = self.store.ingest(batch.points)
        if self.forward is not None:
            self.forward(batch.points)
        if not any(p.metric == DROPPED for p in batch.points):
            self._count_dropped(batch.node, batch.dropped)
        return respond(IngestResult(received=len(batch.points), kept=kept))

    def _count_dropped(self, node: str, dropped: int) -> None:
        total = self._dropped.get(node)
        if total is None:  # carry on from the stored counter across a server restart
            total = self.store.last_value(DROPPED, {"node": node}) or 0.0
        total += max(0, dropped)
        self._dropped[node] = total
        point = Point(metric=DROPPED, labels={"node": node}, ts=self.clock(), value=total)
        self.store.ingest([point])
        if self.forward is not None:
            self.forward([point])

    @table.add(
        "GET",
        "/v1/metrics/query",
        "Query a metric: step buckets, an aggregation, optional grouping",
        response=list[Series],
        query=("metric", "from", "to", "step", "agg", "by"),
        tags=("metrics",),
    )
    async def metrics_query(self, request: web.Request) -> web.Response:
        query = parse_query(request.query, self.clock())
        found = self.store.query(query)
        body = [{"metric": s.metric, "labels": s.labels, "points": s.points} for s in found]
        return web.Response(text=json.dumps(body), content_type="application/json")

    @table.add(
        "GET",
        "/v1/metrics/series",
        "The series the store knows (of a metric, matching labels), with their last sample",
        response=list[SeriesInfo],
        query=("metric",),
        tags=("metrics",),
    )
    async def metrics_series(self, request: web.Request) -> web.Response:
        params = dict(request.query)
        params.pop("token", None)
        metric = params.pop("metric", None) or None
        return respond(self.store.series(metric, params))


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
