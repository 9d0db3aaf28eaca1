"""Metrics (docs/metrics.md): the agents' batches in, queries out.

    ingest(Batch)        ─▶ {"kept", "received"}; unless the batch carries
                            agent_metrics_dropped_total itself (moorage's agents keep that
                            counter across their restarts and send it), the server adds the
                            batch's `dropped` to its own agent_metrics_dropped_total{node}
    query(params)        ─▶ [Series]: step buckets, an aggregation, optional grouping
    series(params)       ─▶ [SeriesInfo]: the series known, with their last sample

The store (`moorage.metrics.tsdb.TimeSeriesStore`) is the server's; every ingested point is also
offered to `forward` (the InfluxDB output, `--influx-url`) when there is one.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping

from pydantic import BaseModel

from moorage.metrics.model import Batch, Point, Series, SeriesInfo
from moorage.metrics.params import parse_query
from moorage.metrics.tsdb import TimeSeriesStore
from moorage.model import Forbidden

DROPPED = "agent_metrics_dropped_total"


class IngestResult(BaseModel):
    received: int
    kept: int  # the others were too old, too far ahead, not finite or in a sealed hour


class Metrics:
    def __init__(
        self,
        store: TimeSeriesStore,
        clock: Callable[[], float],
        forward: Callable[[list[Point]], None] | None = None,
    ) -> None:
        self.store = store
        self.clock = clock
        self.forward = forward
        self._dropped: dict[str, float] = {}  # node → agent_metrics_dropped_total

    def ingest(self, batch: Batch, node: str | None = None) -> IngestResult:
        """A node's batch (`node`: the sender; it sends only its own points)."""
        if node is not None and batch.node != node:
            raise Forbidden(f"node {node} may not send the metrics of node {batch.node}")
        if node is not None:
            for point in batch.points:
                if point.labels.get("node", node) != node:
                    raise Forbidden(
                        f"node {node} may not send points labelled node={point.labels['node']}"
                    )
        kept = self.store.ingest(batch.points)
        if self.forward is not None:
            self.forward(batch.points)
        if not any(p.metric == DROPPED for p in batch.points):
            self._count_dropped(batch.node, batch.dropped)
        return IngestResult(received=len(batch.points), kept=kept)

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

    def query(self, params: Mapping[str, str]) -> list[Series]:
        return self.store.query(parse_query(params, self.clock()))

    def series(self, params: Mapping[str, str]) -> list[SeriesInfo]:
        """`metric` and label matchers; `token` (an ACL token in the query) is not a label."""
        matchers = {k: v for k, v in params.items() if k not in ("token", "metric")}
        return self.store.series(params.get("metric") or None, matchers)
