"""Metrics: the points agents collect, the embedded time-series store on the server, queries,
exposition (Prometheus, InfluxDB line protocol) and alert rules (docs/metrics.md).

The shapes every part agrees on live in `moorage.metrics.model`.
"""

from .model import Batch, MetricsStore, Point, Query, Series, SeriesInfo

__all__ = ["Batch", "MetricsStore", "Point", "Query", "Series", "SeriesInfo"]
